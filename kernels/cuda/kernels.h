#ifndef EXPERTD_KERNELS_CUDA_KERNELS_H_
#define EXPERTD_KERNELS_CUDA_KERNELS_H_

// The GPU counterparts of kernels/cpu and engine/routing.cc, with the same
// contracts (shapes, layouts, tie rules), enqueued on a stream. Every pointer
// is device memory; activations are f32, weights any DType (the float types
// and GGML's block formats). Results match the CPU kernels to float
// rounding, not bit for bit (the reduction order differs; for block formats
// the CPU also rounds x to 8 bits per block, the GPU keeps it f32). Shape errors are kInvalidArgument before anything is
// enqueued; launch errors carry the kernel's name.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/matmul.h"

namespace expertd::kernels::cuda {

// For each of `batch` input rows: y[m][r] = sum_c W[r][c] * x[m][c], in f32.
// w.data is device memory, row-major [rows][cols]; x is [batch][cols], y is
// [batch][rows]. Each weight row is read once per group of up to
// kMaxBatchPerPass input rows, so small batches cost one pass over W.
// Block-format weights (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, MXFP4) are read from
// their blocks, each weight dequantised in registers to exactly
// DequantizeRow's value and multiplied by f32 x, so y is within f32
// accumulation error of the dequantised matrix times x. Their rows are
// whole blocks: cols not a multiple of the block's elements is
// kInvalidArgument.
inline constexpr int kMaxBatchPerPass = 8;
absl::Status MatMul(const WeightMatrix& w, const float* x, int batch, float* y, cudaStream_t stream);
// Whether MatMul reads weights of `dtype` (every DType so far), so a pass
// can refuse at load what it could not run.
bool MatMulSupports(DType dtype);
inline absl::Status MatVec(const WeightMatrix& w, const float* x, float* y, cudaStream_t stream) {
  return MatMul(w, x, 1, y, stream);
}

// For each of `rows` rows of n values: out = x / sqrt(mean(x^2) + eps) * weight.
// out may alias x.
absl::Status RmsNorm(const float* x, const float* weight, int rows, int64_t n, float eps, float* out,
                     cudaStream_t stream);

// Rotate-half RoPE, in place, for `num_tokens` rows of num_heads * head_dim
// values; cos_sin is [num_tokens][head_dim]: for each row, the head_dim/2
// cosines then the head_dim/2 sines of its position (kernels/cpu ApplyRope's
// layout, one row per token).
absl::Status ApplyRope(float* x, int num_tokens, int num_heads, int head_dim, const float* cos_sin,
                       cudaStream_t stream);

// kernels::CausalAttention on the GPU: q and out [num_queries][num_heads *
// head_dim], k and v the cache [>= first_position + num_queries][num_kv_heads
// * head_dim], query t attending to positions [0, first_position + t], or
// with shape.window > 0 to the last window of them; shape.sinks, when set,
// is device memory ([num_heads] logits that join each head's softmax with
// no value). head_dim <= kMaxAttentionHeadDim: 576 is DeepSeek-V2's latent
// (512 + 64), which every head attends to as one shared 576-wide KV head.
// One pass with an online softmax, so the history length is not limited by
// shared memory.
inline constexpr int kMaxAttentionHeadDim = 576;
absl::Status CausalAttention(const AttentionShape& shape, const float* q, int num_queries, int first_position,
                             const float* k, const float* v, float* out, cudaStream_t stream);

// RouteToken for each of `num_tokens` rows of router logits [num_tokens]
// [num_experts]: softmax, the k most probable experts in descending order
// (ties to the lower index), their weights renormalised to sum to one when
// `normalize`. experts_out and weights_out are [num_tokens][k].
// 1 <= k <= num_experts <= kMaxRouterExperts.
inline constexpr int kMaxRouterExperts = 4096;
absl::Status RouteTokens(const float* logits, int num_tokens, int num_experts, int k, bool normalize,
                         int32_t* experts_out, float* weights_out, cudaStream_t stream);

// SwiGLU: out[i] = silu(gate[i]) * up[i]; out may alias either input.
absl::Status SiluMul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);

// DeepSeek-V2's RoPE (engine/forward.cc's InterleavedRope), in place: in
// each of `rows` rows, `count` spans of `dim` values, span j of row r at x +
// r * row_stride + j * span_stride; elements pair as (2i, 2i + 1) and turn
// by row r's angles, cos_sin [rows][dim] (RopeCosSin's layout: dim / 2
// cosines, then the sines), both scaled by `factor` (YaRN's attention
// factor). dim even.
absl::Status InterleavedRope(float* x, int rows, int64_t row_stride, int count, int64_t span_stride, int dim,
                             const float* cos_sin, float factor, cudaStream_t stream);
// x[i] *= factor for n values.
absl::Status Scale(float factor, int64_t n, float* x, cudaStream_t stream);

// gpt-oss's expert activation (engine/cpu_feed_forward.h ExpertActivation
// with extras), on `rows` rows of `width` gate and up values: each plus its
// bias (gate_bias, up_bias: [width], or null for none), g = min(gate,
// limit), u = clamp(up, -limit, limit), out = (u + 1) * g * sigmoid(alpha *
// g). out may alias gate or up. limit > 0.
absl::Status ClampedSwiglu(const float* gate, const float* up, const float* gate_bias, const float* up_bias, int rows,
                           int64_t width, float alpha, float limit, float* out, cudaStream_t stream);

// Row operations of the forward pass, on `rows` rows of `width` floats.
// out[r] += x[r] (residual connections).
absl::Status AddRows(const float* x, int rows, int64_t width, float* out, cudaStream_t stream);
// out[r] += bias (attention biases).
absl::Status AddBias(const float* bias, int rows, int64_t width, float* out, cudaStream_t stream);
// x[i] = clamp(x[i], -limit, limit) for n values (OLMoE's clip_qkv).
absl::Status Clip(float limit, int64_t n, float* x, cudaStream_t stream);
// dst[i] = src[index[i]] for i < count (gathering an expert's rows); index
// is device memory.
absl::Status GatherRows(const float* src, const int32_t* index, int count, int64_t width, float* dst,
                        cudaStream_t stream);
// dst[index[i]] = src[i] for i < count (an expert's outputs to their slots).
absl::Status ScatterRows(const float* src, const int32_t* index, int count, int64_t width, float* dst,
                         cudaStream_t stream);
// out[r] += sum of weights[s] * slots[s] for s in [row_slot_begin[r],
// row_slot_begin[r + 1]), summed in slot (rank) order: the MoE combine.
absl::Status AddWeightedSlots(const float* slots, const float* weights, const int32_t* row_slot_begin, int rows,
                              int64_t width, float* out, cudaStream_t stream);
// out[r] += sigmoid(gate_logits[r]) * x[r] (Qwen2-MoE's shared expert).
absl::Status AddGatedRows(const float* x, const float* gate_logits, int rows, int64_t width, float* out,
                          cudaStream_t stream);

}  // namespace expertd::kernels::cuda

#endif  // EXPERTD_KERNELS_CUDA_KERNELS_H_
