#ifndef EXPERTD_ENGINE_MODEL_H_
#define EXPERTD_ENGINE_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "engine/model_config.h"
#include "engine/model_weights.h"
#include "engine/tokenizer.h"

namespace expertd {

// A loaded HF model directory: config, memory-mapped weights and tokenizer.
// Immutable after Load, so any number of sequences can run on it.
class Model {
 public:
  // Reads config.json, the safetensors shards and tokenizer.json from
  // model_dir, validating every tensor the forward pass will touch.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& model_dir);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& dir() const { return checkpoint_->dir(); }
  // Identifies the checkpoint a packed expert file was made from: XXH64 of
  // config.json, every shard's size and header, and 16 windows of 4 KiB
  // sampled across each shard (hashing every weight at each start would read
  // gigabytes; the samples still tell fine-tunes of one base apart).
  uint64_t fingerprint() const { return fingerprint_; }
  // The end-of-sequence id: tokenizer's, else config.json's.
  std::optional<int32_t> eos_id() const;

 private:
  Model() = default;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  ModelWeights weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  uint64_t fingerprint_ = 0;
};

}  // namespace expertd

#endif  // EXPERTD_ENGINE_MODEL_H_
