#ifndef EXPERTD_MODEL_TENSOR_SOURCE_H_
#define EXPERTD_MODEL_TENSOR_SOURCE_H_

// Where a model's weights come from, as the weight loader (model_weights.h)
// sees it: tensors asked for by their HF names (model.layers.3.self_attn.
// q_proj.weight), each checked (presence, shape, a dtype expertd computes
// with) before any is read, then all copied out in one pass per file. Two
// kinds: an HF directory's safetensors (CheckpointTensorSource, over
// Checkpoint) and one GGUF file (GgufTensorSource, gguf_tensor_source.h),
// which maps each HF name to llama.cpp's tensor, or to one expert of a
// stacked ffn_*_exps tensor, and undoes llama.cpp's Q/K row order where the
// architecture has one. The loader never learns which.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/dtype.h"

namespace expertd::model {

// What loading took from one file, for the log and for tests.
struct FileReadStats {
  std::string path;
  uint64_t file_bytes = 0;  // the file's size
  uint64_t read_bytes = 0;  // header and tensors read
  // Tensors mapped in place (WeightLoadOptions::map_weights) rather than
  // read: not in read_bytes nor in xxh64; `seconds` includes populating
  // their pages.
  uint64_t mapped_bytes = 0;
  // XXH64 (seed 0) of the bytes read in file order. For safetensors: the
  // 8-byte length, the header, then each tensor read, so when every tensor
  // of a gapless file is read it equals `xxh64sum` of the file. For GGUF:
  // the tensors' bytes as stored, in file order.
  uint64_t xxh64 = 0;
  double seconds = 0;
};

// A tensor a source resolved and checked: its HF name, its shape (as asked)
// and its dtype, and where the source finds its bytes (the fields after
// size_bytes are the source's own; a loader only passes them back).
struct SourceTensor {
  std::string name;
  std::vector<int64_t> shape;
  DType dtype = DType::kF32;
  uint64_t size_bytes = 0;  // shape's bytes in dtype (rows of whole blocks)

  const void* origin = nullptr;  // the file's record of the tensor it is (part of)
  uint64_t offset = 0;           // bytes into that tensor (one expert of a stack)
  // > 0: the stored rows are in llama.cpp's RoPE order (each head's pairs
  // interleaved) for this many heads, and are read back into HF's order
  // (each head's two halves), a whole row at a time.
  int permuted_heads = 0;
  // Set: an HF MXFP4 pair (gpt-oss's experts: `<name>_blocks` [..., G, 16]
  // of packed E2M1 codes and `<name>_scales` [..., G] of E8M0 exponents)
  // read back as MXFP4 blocks (17 bytes: exponent, then 16 code bytes in
  // GGML's nibble order); origin is then the blocks' record and this the
  // scales'. offset and size_bytes count in the 17-byte blocks.
  const void* mxfp4_scales = nullptr;
  // Set: DeepSeek's kv_b_proj [heads * (nope + v)][rank] as llama.cpp's
  // converter splits it (GGUF attn_k_b [heads][rank][nope], each head's key
  // part transposed, and attn_v_b [heads][v][rank]), reassembled as it is
  // read; origin is then attn_k_b's record and this attn_v_b's. F32, F16 or
  // BF16 (the transpose moves single elements).
  const void* kv_b_values = nullptr;
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // The directory or file, for messages.
  virtual const std::string& path() const = 0;
  virtual bool Has(const std::string& name) const = 0;
  // `name` with exactly `shape` (row-major), in a dtype expertd computes
  // with: NotFound when absent, InvalidArgument for another shape (naming
  // both), Unimplemented for another type (naming it); each error names the
  // file and the tensor.
  virtual absl::StatusOr<SourceTensor> Get(const std::string& name, const std::vector<int64_t>& shape) const = 0;

  struct TensorRead {
    const SourceTensor* tensor;  // one Get returned
    std::byte* destination;      // tensor->size_bytes bytes
  };
  // Copies every tensor of `reads` to its destination, file by file in
  // offset order, and fails (Aborted) when a file changed while it was
  // read. Stats come one per file read.
  virtual absl::StatusOr<std::vector<FileReadStats>> ReadTensors(absl::Span<const TensorRead> reads) const = 0;

  // For a loader that maps weights instead of copying them
  // (WeightLoadOptions::map_weights): where `tensor`'s bytes, exactly as the
  // engine computes with them, lie in a read-only mapping of the file, or
  // nullptr when the source has no mapping or the stored bytes differ from
  // the computed ones (permuted rows, a split kv_b, an MXFP4 pair). The
  // mapping lives as long as any copy of MappingOwner().
  virtual const std::byte* MappedBytes(const SourceTensor& /*tensor*/) const { return nullptr; }
  virtual std::shared_ptr<const void> MappingOwner() const { return nullptr; }
};

}  // namespace expertd::model

#endif  // EXPERTD_MODEL_TENSOR_SOURCE_H_
