#ifndef EXPERTD_ENGINE_MODEL_H_
#define EXPERTD_ENGINE_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "tokenizer/tokenizer.h"

namespace expertd {

// A loaded HF model directory: config, weights and tokenizer. Immutable
// after Load, so any number of sequences can run on it.
class Model {
 public:
  // Reads config.json, the safetensors shards and tokenizer.json from
  // model_dir, validating every tensor the forward pass will touch, and
  // copies the weights into memory the model owns (the routed experts too
  // unless options say otherwise). The shards are closed when Load returns:
  // changing them afterwards cannot reach a loaded model (ModelWeights).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& model_dir,
                                                     const WeightLoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& dir() const { return dir_; }
  // Whether weights().layers[*].experts hold their bytes (see
  // WeightLoadOptions); when not, ReopenCheckpoint reads them.
  bool resident_experts() const { return resident_experts_; }
  // Identifies the checkpoint a packed expert file was made from: XXH64 of
  // config.json, every shard's size and header, and 16 windows of 4 KiB
  // sampled across each shard (hashing every weight at each start would read
  // gigabytes; the samples still tell fine-tunes of one base apart).
  uint64_t fingerprint() const { return fingerprint_; }
  // The end-of-sequence id: tokenizer's, else config.json's.
  std::optional<int32_t> eos_id() const;

  // Opens the model's shards again, for reading what the model does not hold
  // (the routed experts of a model loaded without them). FailedPrecondition
  // when the shards are no longer the ones loaded (their sizes, headers or
  // sampled windows differ): weights read from them would not belong with
  // the ones in memory.
  absl::StatusOr<std::unique_ptr<Checkpoint>> ReopenCheckpoint() const;

 private:
  Model() = default;
  std::string dir_;
  ModelConfig config_;
  ModelWeights weights_;
  bool resident_experts_ = true;
  std::unique_ptr<Tokenizer> tokenizer_;
  uint64_t fingerprint_ = 0;
  uint64_t shards_identity_ = 0;  // XXH64 of the shards' part of the fingerprint
};

}  // namespace expertd

#endif  // EXPERTD_ENGINE_MODEL_H_
