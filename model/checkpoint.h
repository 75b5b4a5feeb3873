#ifndef EXPERTD_MODEL_CHECKPOINT_H_
#define EXPERTD_MODEL_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "formats/safetensors.h"
#include "model/tensor_source.h"

namespace expertd::model {

// The tensors of an HF model directory: model.safetensors, or the shards named
// by model.safetensors.index.json. Every shard stays open (a descriptor, no
// mapping; see SafetensorsFile) while the checkpoint lives; tensors are
// copied out with Read or ReadTensors. A Model drops its checkpoint once its
// weights are copied, so a running model holds nothing of the files.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  const std::string& dir() const { return dir_; }
  bool Has(const std::string& name) const { return tensors_.contains(name); }
  // NotFound naming the tensor and the directory when absent.
  absl::StatusOr<const formats::TensorInfo*> Get(const std::string& name) const;
  // As Get, and the shape must equal `shape` exactly (error names both).
  absl::StatusOr<const formats::TensorInfo*> Get(const std::string& name, const std::vector<int64_t>& shape) const;
  // The file that holds `tensor` (for error messages).
  const std::string& FileOf(const formats::TensorInfo& tensor) const;
  size_t num_tensors() const { return tensors_.size(); }
  const std::vector<std::unique_ptr<formats::SafetensorsFile>>& files() const { return files_; }

  // One tensor's bytes into out[0, tensor.size_bytes); errors as
  // SafetensorsFile::ReadAt's. Here and in ReadTensors, tensors are ones Get
  // returned.
  absl::Status Read(const formats::TensorInfo& tensor, std::byte* out) const;

  // A tensor to copy out, and where to (tensor->size_bytes bytes).
  struct TensorRead {
    const formats::TensorInfo* tensor;
    std::byte* destination;
  };
  // What loading took from one file (tensor_source.h).
  using FileReadStats = ::expertd::model::FileReadStats;
  // Copies every tensor of `reads` to its destination, file by file and in
  // each file in offset order (sequential I/O, the fastest a disk reads), and
  // checks after each file that it still has the size and modification time
  // Open saw, so a file rewritten while it was read fails the load (Aborted)
  // instead of yielding a mix of two versions. Stats come one per file in
  // files() order, for the files `reads` touches.
  absl::StatusOr<std::vector<FileReadStats>> ReadTensors(absl::Span<const TensorRead> reads) const;

 private:
  Checkpoint() = default;
  size_t FileIndexOf(const formats::TensorInfo& tensor) const;

  std::string dir_;
  std::vector<std::unique_ptr<formats::SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, std::pair<const formats::TensorInfo*, size_t>> tensors_;  // -> (tensor, file index)
};

// A checkpoint as a TensorSource (tensor_source.h): names are the
// checkpoint's own, dtypes F32, BF16 and F16. Owning (Open) or a view of a
// checkpoint the caller keeps alive.
class CheckpointTensorSource : public TensorSource {
 public:
  explicit CheckpointTensorSource(const Checkpoint& checkpoint) : checkpoint_(checkpoint) {}
  explicit CheckpointTensorSource(std::unique_ptr<Checkpoint> owned)
      : owned_(std::move(owned)), checkpoint_(*owned_) {}

  const Checkpoint& checkpoint() const { return checkpoint_; }
  const std::string& path() const override { return checkpoint_.dir(); }
  // Besides the checkpoint's own tensors, `X` where the checkpoint has the HF
  // MXFP4 pair X_blocks and X_scales (gpt-oss's quantized experts), as an
  // MXFP4 tensor of shape [..., G * 32].
  bool Has(const std::string& name) const override {
    return checkpoint_.Has(name) || (checkpoint_.Has(name + "_blocks") && checkpoint_.Has(name + "_scales"));
  }
  absl::StatusOr<SourceTensor> Get(const std::string& name, const std::vector<int64_t>& shape) const override;
  absl::StatusOr<std::vector<FileReadStats>> ReadTensors(absl::Span<const TensorRead> reads) const override;

 private:
  std::unique_ptr<Checkpoint> owned_;
  const Checkpoint& checkpoint_;
};

}  // namespace expertd::model

#endif  // EXPERTD_MODEL_CHECKPOINT_H_
