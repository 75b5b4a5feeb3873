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
enum class DType : uint8_t { kF32, kBF16, kF16 };

// Every DType, in enumerator order.
inline constexpr DType kAllDTypes[] = {DType::kF32, DType::kBF16, DType::kF16};

// The lower-case name used on command lines and in messages: "f32", "bf16", "f16".
constexpr std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
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
  }
  return 0;
}

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
