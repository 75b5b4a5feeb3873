#ifndef EXPERTD_IO_EXPERT_BUNDLE_H_
#define EXPERTD_IO_EXPERT_BUNDLE_H_

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/dtype.h"

namespace expertd::io {

// Where one matrix of an expert bundle lies, from the bundle's first byte,
// and the dtype it is stored in.
struct BundleMatrix {
  DType dtype = DType::kBF16;
  uint64_t offset_bytes = 0;
  uint64_t size_bytes = 0;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features
};

// The dtypes of one bundle's gate, up and down. A Q4_K_M GGUF expert is
// q4_k/q4_k/q6_k (or q4_k throughout, on the layers llama.cpp gives less).
struct BundleDtypes {
  DType gate = DType::kBF16;
  DType up = DType::kBF16;
  DType down = DType::kBF16;

  static constexpr BundleDtypes Uniform(DType dtype) { return BundleDtypes{dtype, dtype, dtype}; }
  constexpr bool uniform() const { return gate == up && up == down; }
  constexpr bool operator==(const BundleDtypes& other) const = default;
};

// "bf16" for a uniform bundle, else "q4_k/q4_k/q6_k" (gate/up/down): for
// messages and the pack summary.
inline std::string BundleDtypesName(const BundleDtypes& dtypes) {
  if (dtypes.uniform()) return std::string(DTypeName(dtypes.gate));
  return absl::StrCat(std::string(DTypeName(dtypes.gate)), "/", std::string(DTypeName(dtypes.up)), "/",
                      std::string(DTypeName(dtypes.down)));
}

// One routed expert's bundle (io/FORMAT.md, "Bundle"): gate [ffn][hidden],
// then up [ffn][hidden], then down [hidden][ffn], row-major, each in its own
// dtype, with no gaps, so that one read brings the whole expert. The packer
// writes this layout, the file validates its index against it and the
// cache's readers take views into it; all ask here.
struct BundleLayout {
  BundleMatrix gate;
  BundleMatrix up;
  BundleMatrix down;
  uint64_t bytes = 0;  // the whole bundle: its index entry's length

  constexpr BundleDtypes dtypes() const { return BundleDtypes{gate.dtype, up.dtype, down.dtype}; }
};

// Sizes are whole rows of each matrix's dtype (DTypeBytes per row), so a
// block-quantised dtype whose rows are whole blocks gets its true size.
constexpr BundleLayout ExpertBundleLayout(const BundleDtypes& dtypes, int64_t hidden_size,
                                          int64_t intermediate_size) {
  const auto matrix = [](DType dtype, uint64_t offset_bytes, int64_t rows, int64_t cols) {
    BundleMatrix m;
    m.dtype = dtype;
    m.offset_bytes = offset_bytes;
    m.size_bytes = static_cast<uint64_t>(rows) * static_cast<uint64_t>(DTypeBytes(dtype, cols));
    m.rows = rows;
    m.cols = cols;
    return m;
  };
  BundleLayout layout;
  layout.gate = matrix(dtypes.gate, 0, intermediate_size, hidden_size);
  layout.up = matrix(dtypes.up, layout.gate.offset_bytes + layout.gate.size_bytes, intermediate_size, hidden_size);
  layout.down = matrix(dtypes.down, layout.up.offset_bytes + layout.up.size_bytes, hidden_size, intermediate_size);
  layout.bytes = layout.down.offset_bytes + layout.down.size_bytes;
  return layout;
}

// Every matrix in one dtype (every bundle of a version-1 file).
constexpr BundleLayout ExpertBundleLayout(DType dtype, int64_t hidden_size, int64_t intermediate_size) {
  return ExpertBundleLayout(BundleDtypes::Uniform(dtype), hidden_size, intermediate_size);
}

}  // namespace expertd::io

#endif  // EXPERTD_IO_EXPERT_BUNDLE_H_
