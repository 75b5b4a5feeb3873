#include "formats/ggml_type.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace expertd::formats {
namespace {

// QK_K in GGML: the super-block of the k-quants and i-quants.
constexpr int64_t kQkK = 256;

// Block geometry from ggml.c's type_traits (mirrored by gguf-py's
// GGML_QUANT_SIZES); each sum spells out the block struct's fields, so a
// reader can check it against ggml-common.h.
constexpr GgmlTypeInfo kTypes[] = {
    {GgmlType::kF32, "F32", 1, 4},
    {GgmlType::kF16, "F16", 1, 2},
    {GgmlType::kQ4_0, "Q4_0", 32, 2 + 16},
    {GgmlType::kQ4_1, "Q4_1", 32, 2 + 2 + 16},
    {GgmlType::kQ5_0, "Q5_0", 32, 2 + 4 + 16},
    {GgmlType::kQ5_1, "Q5_1", 32, 2 + 2 + 4 + 16},
    {GgmlType::kQ8_0, "Q8_0", 32, 2 + 32},
    {GgmlType::kQ8_1, "Q8_1", 32, 2 + 2 + 32},
    {GgmlType::kQ2_K, "Q2_K", kQkK, 2 + 2 + kQkK / 16 + kQkK / 4},
    {GgmlType::kQ3_K, "Q3_K", kQkK, 2 + kQkK / 4 + kQkK / 8 + 12},
    {GgmlType::kQ4_K, "Q4_K", kQkK, 2 + 2 + kQkK / 2 + 12},
    {GgmlType::kQ5_K, "Q5_K", kQkK, 2 + 2 + kQkK / 2 + kQkK / 8 + 12},
    {GgmlType::kQ6_K, "Q6_K", kQkK, 2 + kQkK / 2 + kQkK / 4 + kQkK / 16},
    {GgmlType::kQ8_K, "Q8_K", kQkK, 4 + kQkK + kQkK / 8},
    {GgmlType::kIQ2_XXS, "IQ2_XXS", kQkK, 2 + kQkK / 4},
    {GgmlType::kIQ2_XS, "IQ2_XS", kQkK, 2 + kQkK / 4 + kQkK / 32},
    {GgmlType::kIQ3_XXS, "IQ3_XXS", kQkK, 2 + kQkK / 4 + kQkK / 8},
    {GgmlType::kIQ1_S, "IQ1_S", kQkK, 2 + kQkK / 8 + kQkK / 16},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 2 + 16},
    {GgmlType::kIQ3_S, "IQ3_S", kQkK, 2 + kQkK / 4 + kQkK / 8 + kQkK / 32 + 4},
    {GgmlType::kIQ2_S, "IQ2_S", kQkK, 2 + kQkK / 4 + kQkK / 16},
    {GgmlType::kIQ4_XS, "IQ4_XS", kQkK, 2 + 2 + kQkK / 2 + kQkK / 64},
    {GgmlType::kI8, "I8", 1, 1},
    {GgmlType::kI16, "I16", 1, 2},
    {GgmlType::kI32, "I32", 1, 4},
    {GgmlType::kI64, "I64", 1, 8},
    {GgmlType::kF64, "F64", 1, 8},
    {GgmlType::kIQ1_M, "IQ1_M", kQkK, kQkK / 8 + kQkK / 16 + kQkK / 32},
    {GgmlType::kBF16, "BF16", 1, 2},
    {GgmlType::kTQ1_0, "TQ1_0", kQkK, 2 + 4 * 13},
    {GgmlType::kTQ2_0, "TQ2_0", kQkK, 2 + 64},
    {GgmlType::kMXFP4, "MXFP4", 32, 1 + 16},
    {GgmlType::kNVFP4, "NVFP4", 64, 4 + 32},
    {GgmlType::kQ1_0, "Q1_0", 128, 2 + 16},
    {GgmlType::kQ2_0, "Q2_0", 64, 2 + 16},
};

}  // namespace

const GgmlTypeInfo* FindGgmlType(uint32_t id) {
  for (const GgmlTypeInfo& info : kTypes) {
    if (static_cast<uint32_t>(info.type) == id) return &info;
  }
  return nullptr;
}

const GgmlTypeInfo& GgmlTypeInfoOf(GgmlType type) {
  // Every enumerator has a row above (the test checks), so this finds one.
  const GgmlTypeInfo* info = FindGgmlType(static_cast<uint32_t>(type));
  return info != nullptr ? *info : kTypes[0];
}

std::string_view GgmlTypeName(GgmlType type) { return GgmlTypeInfoOf(type).name; }

absl::StatusOr<DType> GgmlTypeToDType(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return DType::kF32;
    case GgmlType::kF16: return DType::kF16;
    case GgmlType::kBF16: return DType::kBF16;
    // The block formats kernels/cpu computes with (kernels/cpu/quant_blocks.h
    // has the same byte layouts as ggml-common.h's block structs).
    case GgmlType::kQ8_0: return DType::kQ8_0;
    case GgmlType::kQ4_0: return DType::kQ4_0;
    case GgmlType::kQ4_K: return DType::kQ4_K;
    case GgmlType::kQ5_K: return DType::kQ5_K;
    case GgmlType::kQ6_K: return DType::kQ6_K;
    case GgmlType::kMXFP4: return DType::kMXFP4;
    default: break;
  }
  return absl::UnimplementedError(absl::StrCat("GGML type ", std::string(GgmlTypeName(type)),
                                               " is not supported by expertd yet (supported: F32, F16, BF16, Q8_0, "
                                               "Q4_0, Q4_K, Q5_K, Q6_K, MXFP4); convert or quantize the model to one of those"));
}

}  // namespace expertd::formats
