#include "kernels/cpu/dtype.h"

#include <bit>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/quant_blocks.h"

namespace expertd::kernels {

float BF16ToF32(uint16_t bits) {
  // bf16 is the upper half of an f32, so widening is a shift and is exact.
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t F32ToBF16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    // NaN: truncating could clear every payload bit that survives and turn it
    // into an infinity, so force the quiet bit.
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  // Round to nearest even: add just under half an ulp, plus one more when the
  // kept part is odd so that exact ties go to the even neighbour. A carry into
  // the exponent is correct rounding (up to infinity for the largest values).
  const uint32_t lsb = (bits >> 16) & 1u;
  return static_cast<uint16_t>((bits + 0x7FFFu + lsb) >> 16);
}

float F16ToF32(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1Fu;
  const uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in f32 (24-bit significand).
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
  }
  if (exponent == 0x1F) {
    // Infinity or NaN; the payload moves to the top of the f32 mantissa.
    return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  }
  // Normal: rebias the exponent from 15 to 127.
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

uint16_t F32ToF16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7FFFFFFFu;

  if (abs_bits >= 0x7F800000u) {
    if (abs_bits == 0x7F800000u) return sign | 0x7C00u;
    // NaN: keep the top payload bits and make sure it stays a (quiet) NaN.
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs_bits >> 13) & 0x3FFu));
  }
  // 65520 is the midpoint between the largest f16 (65504, odd mantissa) and
  // 2^16; ties go to even, i.e. up to infinity.
  if (abs_bits >= 0x477FF000u) return sign | 0x7C00u;

  if (abs_bits >= 0x38800000u) {
    // Normal f16 (>= 2^-14). Rebias the exponent (127 -> 15) and round the 13
    // dropped mantissa bits to nearest even; a carry into the exponent is
    // the correct result.
    const uint32_t lsb = (abs_bits >> 13) & 1u;
    const uint32_t rounded = abs_bits - (112u << 23) + 0xFFFu + lsb;
    return static_cast<uint16_t>(sign | (rounded >> 13));
  }

  // Subnormal f16 result: the value is significand * 2^(e - 150) and the f16
  // unit is 2^-24, so the result is significand >> (126 - e), rounded.
  const uint32_t biased_exponent = abs_bits >> 23;
  // Below 2^-25 (half the smallest subnormal) everything rounds to zero;
  // exactly 2^-25 is a tie that goes to the even zero, handled below.
  if (biased_exponent < 102) return sign;
  const uint32_t significand = (abs_bits & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126 - biased_exponent;  // in [14, 24]
  uint32_t result = significand >> shift;
  const uint32_t remainder = significand & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (remainder > half || (remainder == half && (result & 1u))) ++result;
  // A carry to 0x400 is the smallest normal, which is the right encoding.
  return static_cast<uint16_t>(sign | result);
}

void ConvertToF32(DType dtype, const void* src, int64_t n, float* dst) {
  // Not on a hot path (used for small tensors such as norms and embeddings),
  // so plain loops; the compiler vectorises the f32 copy and the bf16 shift.
  switch (dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kBF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = BF16ToF32(in[i]);
      return;
    }
    case DType::kF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = F16ToF32(in[i]);
      return;
    }
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
    case DType::kMXFP4:
      DequantizeRow(dtype, src, n, dst);
      return;
  }
}

}  // namespace expertd::kernels
