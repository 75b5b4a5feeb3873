#include "kernels/cuda/kernels.h"

#include <algorithm>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/runtime.h"

namespace expertd::kernels::cuda {
namespace {

int WeightTypeCode(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 0;
    case DType::kBF16:
      return 1;
    case DType::kF16:
      return 2;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
    case DType::kMXFP4:
      return -1;  // no GPU kernel reads GGML blocks yet; MatMul refuses them
  }
  return -1;
}

absl::Status Launched(cudaError_t error, absl::string_view kernel) {
  return CudaStatus(error, absl::StrCat("launching ", kernel));
}

}  // namespace

bool MatMulSupports(DType dtype) { return WeightTypeCode(dtype) >= 0; }

absl::Status MatMul(const WeightMatrix& w, const float* x, int batch, float* y, cudaStream_t stream) {
  if (w.rows <= 0 || w.cols <= 0 || batch < 0 || (batch > 0 && (w.data == nullptr || x == nullptr || y == nullptr))) {
    return absl::InvalidArgumentError(absl::StrCat("cuda MatMul of a ", w.rows, "x", w.cols, " ", std::string(DTypeName(w.dtype)),
                                                   " matrix by ", batch, " rows: empty shape or null pointer"));
  }
  if (w.rows > int64_t{2147483647} * 8) {
    return absl::InvalidArgumentError(absl::StrCat("cuda MatMul: ", w.rows, " rows exceed the grid"));
  }
  const int code = WeightTypeCode(w.dtype);
  if (code < 0) {
    return absl::UnimplementedError(absl::StrCat("cuda MatMul: ", std::string(DTypeName(w.dtype)),
                                                 " weights are not supported on the GPU yet (f32, bf16 and f16 "
                                                 "are); run quantised experts on the CPU or pack them as bf16"));
  }
  // Groups of up to kMaxBatchPerPass input rows, each one pass over W.
  for (int first = 0; first < batch; first += kMaxBatchPerPass) {
    const int count = std::min(kMaxBatchPerPass, batch - first);
    if (absl::Status s = Launched(internal::LaunchMatMul(code, w.data, w.rows, w.cols, x + first * w.cols, count,
                                                         y + first * w.rows, stream),
                                  "MatMul");
        !s.ok()) {
      return s;
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

absl::Status CausalAttention(const AttentionShape& shape, const float* q, int num_queries, int first_position,
                             const float* k, const float* v, float* out, cudaStream_t stream) {
  if (shape.num_heads <= 0 || shape.num_kv_heads <= 0 || shape.num_heads % shape.num_kv_heads != 0 ||
      shape.head_dim <= 0 || shape.head_dim > kMaxAttentionHeadDim || num_queries < 0 || first_position < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cuda CausalAttention: ", shape.num_heads, " heads over ", shape.num_kv_heads, " kv heads of ", shape.head_dim,
        " values (kv heads must divide heads; head_dim at most ", kMaxAttentionHeadDim, "), ", num_queries,
        " queries from position ", first_position));
  }
  if (num_queries == 0) return absl::OkStatus();
  return Launched(internal::LaunchAttention(shape.num_heads, shape.num_kv_heads, shape.head_dim, q, num_queries,
                                            first_position, k, v, out, stream),
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
