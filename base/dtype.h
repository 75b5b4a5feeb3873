#ifndef EXPERTD_BASE_DTYPE_H_
#define EXPERTD_BASE_DTYPE_H_

#include <cstdint>
#include <optional>
#include <string_view>

namespace expertd {

// The element type of a weight matrix: what the checkpoint's weights are
// converted to, what the packed expert file and the cache slots hold, what
// the kernels compute on. Activations are always f32.
//
// Sizes are given per block, not per element, so that block-quantised types
// (GGML's Q8_0 is 32 elements in 34 bytes: 32 int8 and one f16 scale) join
// this enum with the same helpers; a plain float type is a block of one.
// The enumerator values are not a file format: io/expert_file.cc maps them to
// the packed file's own numbers.
//
// The quantised types are GGML's block formats, byte for byte (their layouts
// are kernels/cpu/quant_blocks.h): Q8_0 and Q4_0 are 32 elements with one f16
// scale; the K-quants are 256-element super-blocks of 8 or 16 sub-blocks;
// MXFP4 (OCP microscaling, gpt-oss's expert format) is 32 4-bit E2M1 values
// sharing one power-of-two scale.
// A quantised buffer is never a float array: code that reads elements
// directly must handle these types or refuse them (DTypeIsQuantized).
enum class DType : uint8_t { kF32, kBF16, kF16, kQ8_0, kQ4_0, kQ4_K, kQ5_K, kQ6_K, kMXFP4 };

// Every DType, in enumerator order.
inline constexpr DType kAllDTypes[] = {DType::kF32,  DType::kBF16, DType::kF16,  DType::kQ8_0, DType::kQ4_0,
                                       DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kMXFP4};

// The lower-case name used on command lines and in messages: "f32", "bf16",
// "f16", and GGML's names "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "mxfp4".
constexpr std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kQ8_0: return "q8_0";
    case DType::kQ4_0: return "q4_0";
    case DType::kQ4_K: return "q4_k";
    case DType::kQ5_K: return "q5_k";
    case DType::kQ6_K: return "q6_k";
    case DType::kMXFP4: return "mxfp4";
  }
  return "unknown";
}

// Elements in one block (1 for the float types).
constexpr int64_t DTypeBlockElements(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      return 1;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kMXFP4:
      return 32;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return 256;
  }
  return 1;
}

// Bytes of one block.
constexpr int64_t DTypeBlockBytes(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kQ8_0: return 34;   // f16 d, 32 x int8
    case DType::kQ4_0: return 18;   // f16 d, 32 x 4 bits
    case DType::kQ4_K: return 144;  // f16 d, dmin, 12 bytes of 6-bit scales/mins, 256 x 4 bits
    case DType::kQ5_K: return 176;  // as Q4_K plus 32 bytes of fifth bits
    case DType::kQ6_K: return 210;  // 256 x 4 low bits, 256 x 2 high bits, 16 x int8 scales, f16 d
    case DType::kMXFP4: return 17;  // E8M0 shared exponent, 32 x 4-bit E2M1
  }
  return 0;
}

// True for the block-quantised types: elements are not addressable, rows
// must be whole blocks, and only kernels that know the layout may read them.
constexpr bool DTypeIsQuantized(DType dtype) { return DTypeBlockElements(dtype) > 1; }

// Bytes that `elements` elements take; `elements` must be a whole number of
// blocks (a row of a quantised matrix is).
constexpr int64_t DTypeBytes(DType dtype, int64_t elements) {
  return elements / DTypeBlockElements(dtype) * DTypeBlockBytes(dtype);
}

// The DType whose DTypeName is `name`; nullopt for any other string.
constexpr std::optional<DType> DTypeFromName(std::string_view name) {
  for (DType dtype : kAllDTypes) {
    if (DTypeName(dtype) == name) return dtype;
  }
  return std::nullopt;
}

}  // namespace expertd

#endif  // EXPERTD_BASE_DTYPE_H_
