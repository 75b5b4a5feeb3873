#ifndef EXPERTD_KERNELS_CPU_QUANT_BLOCKS_H_
#define EXPERTD_KERNELS_CPU_QUANT_BLOCKS_H_

#include <bit>
#include <cstdint>

#include "base/dtype.h"

namespace expertd::kernels {

// GGML's block-quantised weight formats, byte for byte as in GGUF files
// (ggml-common.h). Scales marked f16 are IEEE half bits; all little-endian.
// An element's value is a product of its integer code and its block's
// scales, evaluated in f32 in the order written below; DequantizeRow does
// exactly that, so its results are exact functions of the bytes (the same
// bits on every machine, checked against an element-wise reference).

// 32 elements: x[i] = d * qs[i].
struct BlockQ8_0 {
  uint16_t d;  // f16
  int8_t qs[32];
};

// 32 elements: x[i] = d * (q[i] - 8); q[i] for i < 16 is the low nibble of
// qs[i], for i >= 16 the high nibble of qs[i - 16].
struct BlockQ4_0 {
  uint16_t d;  // f16
  uint8_t qs[16];
};

// 256 elements in 8 sub-blocks j of 32, each with a 6-bit scale sc[j] and
// min m[j] packed into `scales` (see Q4KScaleMin):
//   x = (d * sc[j]) * q - (dmin * m[j]),  q in [0, 15].
// Elements 64c + l (l < 32) are the low nibbles of qs[32c + l], elements
// 64c + 32 + l the high nibbles (sub-blocks 2c and 2c + 1).
struct BlockQ4_K {
  uint16_t d;     // f16
  uint16_t dmin;  // f16
  uint8_t scales[12];
  uint8_t qs[128];
};

// As Q4_K with 5-bit q in [0, 31]: the fifth bit of element 64c + l is bit
// 2c of qh[l], of element 64c + 32 + l bit 2c + 1 of qh[l].
struct BlockQ5_K {
  uint16_t d;     // f16
  uint16_t dmin;  // f16
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};

// 256 elements in 16 sub-blocks of 16 with int8 scales:
//   x[i] = (d * scales[i / 16]) * (q[i] - 32),  q in [0, 63].
// In half h (elements 128h + 32t + l, t < 4, l < 32): the low 4 bits are
// ql[64h + l] (t = 0 low nibble, t = 2 high nibble) and ql[64h + 32 + l]
// (t = 1 low, t = 3 high); the high 2 bits are bits 2t, 2t + 1 of qh[32h + l].
struct BlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;  // f16
};

// 32 elements: x[i] = kMxfp4Values[q[i]] * 2^(e - 128), q[i] as in Q4_0
// (low nibbles of qs are elements 0-15, high nibbles 16-31). The values are
// E2M1's {0, 0.5, 1, 1.5, 2, 3, 4, 6} and their negatives, doubled to
// integers, so the scale is half of the E8M0 exponent's 2^(e - 127). (GGML's
// layout; HF's gpt-oss checkpoints interleave the nibbles instead: even
// elements low, odd high.)
struct BlockMXFP4 {
  uint8_t e;  // E8M0: a biased power of two
  uint8_t qs[16];
};
inline constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockMXFP4) == 17);

// An MXFP4 block's scale, 2^(e - 128), exactly (subnormal for e < 2);
// constexpr so the decode kernel can tabulate it (quant_matmul.cc).
constexpr float Mxfp4Scale(uint8_t e) {
  return std::bit_cast<float>(e < 2 ? 0x00200000u << e : static_cast<uint32_t>(e - 1) << 23);
}

// Sub-block j's (scale, min) of a Q4_K/Q5_K block: j < 4 are the low 6 bits
// of scales[j] and scales[j + 4]; j >= 4 take their low 4 bits from
// scales[j + 4] (scale low nibble, min high nibble) and their top 2 bits
// from the top bits of scales[j - 4] (scale) and scales[j] (min).
// Inline: the dot-product kernels call it eight times per super-block.
inline void Q4KScaleMin(const uint8_t* scales, int j, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// An f16 scale's exact f32 value (as F16ToF32), inline for the kernels: the
// exponent and mantissa bits move into place and a multiplication by 2^112
// rebiases the exponent, exactly for normal and subnormal halves alike.
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t rest = h & 0x7FFFu;
  const float magnitude = rest >= 0x7C00u ? std::bit_cast<float>(0x7F800000u | ((rest & 0x3FFu) << 13))  // inf, NaN
                                          : std::bit_cast<float>(rest << 13) * 0x1p112f;
  return std::bit_cast<float>(std::bit_cast<uint32_t>(magnitude) | sign);
}

// out[i] = the value of element i, for n elements (whole blocks) of any
// dtype (float dtypes convert as ConvertToF32 does).
void DequantizeRow(DType dtype, const void* blocks, int64_t n, float* out);

// Quantises n elements (whole blocks) of x into `blocks` (float dtypes:
// rounded to nearest even). Scales are chosen by a least-squares search per
// sub-block (K-quants: scale and min, then the 6- or 8-bit scale codes); on
// GGML's fixture inputs the RMSE is 0.95-1.00 of its reference quantiser's,
// and the tests hold it within 3% (tests/kernels/quant_reference).
void QuantizeRow(DType dtype, const float* x, int64_t n, void* blocks);

// The 8-bit form of an activation row that dot products with a quantised
// weight row take: Q8_0, Q4_0 and MXFP4 weights pair with 32-element blocks, the
// K-quants with 256-element blocks carrying per-16 sums (GGML's Q8_K).
// Scales are f32: q = round(x / d) with d = max|x| / 127, so each element is
// within d / 2 of its input; this rounding bounds the error of a quantised
// dot product against the dequantised weights times the f32 activations.
struct ActQ8_32 {
  float d;
  int8_t qs[32];
};
struct ActQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];  // sums of qs in groups of 16
};

// Bytes of one activation row of n elements for weights of `dtype`.
int64_t ActivationRowBytes(DType dtype, int64_t n);
// Quantises x (n elements, whole blocks of dtype) into the form above.
void QuantizeActivationRow(DType dtype, const float* x, int64_t n, void* out);

// dot(weight row, activation row) in plain loops: per block an exact integer
// sum, scaled in f32 and accumulated in block order. The reference the
// SIMD kernels (quant_matmul.cc) are checked against.
float DotQuantRowScalar(DType dtype, const void* w_row, const void* x_row, int64_t n);

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_QUANT_BLOCKS_H_
