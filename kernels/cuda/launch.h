#ifndef EXPERTD_KERNELS_CUDA_LAUNCH_H_
#define EXPERTD_KERNELS_CUDA_LAUNCH_H_

// Internal: the launchers compiled by nvcc (kernels.cu). Plain types only,
// so the device translation unit needs no absl; kernels.cc checks shapes and
// turns the cudaError_t into a Status.

#include <cuda_runtime_api.h>

#include <cstdint>

namespace expertd::kernels::cuda::internal {

// weight_type: 0 f32, 1 bf16, 2 f16. batch <= kMaxBatchPerPass.
cudaError_t LaunchMatMul(int weight_type, const void* w, int64_t rows, int64_t cols, const float* x, int batch,
                         float* y, cudaStream_t stream);
cudaError_t LaunchRmsNorm(const float* x, const float* weight, int rows, int64_t n, float eps, float* out,
                          cudaStream_t stream);
cudaError_t LaunchRope(float* x, int num_tokens, int num_heads, int head_dim, const float* cos_sin,
                       cudaStream_t stream);
cudaError_t LaunchAttention(int num_heads, int num_kv_heads, int head_dim, const float* q, int num_queries,
                            int first_position, const float* k, const float* v, float* out, cudaStream_t stream);
cudaError_t LaunchRoute(const float* logits, int num_tokens, int num_experts, int k, bool normalize,
                        int32_t* experts_out, float* weights_out, cudaStream_t stream);
cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);
// Row kernels; rows >= 1, width >= 1 (kernels.cc returns early otherwise).
cudaError_t LaunchAddRows(const float* x, int rows, int64_t width, float* out, cudaStream_t stream);
cudaError_t LaunchAddBias(const float* bias, int rows, int64_t width, float* out, cudaStream_t stream);
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
