// Device code for kernels.h. Decode is bound by weight bandwidth, so the
// matrix kernels read each weight row once per pass (the float formats with
// 16-byte loads, the GGML block formats dequantised in registers) and keep
// up to kMaxBatch activations' partial sums in registers; the others are
// small and simple.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/launch.h"

namespace expertd::kernels::cuda::internal {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxBatch = 8;           // kernels.h kMaxBatchPerPass
constexpr int kMatMulWarpsPerBlock = 8;  // one weight row per warp
// Attention heads up to 256 wide (every per-head attention) and up to 576
// (DeepSeek-V2's latent: kernels.h kMaxAttentionHeadDim) compile apart, so
// the common case keeps its registers.
constexpr int kMaxHeadDim = 256;
constexpr int kMaxLatentHeadDim = 576;  // kernels.h kMaxAttentionHeadDim
constexpr int kAttentionWarps = 4;
constexpr int kRouteThreads = 256;

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

// The 16 bytes at p as 16 / sizeof(T) floats.
template <typename T>
__device__ __forceinline__ void Load16(const T* p, float* out) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < static_cast<int>(16 / sizeof(T)); ++i) out[i] = ToFloat(v[i]);
}

// One warp per weight row; lanes stride over the columns. `vectorized`
// when cols is a multiple of the 16-byte vector and w and x are aligned.
template <typename T, int kBatch>
__global__ void MatMulKernel(const T* __restrict__ w, int64_t rows, int64_t cols, const float* __restrict__ x,
                             float* __restrict__ y, bool vectorized) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMatMulWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const T* w_row = w + row * cols;
  float acc[kBatch];
#pragma unroll
  for (int b = 0; b < kBatch; ++b) acc[b] = 0.0f;
  if (vectorized) {
    constexpr int kPer = 16 / sizeof(T);
    for (int64_t c = static_cast<int64_t>(lane) * kPer; c < cols; c += kWarp * kPer) {
      float wv[kPer];
      Load16(w_row + c, wv);
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const float* xb = x + b * cols + c;
#pragma unroll
        for (int i = 0; i < kPer; i += 4) {
          const float4 xv = __ldg(reinterpret_cast<const float4*>(xb + i));
          acc[b] += wv[i] * xv.x + wv[i + 1] * xv.y + wv[i + 2] * xv.z + wv[i + 3] * xv.w;
        }
      }
    }
  } else {
    for (int64_t c = lane; c < cols; c += kWarp) {
      const float wv = ToFloat(w_row[c]);
#pragma unroll
      for (int b = 0; b < kBatch; ++b) acc[b] += wv * __ldg(x + b * cols + c);
    }
  }
#pragma unroll
  for (int b = 0; b < kBatch; ++b) {
    const float sum = WarpSum(acc[b]);
    if (lane == 0) y[b * rows + row] = sum;
  }
}

// Launches a matrix kernel compiled for this batch size (launch gets
// std::integral_constant<int, batch>): each batch size is its own kernel so
// its partial sums stay in registers. The launch's error, or
// cudaErrorInvalidValue outside [1, kMaxBatch].
template <typename Launch>
cudaError_t ForEachBatch(int batch, const Launch& launch) {
  static_assert(kMaxBatch == 8, "one case per batch size up to kMaxBatch");
  switch (batch) {
    case 1: launch(std::integral_constant<int, 1>{}); break;
    case 2: launch(std::integral_constant<int, 2>{}); break;
    case 3: launch(std::integral_constant<int, 3>{}); break;
    case 4: launch(std::integral_constant<int, 4>{}); break;
    case 5: launch(std::integral_constant<int, 5>{}); break;
    case 6: launch(std::integral_constant<int, 6>{}); break;
    case 7: launch(std::integral_constant<int, 7>{}); break;
    case 8: launch(std::integral_constant<int, 8>{}); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t MatMulTyped(const void* w, int64_t rows, int64_t cols, const float* x, int batch, float* y,
                        cudaStream_t stream) {
  if (batch < 1 || batch > kMaxBatch) return cudaErrorInvalidValue;
  const T* wt = static_cast<const T*>(w);
  constexpr int kPer = 16 / sizeof(T);
  const bool vectorized = cols % kPer == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const dim3 grid(static_cast<unsigned>((rows + kMatMulWarpsPerBlock - 1) / kMatMulWarpsPerBlock));
  const dim3 block(kMatMulWarpsPerBlock * kWarp);
  return ForEachBatch(batch, [&](auto b) {
    MatMulKernel<T, decltype(b)::value><<<grid, block, 0, stream>>>(wt, rows, cols, x, y, vectorized);
  });
}

// --- GGML block formats ---
//
// Each weight is dequantised in registers exactly as quant_blocks.h's
// DequantizeRow does (the same f32 products and differences, in the same
// order; the _rn intrinsics keep nvcc from fusing them into FMAs, so each
// value is the CPU's bit for bit), then multiplied by f32 activations. A
// format's Dequant8 gives the 8 consecutive elements [8 * part, 8 * part + 8)
// of the block at b. Blocks are not aligned in a row (34, 18, 210, 17
// bytes), so every field is read a byte at a time.

namespace bl = block_layout;

__device__ __forceinline__ uint8_t Byte(const uint8_t* p) { return __ldg(p); }

// The f16 at p, at any alignment, exactly as f32 (normal and subnormal).
__device__ __forceinline__ float HalfAt(const uint8_t* p) {
  const auto bits = static_cast<unsigned short>(Byte(p) | (Byte(p + 1) << 8));
  return __half2float(__ushort_as_half(bits));
}

// quant_blocks.h Q4KScaleMin: sub-block j's 6-bit scale and min.
__device__ __forceinline__ void ScaleMinK4(const uint8_t* scales, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = Byte(scales + j) & 63;
    *min = Byte(scales + j + 4) & 63;
  } else {
    *scale = (Byte(scales + j + 4) & 0xF) | ((Byte(scales + j - 4) >> 6) << 4);
    *min = (Byte(scales + j + 4) >> 4) | ((Byte(scales + j) >> 6) << 4);
  }
}

struct FormatQ8_0 {
  static constexpr int kElements = 32;
  static constexpr int kBytes = bl::kQ8_0Bytes;
  __device__ static void Dequant8(const uint8_t* b, int part, float* out) {
    const float d = HalfAt(b + bl::kQ8_0D);
    const uint8_t* qs = b + bl::kQ8_0Qs + 8 * part;
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(Byte(qs + i))));
  }
};

// Elements 0-15 are the low nibbles of qs[0..15], 16-31 the high nibbles.
__device__ __forceinline__ int Nibble32(const uint8_t* qs, int element) {
  const uint8_t byte = Byte(qs + (element & 15));
  return element < 16 ? (byte & 0xF) : (byte >> 4);
}

struct FormatQ4_0 {
  static constexpr int kElements = 32;
  static constexpr int kBytes = bl::kQ4_0Bytes;
  __device__ static void Dequant8(const uint8_t* b, int part, float* out) {
    const float d = HalfAt(b + bl::kQ4_0D);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      out[i] = __fmul_rn(d, static_cast<float>(Nibble32(b + bl::kQ4_0Qs, 8 * part + i) - 8));
    }
  }
};

struct FormatMXFP4 {
  static constexpr int kElements = 32;
  static constexpr int kBytes = bl::kMXFP4Bytes;
  // kMxfp4Values[q]: E2M1 doubled, {0, 1, 2, 3, 4, 6, 8, 12} for codes 0-7
  // and their negatives for 8-15. Computed, not looked up, to keep the
  // table out of local memory: codes m >= 4 are (2 or 3) << (m / 2 - 1).
  __device__ static int Value(int q) {
    const int m = q & 7;
    const int magnitude = m < 4 ? m : (2 + (m & 1)) << ((m >> 1) - 1);
    return (q & 8) != 0 ? -magnitude : magnitude;
  }
  // quant_blocks.h Mxfp4Scale: 2^(e - 128), subnormal for e < 2.
  __device__ static float Scale(uint8_t e) {
    return __uint_as_float(e < 2 ? 0x00200000u << e : static_cast<uint32_t>(e - 1) << 23);
  }
  __device__ static void Dequant8(const uint8_t* b, int part, float* out) {
    const float d = Scale(Byte(b + bl::kMXFP4E));
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      out[i] = __fmul_rn(d, static_cast<float>(Value(Nibble32(b + bl::kMXFP4Qs, 8 * part + i))));
    }
  }
};

// Q4_K and Q5_K: part p covers elements 8p..8p+7 of the super-block, in
// chunk c = p / 8 (64 elements); its first four parts are sub-block 2c
// (low nibbles of qs[32c + l]), the last four sub-block 2c + 1 (high
// nibbles), l = 8 * (p % 4) + i.
template <bool kFifthBit>
struct FormatK45 {
  static constexpr int kElements = 256;
  static constexpr int kBytes = kFifthBit ? bl::kQ5_KBytes : bl::kQ4_KBytes;
  static constexpr int kD = kFifthBit ? bl::kQ5_KD : bl::kQ4_KD;
  static constexpr int kDmin = kFifthBit ? bl::kQ5_KDmin : bl::kQ4_KDmin;
  static constexpr int kScales = kFifthBit ? bl::kQ5_KScales : bl::kQ4_KScales;
  static constexpr int kQs = kFifthBit ? bl::kQ5_KQs : bl::kQ4_KQs;
  __device__ static void Dequant8(const uint8_t* b, int part, float* out) {
    const int c = part / 8;
    const bool high = (part % 8) >= 4;
    const int sub = 2 * c + (high ? 1 : 0);
    int sc = 0, m = 0;
    ScaleMinK4(b + kScales, sub, &sc, &m);
    const float d = __fmul_rn(HalfAt(b + kD), static_cast<float>(sc));
    const float min = __fmul_rn(HalfAt(b + kDmin), static_cast<float>(m));
    const int l0 = 8 * (part % 4);
    const uint8_t* qs = b + kQs + 32 * c + l0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint8_t byte = Byte(qs + i);
      int q = high ? (byte >> 4) : (byte & 0xF);
      if constexpr (kFifthBit) q |= ((Byte(b + bl::kQ5_KQh + l0 + i) >> sub) & 1) << 4;
      out[i] = __fsub_rn(__fmul_rn(d, static_cast<float>(q)), min);
    }
  }
};
using FormatQ4_K = FormatK45<false>;
using FormatQ5_K = FormatK45<true>;

// Q6_K: element e = 128h + 32t + l has its low 4 bits in ql[64h + l] (t 0,
// low nibble; t 2, high) or ql[64h + 32 + l] (t 1, low; t 3, high), its high
// 2 bits at bit 2t of qh[32h + l], and scale scales[e / 16]. A part's 8
// elements share h, t and the scale.
struct FormatQ6_K {
  static constexpr int kElements = 256;
  static constexpr int kBytes = bl::kQ6_KBytes;
  __device__ static void Dequant8(const uint8_t* b, int part, float* out) {
    const int e0 = 8 * part;
    const int h = e0 / 128;
    const int t = (e0 % 128) / 32;
    const int l0 = e0 % 32;
    const float d = __fmul_rn(HalfAt(b + bl::kQ6_KD),
                              static_cast<float>(static_cast<int8_t>(Byte(b + bl::kQ6_KScales + e0 / 16))));
    const uint8_t* ql = b + bl::kQ6_KQl + 64 * h + (t & 1) * 32 + l0;
    const uint8_t* qh = b + bl::kQ6_KQh + 32 * h + l0;
    const int shift = (t >> 1) * 4;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int q = (((Byte(ql + i) >> shift) & 0xF) | (((Byte(qh + i) >> (2 * t)) & 3) << 4)) - 32;
      out[i] = __fmul_rn(d, static_cast<float>(q));
    }
  }
};

// One warp per weight row, as MatMulKernel. A warp step covers 256
// elements: one K-quant super-block (a part per lane) or eight 32-element
// blocks (four lanes per block), so lanes read neighbouring bytes. Each lane
// keeps kBatch partial sums; one warp reduction per row at the end.
template <typename Format, int kBatch>
__global__ void QuantMatMulKernel(const uint8_t* __restrict__ w, int64_t rows, int64_t cols,
                                  const float* __restrict__ x, float* __restrict__ y) {
  constexpr int kParts = Format::kElements / 8;
  constexpr int kBlocksPerStep = kWarp / kParts;
  static_assert(kWarp % kParts == 0, "a warp step is whole blocks");
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMatMulWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;  // the whole warp: rows are per warp
  const int64_t blocks = cols / Format::kElements;
  const uint8_t* w_row = w + row * blocks * Format::kBytes;
  const int part = lane % kParts;
  float acc[kBatch];
#pragma unroll
  for (int b = 0; b < kBatch; ++b) acc[b] = 0.0f;
  for (int64_t block = lane / kParts; block < blocks; block += kBlocksPerStep) {
    float wv[8];
    Format::Dequant8(w_row + block * Format::kBytes, part, wv);
    const int64_t c = block * Format::kElements + 8 * part;
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const float* xb = x + b * cols + c;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[b] += wv[i] * __ldg(xb + i);
    }
  }
  // Every lane reaches here (the loop's bound only varies its trip count).
#pragma unroll
  for (int b = 0; b < kBatch; ++b) {
    const float sum = WarpSum(acc[b]);
    if (lane == 0) y[b * rows + row] = sum;
  }
}

template <typename Format>
cudaError_t QuantMatMul(const void* w, int64_t rows, int64_t cols, const float* x, int batch, float* y,
                        cudaStream_t stream) {
  if (batch < 1 || batch > kMaxBatch || cols % Format::kElements != 0) return cudaErrorInvalidValue;
  const auto* wb = static_cast<const uint8_t*>(w);
  const dim3 grid(static_cast<unsigned>((rows + kMatMulWarpsPerBlock - 1) / kMatMulWarpsPerBlock));
  const dim3 block(kMatMulWarpsPerBlock * kWarp);
  return ForEachBatch(batch, [&](auto b) {
    QuantMatMulKernel<Format, decltype(b)::value><<<grid, block, 0, stream>>>(wb, rows, cols, x, y);
  });
}

// Sum over the block of each thread's v; every thread gets the total.
// `scratch` holds one float per warp.
__device__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < warps; ++i) total += scratch[i];
  return total;
}

// One block per row.
__global__ void RmsNormKernel(const float* x, const float* __restrict__ weight, int64_t n, float eps, float* out) {
  __shared__ float scratch[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  float* outr = out + static_cast<int64_t>(blockIdx.x) * n;
  float sum_squares = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum_squares += xr[i] * xr[i];
  const float total = BlockSum(sum_squares, scratch);
  const float scale = 1.0f / sqrtf(total / static_cast<float>(n) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) outr[i] = xr[i] * scale * weight[i];
}

// One thread per (token, head, pair i < head_dim / 2).
__global__ void RopeKernel(float* x, int num_tokens, int num_heads, int head_dim, const float* __restrict__ cos_sin) {
  const int half = head_dim / 2;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = static_cast<int64_t>(num_tokens) * num_heads * half;
  if (index >= total) return;
  const int i = static_cast<int>(index % half);
  const int64_t head = index / half;  // token * num_heads + h
  const int64_t token = head / num_heads;
  float* h = x + head * head_dim;
  const float* cs = cos_sin + token * head_dim;
  const float x0 = h[i];
  const float x1 = h[i + half];
  h[i] = x0 * cs[i] - x1 * cs[half + i];
  h[i + half] = x1 * cs[i] + x0 * cs[half + i];
}

// DeepSeek-V2's RoPE (engine/forward.cc InterleavedRope): one thread per
// (row, span, pair i < dim / 2); pairs are (2i, 2i + 1), cos and sin scaled
// by `factor`.
__global__ void InterleavedRopeKernel(float* x, int64_t row_stride, int count, int64_t span_stride, int dim,
                                      const float* __restrict__ cos_sin, float factor, int64_t total) {
  const int half = dim / 2;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int i = static_cast<int>(index % half);
  const int64_t span = index / half;  // row * count + j
  const int64_t row = span / count;
  const int64_t j = span % count;
  float* p = x + row * row_stride + j * span_stride;
  const float* cs = cos_sin + row * dim;
  const float c = cs[i] * factor;
  const float s = cs[half + i] * factor;
  const float a = p[2 * i];
  const float b = p[2 * i + 1];
  p[2 * i] = a * c - b * s;
  p[2 * i + 1] = a * s + b * c;
}

// One block per (query, head): each warp runs an online softmax over every
// kAttentionWarps-th key, then the warps' partial results are merged.
// Lane l holds elements l, l + 32, ... of the head.
// With window > 0 a query at position p sees keys (p - window, p] only; with
// sinks, head h's sinks[h] joins the softmax's denominator as one more
// logit with no value (kernels/cpu/attention.h).
template <int kMaxDim>
__global__ void AttentionKernel(int num_heads, int num_kv_heads, int head_dim, const float* __restrict__ q,
                                int first_position, const float* __restrict__ k, const float* __restrict__ v,
                                float* __restrict__ out, float scale, int window, const float* __restrict__ sinks) {
  constexpr int kPerLane = kMaxDim / kWarp;
  __shared__ float warp_max[kAttentionWarps];
  __shared__ float warp_sum[kAttentionWarps];
  __shared__ float warp_acc[kAttentionWarps][kMaxDim];
  const int t = blockIdx.x / num_heads;
  const int h = blockIdx.x % num_heads;
  const int kv_head = h / (num_heads / num_kv_heads);
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int64_t q_stride = static_cast<int64_t>(num_heads) * head_dim;
  const int64_t kv_stride = static_cast<int64_t>(num_kv_heads) * head_dim;
  const float* q_head = q + t * q_stride + static_cast<int64_t>(h) * head_dim;
  const int64_t position = static_cast<int64_t>(first_position) + t;
  const int64_t first = window > 0 && position - window + 1 > 0 ? position - window + 1 : 0;

  float q_reg[kPerLane];
  float acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + i * kWarp;
    q_reg[i] = d < head_dim ? q_head[d] : 0.0f;
    acc[i] = 0.0f;
  }
  float running_max = -INFINITY;
  float running_sum = 0.0f;
  for (int64_t j = first + warp; j <= position; j += kAttentionWarps) {
    const float* k_row = k + j * kv_stride + static_cast<int64_t>(kv_head) * head_dim;
    const float* v_row = v + j * kv_stride + static_cast<int64_t>(kv_head) * head_dim;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + i * kWarp;
      if (d < head_dim) dot += q_reg[i] * k_row[d];
    }
    const float score = WarpSum(dot) * scale;
    const float new_max = fmaxf(running_max, score);
    const float correction = __expf(running_max - new_max);  // 0 on the first key
    const float p = __expf(score - new_max);
    running_sum = running_sum * correction + p;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + i * kWarp;
      acc[i] = acc[i] * correction + (d < head_dim ? p * v_row[d] : 0.0f);
    }
    running_max = new_max;
  }
  if (lane == 0) {
    warp_max[warp] = running_max;
    warp_sum[warp] = running_sum;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + i * kWarp;
    if (d < head_dim) warp_acc[warp][d] = acc[i];
  }
  __syncthreads();
  // Key `first` always goes to warp 0, so the overall max is finite; warps
  // that saw no key have max -inf and weigh exp(-inf) = 0. The sink counts
  // in the max too, so a large sink logit cannot overflow its exp.
  float overall_max = warp_max[0];
  for (int w = 1; w < kAttentionWarps; ++w) overall_max = fmaxf(overall_max, warp_max[w]);
  const float sink = sinks != nullptr ? sinks[h] : -INFINITY;
  overall_max = fmaxf(overall_max, sink);
  float weights[kAttentionWarps];
  float total = sinks != nullptr ? __expf(sink - overall_max) : 0.0f;
  for (int w = 0; w < kAttentionWarps; ++w) {
    weights[w] = __expf(warp_max[w] - overall_max);
    total += warp_sum[w] * weights[w];
  }
  float* out_head = out + t * q_stride + static_cast<int64_t>(h) * head_dim;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float value = 0.0f;
    for (int w = 0; w < kAttentionWarps; ++w) value += warp_acc[w][d] * weights[w];
    out_head[d] = value / total;
  }
}

// The better of two (probability, expert) candidates: higher probability,
// ties to the lower index (RouteToken's rule); index -1 is "none".
__device__ __forceinline__ bool Better(float p, int e, float best_p, int best_e) {
  return best_e < 0 || (e >= 0 && (p > best_p || (p == best_p && e < best_e)));
}

// One block per token. Probabilities live in shared memory; a chosen
// expert's entry is set to -1 (probabilities are >= 0) so later rounds skip it.
__global__ void RouteKernel(const float* __restrict__ logits, int num_experts, int k, bool normalize,
                            int32_t* __restrict__ experts_out, float* __restrict__ weights_out) {
  extern __shared__ float probs[];
  __shared__ float scratch[32];
  __shared__ float cand_p[kRouteThreads / kWarp];
  __shared__ int cand_e[kRouteThreads / kWarp];
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * num_experts;
  int32_t* experts = experts_out + static_cast<int64_t>(blockIdx.x) * k;
  float* weights = weights_out + static_cast<int64_t>(blockIdx.x) * k;
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;

  float local_max = -INFINITY;
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) local_max = fmaxf(local_max, row[e]);
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    local_max = fmaxf(local_max, __shfl_xor_sync(0xffffffffu, local_max, offset));
  }
  if (lane == 0) cand_p[warp] = local_max;
  __syncthreads();
  float max_logit = cand_p[0];
  for (int w = 1; w < kRouteThreads / kWarp; ++w) max_logit = fmaxf(max_logit, cand_p[w]);

  float local_sum = 0.0f;
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    probs[e] = expf(row[e] - max_logit);
    local_sum += probs[e];
  }
  // Divided, not multiplied by the inverse: RouteToken's rounding, so the
  // ranking (and its ties) agree with the CPU's.
  const float sum = BlockSum(local_sum, scratch);
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) probs[e] /= sum;
  __syncthreads();

  float chosen_sum = 0.0f;
  for (int j = 0; j < k; ++j) {
    float best_p = -1.0f;
    int best_e = -1;
    for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
      if (probs[e] >= 0.0f && Better(probs[e], e, best_p, best_e)) {
        best_p = probs[e];
        best_e = e;
      }
    }
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      const float other_p = __shfl_xor_sync(0xffffffffu, best_p, offset);
      const int other_e = __shfl_xor_sync(0xffffffffu, best_e, offset);
      if (Better(other_p, other_e, best_p, best_e)) {
        best_p = other_p;
        best_e = other_e;
      }
    }
    if (lane == 0) {
      cand_p[warp] = best_p;
      cand_e[warp] = best_e;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < kRouteThreads / kWarp; ++w) {
        if (Better(cand_p[w], cand_e[w], best_p, best_e)) {
          best_p = cand_p[w];
          best_e = cand_e[w];
        }
      }
      experts[j] = best_e;
      weights[j] = best_p;
      chosen_sum += best_p;
      // NaN logits leave no candidate: never index with -1.
      if (best_e >= 0) probs[best_e] = -1.0f;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0 && normalize) {
    for (int j = 0; j < k; ++j) weights[j] /= chosen_sum;
  }
}

__global__ void SiluMulKernel(const float* gate, const float* up, int64_t n, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  // As the CPU kernel: exp(-g) clamped at exp(80), silu(g) ~ 0 below that.
  out[i] = g / (1.0f + expf(fminf(-g, 80.0f))) * up[i];
}

// Row kernels of the forward pass: grid (column blocks, rows).
constexpr int kRowThreads = 256;

dim3 RowGrid(int rows, int64_t width) {
  return dim3(static_cast<unsigned>((width + kRowThreads - 1) / kRowThreads), static_cast<unsigned>(rows));
}

// gpt-oss's expert activation, as engine/cpu_feed_forward.cc's
// ExpertActivation computes it (expf, not __expf: the CPU's std::exp).
__global__ void ClampedSwigluKernel(const float* gate, const float* up, const float* __restrict__ gate_bias,
                                    const float* __restrict__ up_bias, int64_t width, float alpha, float limit,
                                    float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  const int64_t at = blockIdx.y * width + i;
  float g = gate[at];
  float u = up[at];
  if (gate_bias != nullptr) g += gate_bias[i];
  if (up_bias != nullptr) u += up_bias[i];
  const float clamped_gate = fminf(g, limit);
  const float clamped_up = fminf(fmaxf(u, -limit), limit);
  out[at] = (clamped_up + 1.0f) * clamped_gate / (1.0f + expf(-alpha * clamped_gate));
}

__global__ void AddRowsKernel(const float* __restrict__ x, int64_t width, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  const int64_t at = blockIdx.y * width + i;
  out[at] += x[at];
}

__global__ void AddBiasKernel(const float* __restrict__ bias, int64_t width, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  out[blockIdx.y * width + i] += bias[i];
}

__global__ void ScaleKernel(float factor, int64_t n, float* x) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] *= factor;
}

__global__ void ClipKernel(float limit, int64_t n, float* x) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = fminf(fmaxf(x[i], -limit), limit);
}

__global__ void GatherRowsKernel(const float* __restrict__ src, const int32_t* __restrict__ index, int64_t width,
                                 float* __restrict__ dst) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  dst[blockIdx.y * width + i] = src[index[blockIdx.y] * width + i];
}

__global__ void ScatterRowsKernel(const float* __restrict__ src, const int32_t* __restrict__ index, int64_t width,
                                  float* __restrict__ dst) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  dst[index[blockIdx.y] * width + i] = src[blockIdx.y * width + i];
}

__global__ void AddWeightedSlotsKernel(const float* __restrict__ slots, const float* __restrict__ weights,
                                       const int32_t* __restrict__ row_slot_begin, int64_t width, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  const int row = blockIdx.y;
  // Rank order, as the CPU pass sums them.
  float sum = 0.0f;
  for (int s = row_slot_begin[row]; s < row_slot_begin[row + 1]; ++s) sum += weights[s] * slots[s * width + i];
  out[row * width + i] += sum;
}

__global__ void AddGatedRowsKernel(const float* __restrict__ x, const float* __restrict__ gate_logits, int64_t width,
                                   float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  const int row = blockIdx.y;
  const float gate = 1.0f / (1.0f + expf(-gate_logits[row]));
  out[row * width + i] += gate * x[row * width + i];
}

}  // namespace


cudaError_t LaunchMatMul(WeightType weight_type, const void* w, int64_t rows, int64_t cols, const float* x,
                         int batch, float* y, cudaStream_t stream) {
  switch (weight_type) {
    case WeightType::kF32:
      return MatMulTyped<float>(w, rows, cols, x, batch, y, stream);
    case WeightType::kBF16:
      return MatMulTyped<__nv_bfloat16>(w, rows, cols, x, batch, y, stream);
    case WeightType::kF16:
      return MatMulTyped<__half>(w, rows, cols, x, batch, y, stream);
    case WeightType::kQ8_0:
      return QuantMatMul<FormatQ8_0>(w, rows, cols, x, batch, y, stream);
    case WeightType::kQ4_0:
      return QuantMatMul<FormatQ4_0>(w, rows, cols, x, batch, y, stream);
    case WeightType::kQ4_K:
      return QuantMatMul<FormatQ4_K>(w, rows, cols, x, batch, y, stream);
    case WeightType::kQ5_K:
      return QuantMatMul<FormatQ5_K>(w, rows, cols, x, batch, y, stream);
    case WeightType::kQ6_K:
      return QuantMatMul<FormatQ6_K>(w, rows, cols, x, batch, y, stream);
    case WeightType::kMXFP4:
      return QuantMatMul<FormatMXFP4>(w, rows, cols, x, batch, y, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchRmsNorm(const float* x, const float* weight, int rows, int64_t n, float eps, float* out,
                          cudaStream_t stream) {
  RmsNormKernel<<<rows, 256, 0, stream>>>(x, weight, n, eps, out);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, int num_tokens, int num_heads, int head_dim, const float* cos_sin,
                       cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(num_tokens) * num_heads * (head_dim / 2);
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  RopeKernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      x, num_tokens, num_heads, head_dim, cos_sin);
  return cudaGetLastError();
}

cudaError_t LaunchAttention(int num_heads, int num_kv_heads, int head_dim, const float* q, int num_queries,
                            int first_position, const float* k, const float* v, float* out, int window,
                            const float* sinks, cudaStream_t stream) {
  const float scale = 1.0f / sqrtf(static_cast<float>(head_dim));
  const unsigned blocks = static_cast<unsigned>(num_queries * num_heads);
  if (head_dim <= kMaxHeadDim) {
    AttentionKernel<kMaxHeadDim><<<blocks, kAttentionWarps * kWarp, 0, stream>>>(
        num_heads, num_kv_heads, head_dim, q, first_position, k, v, out, scale, window, sinks);
  } else {
    AttentionKernel<kMaxLatentHeadDim><<<blocks, kAttentionWarps * kWarp, 0, stream>>>(
        num_heads, num_kv_heads, head_dim, q, first_position, k, v, out, scale, window, sinks);
  }
  return cudaGetLastError();
}

cudaError_t LaunchRoute(const float* logits, int num_tokens, int num_experts, int k, bool normalize,
                        int32_t* experts_out, float* weights_out, cudaStream_t stream) {
  RouteKernel<<<num_tokens, kRouteThreads, num_experts * sizeof(float), stream>>>(logits, num_experts, k, normalize,
                                                                                  experts_out, weights_out);
  return cudaGetLastError();
}

cudaError_t LaunchSiluMul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  SiluMulKernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t LaunchAddRows(const float* x, int rows, int64_t width, float* out, cudaStream_t stream) {
  AddRowsKernel<<<RowGrid(rows, width), kRowThreads, 0, stream>>>(x, width, out);
  return cudaGetLastError();
}

cudaError_t LaunchAddBias(const float* bias, int rows, int64_t width, float* out, cudaStream_t stream) {
  AddBiasKernel<<<RowGrid(rows, width), kRowThreads, 0, stream>>>(bias, width, out);
  return cudaGetLastError();
}

cudaError_t LaunchClampedSwiglu(const float* gate, const float* up, const float* gate_bias, const float* up_bias,
                                int rows, int64_t width, float alpha, float limit, float* out, cudaStream_t stream) {
  ClampedSwigluKernel<<<RowGrid(rows, width), kRowThreads, 0, stream>>>(gate, up, gate_bias, up_bias, width, alpha,
                                                                        limit, out);
  return cudaGetLastError();
}

cudaError_t LaunchInterleavedRope(float* x, int rows, int64_t row_stride, int count, int64_t span_stride, int dim,
                                  const float* cos_sin, float factor, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(rows) * count * (dim / 2);
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  InterleavedRopeKernel<<<static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      x, row_stride, count, span_stride, dim, cos_sin, factor, total);
  return cudaGetLastError();
}

cudaError_t LaunchScale(float factor, int64_t n, float* x, cudaStream_t stream) {
  ScaleKernel<<<static_cast<unsigned>((n + kRowThreads - 1) / kRowThreads), kRowThreads, 0, stream>>>(factor, n, x);
  return cudaGetLastError();
}

cudaError_t LaunchClip(float limit, int64_t n, float* x, cudaStream_t stream) {
  ClipKernel<<<static_cast<unsigned>((n + kRowThreads - 1) / kRowThreads), kRowThreads, 0, stream>>>(limit, n, x);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const float* src, const int32_t* index, int count, int64_t width, float* dst,
                             cudaStream_t stream) {
  GatherRowsKernel<<<RowGrid(count, width), kRowThreads, 0, stream>>>(src, index, width, dst);
  return cudaGetLastError();
}

cudaError_t LaunchScatterRows(const float* src, const int32_t* index, int count, int64_t width, float* dst,
                              cudaStream_t stream) {
  ScatterRowsKernel<<<RowGrid(count, width), kRowThreads, 0, stream>>>(src, index, width, dst);
  return cudaGetLastError();
}

cudaError_t LaunchAddWeightedSlots(const float* slots, const float* weights, const int32_t* row_slot_begin, int rows,
                                   int64_t width, float* out, cudaStream_t stream) {
  AddWeightedSlotsKernel<<<RowGrid(rows, width), kRowThreads, 0, stream>>>(slots, weights, row_slot_begin, width, out);
  return cudaGetLastError();
}

cudaError_t LaunchAddGatedRows(const float* x, const float* gate_logits, int rows, int64_t width, float* out,
                               cudaStream_t stream) {
  AddGatedRowsKernel<<<RowGrid(rows, width), kRowThreads, 0, stream>>>(x, gate_logits, width, out);
  return cudaGetLastError();
}

}  // namespace expertd::kernels::cuda::internal
