#ifndef EXPERTD_FORMATS_GGML_TYPE_H_
#define EXPERTD_FORMATS_GGML_TYPE_H_

// The tensor element types of GGML (and so of GGUF files): every type id a
// file may carry, by name, with its block geometry, so a reader can check a
// tensor's extent for types it cannot compute with. The ids are a file
// format (ggml.h's enum ggml_type); ids 4, 5, 31-33 and 36-38 were removed
// from GGML and are unknown here as they are to llama.cpp.

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "base/dtype.h"

namespace expertd::formats {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
  kQ2_0 = 42,
};

// A type's name as GGML spells it ("Q4_K", "BF16") and its block: a row's
// element count is a whole number of blocks, each block_bytes long.
struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;
  int64_t block_elements;
  int64_t block_bytes;
};

// The type with id `id`; null for an id GGML does not define (or no longer
// does).
const GgmlTypeInfo* FindGgmlType(uint32_t id);
// The info of a defined type (never null).
const GgmlTypeInfo& GgmlTypeInfoOf(GgmlType type);
std::string_view GgmlTypeName(GgmlType type);

// The weight element type expertd computes with for a GGML type:
// Unimplemented, naming the type and what is supported, for the rest.
absl::StatusOr<DType> GgmlTypeToDType(GgmlType type);

}  // namespace expertd::formats

#endif  // EXPERTD_FORMATS_GGML_TYPE_H_
