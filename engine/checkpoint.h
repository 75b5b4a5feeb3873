#ifndef EXPERTD_ENGINE_CHECKPOINT_H_
#define EXPERTD_ENGINE_CHECKPOINT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/safetensors.h"

namespace expertd {

// The tensors of an HF model directory: model.safetensors, or the shards named
// by model.safetensors.index.json. Every shard stays memory-mapped for the
// checkpoint's lifetime; TensorViews point into the mappings.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  const std::string& dir() const { return dir_; }
  bool Has(const std::string& name) const { return tensors_.contains(name); }
  // NotFound naming the tensor and the directory when absent.
  absl::StatusOr<const TensorView*> Get(const std::string& name) const;
  // As Get, and the shape must equal `shape` exactly (error names both).
  absl::StatusOr<const TensorView*> Get(const std::string& name, const std::vector<int64_t>& shape) const;
  // The file that holds `view` (for error messages).
  const std::string& FileOf(const TensorView& view) const;
  size_t num_tensors() const { return tensors_.size(); }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  Checkpoint() = default;
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, std::pair<const TensorView*, size_t>> tensors_;  // -> (view, file index)
};

}  // namespace expertd

#endif  // EXPERTD_ENGINE_CHECKPOINT_H_
