#ifndef EXPERTD_KERNELS_CPU_OPS_H_
#define EXPERTD_KERNELS_CPU_OPS_H_

#include <cstdint>

namespace expertd::kernels {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]. out may alias x.
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);

// In-place numerically stable softmax over n values.
void Softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). out may alias either input.
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

float Dot(const float* a, const float* b, int64_t n);

// y[i] += a * x[i]
void Axpy(float a, const float* x, int64_t n, float* y);

// Rotary position embedding in the "rotate half" (GPT-NeoX / HF Llama)
// layout: within each head of head_dim values, element i pairs with
// i + head_dim/2. cos_sin holds, for this position p, the head_dim/2 cosines
// cos(p * theta^(-2i/head_dim)) followed by the head_dim/2 matching sines.
void ApplyRope(float* x, int num_heads, int head_dim, const float* cos_sin);

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_OPS_H_
