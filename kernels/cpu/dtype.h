#ifndef EXPERTD_KERNELS_CPU_DTYPE_H_
#define EXPERTD_KERNELS_CPU_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace expertd::kernels {

// Storage types a weight matrix may have. Activations are always f32.
enum class DType : uint8_t { kF32, kBF16, kF16 };

inline constexpr size_t DTypeSize(DType dtype) {
  return dtype == DType::kF32 ? 4 : 2;
}
std::string_view DTypeName(DType dtype);

// Scalar conversions, exact for bf16 -> f32 and f16 -> f32.
float BF16ToF32(uint16_t bits);
float F16ToF32(uint16_t bits);
// Round to nearest even.
uint16_t F32ToBF16(float value);
uint16_t F32ToF16(float value);

// dst[i] = float(src[i]) for i in [0, n).
void ConvertToF32(DType dtype, const void* src, int64_t n, float* dst);

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_DTYPE_H_
