#ifndef EXPERTD_MODEL_MODEL_H_
#define EXPERTD_MODEL_MODEL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/checkpoint.h"
#include "model/model_config.h"
#include "model/model_weights.h"
#include "model/tensor_source.h"
#include "tokenizer/tokenizer.h"

namespace expertd::model {

// A loaded model: config, weights and tokenizer, from an HF model directory
// or from one GGUF file (llama.cpp's format: hyperparameters, vocabulary,
// chat template and weights in one file; gguf_model_config.h,
// gguf_tokenizer.h, gguf_tensor_source.h). Immutable after Load, so any
// number of sequences can run on it.
class Model {
 public:
  // Reads config.json, the safetensors shards and tokenizer.json from
  // model_dir, validating every tensor the forward pass will touch, and
  // copies the weights into memory the model owns (the routed experts too
  // unless options say otherwise). The shards are closed when Load returns:
  // changing them afterwards cannot reach a loaded model (ModelWeights).
  // A path to a regular file is read as GGUF instead: the same model from
  // its metadata and tensors, each matrix in its stored type (the GGML
  // block formats included), the file closed when Load returns.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& model_dir,
                                                     const WeightLoadOptions& options = {});
  // Whether `path` names a GGUF file rather than a model directory (a
  // regular file; Load then says so when it is not GGUF).
  static bool IsGgufPath(const std::string& path);
  // The tokenizer alone of what Load takes (a directory's tokenizer.json, or
  // a GGUF file's tokenizer.ggml.* metadata), without reading any weights.
  static absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> LoadTokenizer(const std::string& model_path);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  // The path Load was given: a directory, or a .gguf file (is_gguf).
  const std::string& dir() const { return dir_; }
  bool is_gguf() const { return is_gguf_; }
  // Where the packed expert file goes by default: DIR/model.experts, or for
  // a GGUF file the file's path with ".gguf" replaced by ".experts" (beside
  // it; "X" becomes "X.experts" for another name).
  std::string DefaultExpertFilePath() const;
  // Whether weights().layers[*].experts hold their bytes (see
  // WeightLoadOptions); when not, ReopenCheckpoint reads them.
  bool resident_experts() const { return resident_experts_; }
  // Identifies the checkpoint a packed expert file was made from: XXH64 of
  // config.json, every shard's size and header, and 16 windows of 4 KiB
  // sampled across each shard (hashing every weight at each start would read
  // gigabytes; the samples still tell fine-tunes of one base apart). For a
  // GGUF file: its size, everything before the tensor data (metadata and
  // tensor infos) and 16 windows of it.
  uint64_t fingerprint() const { return fingerprint_; }
  // The end-of-sequence id: tokenizer's, else config.json's.
  std::optional<int32_t> eos_id() const;

  // Opens the model's shards (or GGUF file) again, for reading what the
  // model does not hold (the routed experts of a model loaded without them).
  // FailedPrecondition when the files are no longer the ones loaded (their
  // sizes, headers or sampled windows differ): weights read from them would
  // not belong with the ones in memory.
  absl::StatusOr<std::unique_ptr<TensorSource>> ReopenTensorSource() const;
  // As ReopenTensorSource, for a model directory only.
  absl::StatusOr<std::unique_ptr<Checkpoint>> ReopenCheckpoint() const;

 private:
  Model() = default;
  static absl::StatusOr<std::unique_ptr<Model>> LoadGguf(const std::string& path, const WeightLoadOptions& options);
  std::string dir_;
  bool is_gguf_ = false;
  ModelConfig config_;
  ModelWeights weights_;
  bool resident_experts_ = true;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  uint64_t fingerprint_ = 0;
  uint64_t shards_identity_ = 0;  // XXH64 of the shards' part of the fingerprint
};

}  // namespace expertd::model

#endif  // EXPERTD_MODEL_MODEL_H_
