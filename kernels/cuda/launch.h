#ifndef EXPERTD_KERNELS_CUDA_LAUNCH_H_
#define EXPERTD_KERNELS_CUDA_LAUNCH_H_

// Internal: the launchers compiled by nvcc (kernels.cu). Plain types only,
// so the device translation unit needs no absl; kernels.cc checks shapes and
// turns the cudaError_t into a Status.

#include <cuda_runtime_api.h>

#include <cstdint>

namespace expertd::kernels::cuda::internal {

// The weight formats LaunchMatMul reads (kernels.cc maps DType to these).
enum class WeightType : int { kF32, kBF16, kF16, kQ8_0, kQ4_0, kQ4_K, kQ5_K, kQ6_K, kMXFP4 };

// Byte offsets inside the GGML blocks the device code reads, field by field.
// The layout's definition is kernels/cpu/quant_blocks.h's structs (the
// device code cannot include that header: it needs C++20's <bit>, nvcc
// builds C++17); kernels.cc static_asserts that every offset here is the
// struct's offsetof, so the two cannot drift apart.
namespace block_layout {
inline constexpr int kQ8_0Bytes = 34, kQ8_0D = 0, kQ8_0Qs = 2;
inline constexpr int kQ4_0Bytes = 18, kQ4_0D = 0, kQ4_0Qs = 2;
inline constexpr int kQ4_KBytes = 144, kQ4_KD = 0, kQ4_KDmin = 2, kQ4_KScales = 4, kQ4_KQs = 16;
inline constexpr int kQ5_KBytes = 176, kQ5_KD = 0, kQ5_KDmin = 2, kQ5_KScales = 4, kQ5_KQh = 16, kQ5_KQs = 48;
inline constexpr int kQ6_KBytes = 210, kQ6_KQl = 0, kQ6_KQh = 128, kQ6_KScales = 192, kQ6_KD = 208;
inline constexpr int kMXFP4Bytes = 17, kMXFP4E = 0, kMXFP4Qs = 1;
}  // namespace block_layout

// batch <= kMaxBatchPerPass. For the block formats cols is a whole number
// of blocks (kernels.cc checks) and w needs no alignment: blocks of 34, 18,
// 210 or 17 bytes are read byte by byte.
cudaError_t LaunchMatMul(WeightType weight_type, const void* w, int64_t rows, int64_t cols, const float* x,
                         int batch, float* y, cudaStream_t stream);
cudaError_t LaunchRmsNorm(const float* x, const float* weight, int rows, int64_t n, float eps, float* out,
                          cudaStream_t stream);
cudaError_t LaunchRope(float* x, int num_tokens, int num_heads, int head_dim, const float* cos_sin,
                       cudaStream_t stream);
// window >= 0; sinks: [num_heads] device floats, or null.
cudaError_t LaunchAttention(int num_heads, int num_kv_heads, int head_dim, const float* q, int num_queries,
                            int first_position, const float* k, const float* v, float* out, int window,
                            const float* sinks, cudaStream_t stream);
cudaError_t LaunchRoute(const float* logits, int num_tokens, int num_experts, int k, bool normalize,
                        int32_t* experts_out, float* weights_out, cudaStream_t stream);
cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);
// Row kernels; rows >= 1, width >= 1 (kernels.cc returns early otherwise).
cudaError_t LaunchAddRows(const float* x, int rows, int64_t width, float* out, cudaStream_t stream);
cudaError_t LaunchAddBias(const float* bias, int rows, int64_t width, float* out, cudaStream_t stream);
cudaError_t LaunchClampedSwiglu(const float* gate, const float* up, const float* gate_bias, const float* up_bias,
                                int rows, int64_t width, float alpha, float limit, float* out, cudaStream_t stream);
cudaError_t LaunchInterleavedRope(float* x, int rows, int64_t row_stride, int count, int64_t span_stride, int dim,
                                  const float* cos_sin, float factor, cudaStream_t stream);
cudaError_t LaunchScale(float factor, int64_t n, float* x, cudaStream_t stream);  // n >= 1
cudaError_t LaunchClip(float limit, int64_t n, float* x, cudaStream_t stream);
cudaError_t LaunchGatherRows(const float* src, const int32_t* index, int count, int64_t width, float* dst,
                             cudaStream_t stream);
cudaError_t LaunchScatterRows(const float* src, const int32_t* index, int count, int64_t width, float* dst,
                              cudaStream_t stream);
cudaError_t LaunchAddWeightedSlots(const float* slots, const float* weights, const int32_t* row_slot_begin, int rows,
                                   int64_t width, float* out, cudaStream_t stream);
cudaError_t LaunchAddGatedRows(const float* x, const float* gate_logits, int rows, int64_t width, float* out,
                               cudaStream_t stream);

}  // namespace expertd::kernels::cuda::internal

#endif  // EXPERTD_KERNELS_CUDA_LAUNCH_H_
