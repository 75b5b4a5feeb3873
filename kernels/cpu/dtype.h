#ifndef EXPERTD_KERNELS_CPU_DTYPE_H_
#define EXPERTD_KERNELS_CPU_DTYPE_H_

#include <cstdint>

#include "base/dtype.h"

namespace expertd::kernels {

// The element types themselves (DType, its names and sizes) are base/dtype.h,
// shared with io/ and the engine; these are the kernels' conversions.

// Scalar conversions, exact for bf16 -> f32 and f16 -> f32.
float BF16ToF32(uint16_t bits);
float F16ToF32(uint16_t bits);
// Round to nearest even.
uint16_t F32ToBF16(float value);
uint16_t F32ToF16(float value);

// dst[i] = float(src[i]) for i in [0, n); for a quantised dtype n is whole
// blocks and src starts at a block (DequantizeRow, quant_blocks.h).
void ConvertToF32(DType dtype, const void* src, int64_t n, float* dst);

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_DTYPE_H_
