#ifndef EXPERTD_IO_EXPERT_BUNDLE_H_
#define EXPERTD_IO_EXPERT_BUNDLE_H_

#include <cstdint>

#include "base/dtype.h"

namespace expertd::io {

// Where one matrix of an expert bundle lies, from the bundle's first byte.
struct BundleMatrix {
  uint64_t offset_bytes = 0;
  uint64_t size_bytes = 0;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
};

// One routed expert's bundle (io/FORMAT.md, "Bundle"): gate [ffn][hidden],
// then up [ffn][hidden], then down [hidden][ffn], row-major, in one dtype,
// with no gaps, so that one read brings the whole expert. The packer writes
// this layout and the cache's readers take views into it; both ask here.
struct BundleLayout {
  DType dtype = DType::kBF16;
  BundleMatrix gate;
  BundleMatrix up;
  BundleMatrix down;
  uint64_t bytes = 0;  // the whole bundle: the file's expert_bytes
};

// Sizes are whole rows of `dtype` (DTypeBytes per row), so a block-quantised
// dtype whose rows are whole blocks gets its true size.
constexpr BundleLayout ExpertBundleLayout(DType dtype, int64_t hidden_size, int64_t intermediate_size) {
  BundleLayout layout;
  layout.dtype = dtype;
  const auto matrix = [dtype](uint64_t offset_bytes, int64_t rows, int64_t cols) {
    BundleMatrix m;
    m.offset_bytes = offset_bytes;
    m.size_bytes = static_cast<uint64_t>(rows) * static_cast<uint64_t>(DTypeBytes(dtype, cols));
    m.rows = rows;
    m.cols = cols;
    return m;
  };
  layout.gate = matrix(0, intermediate_size, hidden_size);
  layout.up = matrix(layout.gate.offset_bytes + layout.gate.size_bytes, intermediate_size, hidden_size);
  layout.down = matrix(layout.up.offset_bytes + layout.up.size_bytes, hidden_size, intermediate_size);
  layout.bytes = layout.down.offset_bytes + layout.down.size_bytes;
  return layout;
}

}  // namespace expertd::io

#endif  // EXPERTD_IO_EXPERT_BUNDLE_H_
