#include "kernels/cuda/kernels.h"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/runtime.h"

namespace expertd::kernels::cuda {
namespace {

using internal::WeightType;
namespace bl = internal::block_layout;

// launch.h's block offsets are quant_blocks.h's structs, field by field.
static_assert(sizeof(BlockQ8_0) == bl::kQ8_0Bytes && offsetof(BlockQ8_0, d) == bl::kQ8_0D &&
              offsetof(BlockQ8_0, qs) == bl::kQ8_0Qs);
static_assert(sizeof(BlockQ4_0) == bl::kQ4_0Bytes && offsetof(BlockQ4_0, d) == bl::kQ4_0D &&
              offsetof(BlockQ4_0, qs) == bl::kQ4_0Qs);
static_assert(sizeof(BlockQ4_K) == bl::kQ4_KBytes && offsetof(BlockQ4_K, d) == bl::kQ4_KD &&
              offsetof(BlockQ4_K, dmin) == bl::kQ4_KDmin && offsetof(BlockQ4_K, scales) == bl::kQ4_KScales &&
              offsetof(BlockQ4_K, qs) == bl::kQ4_KQs);
static_assert(sizeof(BlockQ5_K) == bl::kQ5_KBytes && offsetof(BlockQ5_K, d) == bl::kQ5_KD &&
              offsetof(BlockQ5_K, dmin) == bl::kQ5_KDmin && offsetof(BlockQ5_K, scales) == bl::kQ5_KScales &&
              offsetof(BlockQ5_K, qh) == bl::kQ5_KQh && offsetof(BlockQ5_K, qs) == bl::kQ5_KQs);
static_assert(sizeof(BlockQ6_K) == bl::kQ6_KBytes && offsetof(BlockQ6_K, ql) == bl::kQ6_KQl &&
              offsetof(BlockQ6_K, qh) == bl::kQ6_KQh && offsetof(BlockQ6_K, scales) == bl::kQ6_KScales &&
              offsetof(BlockQ6_K, d) == bl::kQ6_KD);
static_assert(sizeof(BlockMXFP4) == bl::kMXFP4Bytes && offsetof(BlockMXFP4, e) == bl::kMXFP4E &&
              offsetof(BlockMXFP4, qs) == bl::kMXFP4Qs);

// The kernel that reads `dtype`; nullopt for a dtype without one (none so
// far). No default: a new DType does not compile here (-Wswitch) until it
// gets a kernel or a refusal.
std::optional<WeightType> WeightTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF32: return WeightType::kF32;
    case DType::kBF16: return WeightType::kBF16;
    case DType::kF16: return WeightType::kF16;
    case DType::kQ8_0: return WeightType::kQ8_0;
    case DType::kQ4_0: return WeightType::kQ4_0;
    case DType::kQ4_K: return WeightType::kQ4_K;
    case DType::kQ5_K: return WeightType::kQ5_K;
    case DType::kQ6_K: return WeightType::kQ6_K;
    case DType::kMXFP4: return WeightType::kMXFP4;
  }
  return std::nullopt;
}

absl::Status Launched(cudaError_t error, absl::string_view kernel) {
  return CudaStatus(error, absl::StrCat("launching ", kernel));
}

}  // namespace

bool MatMulSupports(DType dtype) { return WeightTypeOf(dtype).has_value(); }

absl::Status MatMul(const WeightMatrix& w, const float* x, int batch, float* y, cudaStream_t stream) {
  if (w.rows <= 0 || w.cols <= 0 || batch < 0 || (batch > 0 && (w.data == nullptr || x == nullptr || y == nullptr))) {
    return absl::InvalidArgumentError(absl::StrCat("cuda MatMul of a ", w.rows, "x", w.cols, " ", std::string(DTypeName(w.dtype)),
                                                   " matrix by ", batch, " rows: empty shape or null pointer"));
  }
  if (w.rows > int64_t{2147483647} * 8) {
    return absl::InvalidArgumentError(absl::StrCat("cuda MatMul: ", w.rows, " rows exceed the grid"));
  }
  if (const int64_t block = DTypeBlockElements(w.dtype); w.cols % block != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda MatMul: a ", std::string(DTypeName(w.dtype)), " matrix's rows are whole blocks of ", block,
        " elements, but this one has ", w.cols, " columns; quantise it to a type whose block divides ", w.cols,
        " (or keep it as f32, bf16 or f16)"));
  }
  const std::optional<WeightType> type = WeightTypeOf(w.dtype);
  if (!type) {
    return absl::UnimplementedError(absl::StrCat("cuda MatMul: no GPU kernel reads ", std::string(DTypeName(w.dtype)),
                                                 " weights; run this model on the CPU"));
  }
  // Groups of up to kMaxBatchPerPass input rows, each one pass over W.
  for (int first = 0; first < batch; first += kMaxBatchPerPass) {
    const int count = std::min(kMaxBatchPerPass, batch - first);
    const cudaError_t error = internal::LaunchMatMul(*type, w.data, w.rows, w.cols, x + first * w.cols, count,
                                                     y + first * w.rows, stream);
    if (error != cudaSuccess) {
      return Launched(error, absl::StrCat("MatMul of ", w.rows, "x", w.cols, " ", std::string(DTypeName(w.dtype)),
                                          " weights by ", count, " rows"));
    }
  }
  return absl::OkStatus();
}

absl::Status RmsNorm(const float* x, const float* weight, int rows, int64_t n, float eps, float* out,
                     cudaStream_t stream) {
  if (rows < 0 || n <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("cuda RmsNorm of ", rows, " rows of ", n, " values"));
  }
  if (rows == 0) return absl::OkStatus();
  return Launched(internal::LaunchRmsNorm(x, weight, rows, n, eps, out, stream), "RmsNorm");
}

absl::Status ApplyRope(float* x, int num_tokens, int num_heads, int head_dim, const float* cos_sin,
                       cudaStream_t stream) {
  if (num_tokens < 0 || num_heads <= 0 || head_dim <= 0 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cuda ApplyRope: ", num_tokens, " tokens of ", num_heads,
                                                   " heads of ", head_dim, " values (head_dim must be even)"));
  }
  return Launched(internal::LaunchRope(x, num_tokens, num_heads, head_dim, cos_sin, stream), "ApplyRope");
}

absl::Status InterleavedRope(float* x, int rows, int64_t row_stride, int count, int64_t span_stride, int dim,
                             const float* cos_sin, float factor, cudaStream_t stream) {
  if (rows < 0 || count < 0 || dim <= 0 || dim % 2 != 0 || row_stride < 0 || span_stride < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cuda InterleavedRope: ", rows, " rows of ", count, " spans of ",
                                                   dim, " values (dim must be even)"));
  }
  return Launched(
      internal::LaunchInterleavedRope(x, rows, row_stride, count, span_stride, dim, cos_sin, factor, stream),
      "InterleavedRope");
}

absl::Status Scale(float factor, int64_t n, float* x, cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cuda Scale of ", n, " values"));
  if (n == 0) return absl::OkStatus();
  return Launched(internal::LaunchScale(factor, n, x, stream), "Scale");
}

absl::Status CausalAttention(const AttentionShape& shape, const float* q, int num_queries, int first_position,
                             const float* k, const float* v, float* out, cudaStream_t stream) {
  if (shape.num_heads <= 0 || shape.num_kv_heads <= 0 || shape.num_heads % shape.num_kv_heads != 0 ||
      shape.head_dim <= 0 || shape.head_dim > kMaxAttentionHeadDim || num_queries < 0 || first_position < 0 ||
      shape.window < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda CausalAttention: ", shape.num_heads, " heads over ", shape.num_kv_heads, " kv heads of ", shape.head_dim,
        " values (kv heads must divide heads; head_dim at most ", kMaxAttentionHeadDim, "), ", num_queries,
        " queries from position ", first_position, ", window ", shape.window, " (0: none)"));
  }
  if (num_queries == 0) return absl::OkStatus();
  return Launched(internal::LaunchAttention(shape.num_heads, shape.num_kv_heads, shape.head_dim, q, num_queries,
                                            first_position, k, v, out, shape.window, shape.sinks, stream),
                  "CausalAttention");
}

absl::Status RouteTokens(const float* logits, int num_tokens, int num_experts, int k, bool normalize,
                         int32_t* experts_out, float* weights_out, cudaStream_t stream) {
  if (num_tokens < 0 || num_experts <= 0 || num_experts > kMaxRouterExperts || k < 1 || k > num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("cuda RouteTokens: top-", k, " of ", num_experts,
                                                   " experts (need 1 <= k <= experts <= ", kMaxRouterExperts, ")"));
  }
  if (num_tokens == 0) return absl::OkStatus();
  return Launched(internal::LaunchRoute(logits, num_tokens, num_experts, k, normalize, experts_out, weights_out, stream),
                  "RouteTokens");
}

absl::Status SiluMul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cuda SiluMul of ", n, " values"));
  return Launched(internal::LaunchSiluMul(gate, up, n, out, stream), "SiluMul");
}

namespace {

absl::Status CheckRows(absl::string_view kernel, int rows, int64_t width) {
  if (rows < 0 || width <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("cuda ", kernel, " of ", rows, " rows of ", width, " values"));
  }
  return absl::OkStatus();
}

}  // namespace

// The row kernels put rows on blockIdx.y (at most 65535): longer inputs run
// in chunks of rows.
constexpr int kMaxGridRows = 65535;

template <typename Launch>
absl::Status InRowChunks(absl::string_view kernel, int rows, Launch launch) {
  for (int first = 0; first < rows; first += kMaxGridRows) {
    if (absl::Status s = Launched(launch(first, std::min(kMaxGridRows, rows - first)), kernel); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status AddRows(const float* x, int rows, int64_t width, float* out, cudaStream_t stream) {
  if (absl::Status s = CheckRows("AddRows", rows, width); !s.ok()) return s;
  return InRowChunks("AddRows", rows, [&](int first, int count) {
    return internal::LaunchAddRows(x + first * width, count, width, out + first * width, stream);
  });
}

absl::Status AddBias(const float* bias, int rows, int64_t width, float* out, cudaStream_t stream) {
  if (absl::Status s = CheckRows("AddBias", rows, width); !s.ok()) return s;
  return InRowChunks("AddBias", rows, [&](int first, int count) {
    return internal::LaunchAddBias(bias, count, width, out + first * width, stream);
  });
}

absl::Status ClampedSwiglu(const float* gate, const float* up, const float* gate_bias, const float* up_bias, int rows,
                           int64_t width, float alpha, float limit, float* out, cudaStream_t stream) {
  if (absl::Status s = CheckRows("ClampedSwiglu", rows, width); !s.ok()) return s;
  if (!(limit > 0.0f)) return absl::InvalidArgumentError(absl::StrCat("cuda ClampedSwiglu with limit ", limit));
  // The biases index by column: only the rows move.
  return InRowChunks("ClampedSwiglu", rows, [&](int first, int count) {
    return internal::LaunchClampedSwiglu(gate + first * width, up + first * width, gate_bias, up_bias, count, width,
                                         alpha, limit, out + first * width, stream);
  });
}

absl::Status Clip(float limit, int64_t n, float* x, cudaStream_t stream) {
  if (n < 0 || !(limit >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("cuda Clip of ", n, " values to +-", limit));
  }
  if (n == 0) return absl::OkStatus();
  return Launched(internal::LaunchClip(limit, n, x, stream), "Clip");
}

absl::Status GatherRows(const float* src, const int32_t* index, int count, int64_t width, float* dst,
                        cudaStream_t stream) {
  if (absl::Status s = CheckRows("GatherRows", count, width); !s.ok()) return s;
  return InRowChunks("GatherRows", count, [&](int first, int n) {
    return internal::LaunchGatherRows(src, index + first, n, width, dst + first * width, stream);
  });
}

absl::Status ScatterRows(const float* src, const int32_t* index, int count, int64_t width, float* dst,
                         cudaStream_t stream) {
  if (absl::Status s = CheckRows("ScatterRows", count, width); !s.ok()) return s;
  return InRowChunks("ScatterRows", count, [&](int first, int n) {
    return internal::LaunchScatterRows(src + first * width, index + first, n, width, dst, stream);
  });
}

absl::Status AddWeightedSlots(const float* slots, const float* weights, const int32_t* row_slot_begin, int rows,
                              int64_t width, float* out, cudaStream_t stream) {
  if (absl::Status s = CheckRows("AddWeightedSlots", rows, width); !s.ok()) return s;
  // Slot indices stay absolute: only the rows move.
  return InRowChunks("AddWeightedSlots", rows, [&](int first, int count) {
    return internal::LaunchAddWeightedSlots(slots, weights, row_slot_begin + first, count, width, out + first * width,
                                            stream);
  });
}

absl::Status AddGatedRows(const float* x, const float* gate_logits, int rows, int64_t width, float* out,
                          cudaStream_t stream) {
  if (absl::Status s = CheckRows("AddGatedRows", rows, width); !s.ok()) return s;
  return InRowChunks("AddGatedRows", rows, [&](int first, int count) {
    return internal::LaunchAddGatedRows(x + first * width, gate_logits + first, count, width, out + first * width,
                                        stream);
  });
}

}  // namespace expertd::kernels::cuda
