// Element-wise and reduction kernels around the matrix products. All of them
// are single-threaded and use a fixed operation order, so their results do
// not depend on the caller's thread count.

#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ops.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace expertd::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
constexpr size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

// Applies fn(vector) -> vector to x[0, n) and stores to out, including the
// partial last vector via a padded copy (pad value `pad`), so every element
// goes through the same vector code (e.g. the same Exp approximation).
// out may alias x: each vector is loaded before it is stored.
template <class Fn>
HWY_INLINE void MapPadded(const float* x, size_t n, float pad, float* out,
                          const Fn& fn) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(fn(hn::LoadU(df, x + i), i), df, out + i);
  if (i < n) {
    HWY_ALIGN float buf[kMaxLanes];
    std::fill(buf, buf + kMaxLanes, pad);
    std::memcpy(buf, x + i, (n - i) * sizeof(float));
    hn::Store(fn(hn::Load(df, buf), i), df, buf);
    std::memcpy(out + i, buf, (n - i) * sizeof(float));
  }
}

// Sum of a[i] * b[i] with four accumulators; the tail is zero-padded.
float DotImpl(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t count) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const auto n = static_cast<size_t>(std::max<int64_t>(0, count));
  VF s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  size_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + i + lanes), hn::LoadU(df, b + i + lanes), s1);
    s2 = hn::MulAdd(hn::LoadU(df, a + i + 2 * lanes), hn::LoadU(df, b + i + 2 * lanes), s2);
    s3 = hn::MulAdd(hn::LoadU(df, a + i + 3 * lanes), hn::LoadU(df, b + i + 3 * lanes), s3);
  }
  for (; i + lanes <= n; i += lanes) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
  }
  if (i < n) {
    HWY_ALIGN float a_tail[kMaxLanes] = {};
    HWY_ALIGN float b_tail[kMaxLanes] = {};
    std::memcpy(a_tail, a + i, (n - i) * sizeof(float));
    std::memcpy(b_tail, b + i, (n - i) * sizeof(float));
    s0 = hn::MulAdd(hn::Load(df, a_tail), hn::Load(df, b_tail), s0);
  }
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
}

void AxpyImpl(float a, const float* HWY_RESTRICT x, int64_t count, float* HWY_RESTRICT y) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  const auto n = static_cast<size_t>(std::max<int64_t>(0, count));
  const VF va = hn::Set(df, a);
  size_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, y + i);
  }
  if (i < n) {
    HWY_ALIGN float x_tail[kMaxLanes] = {};
    HWY_ALIGN float y_tail[kMaxLanes] = {};
    std::memcpy(x_tail, x + i, (n - i) * sizeof(float));
    std::memcpy(y_tail, y + i, (n - i) * sizeof(float));
    hn::Store(hn::MulAdd(va, hn::Load(df, x_tail), hn::Load(df, y_tail)), df, y_tail);
    std::memcpy(y + i, y_tail, (n - i) * sizeof(float));
  }
}

// x and out may alias, so no HWY_RESTRICT on them.
void RmsNormImpl(const float* x, const float* HWY_RESTRICT weight, int64_t count, float eps,
                 float* out) {
  if (count <= 0) return;
  const DF df;
  const auto n = static_cast<size_t>(count);
  const float mean_square = DotImpl(x, x, count) / static_cast<float>(count);
  const VF scale = hn::Set(df, 1.0f / std::sqrt(mean_square + eps));
  MapPadded(x, n, 0.0f, out, [&](VF v, size_t i) {
    // Padded lanes of the last vector read weight from a padded copy too.
    const size_t lanes = hn::Lanes(df);
    VF w;
    if (i + lanes <= n) {
      w = hn::LoadU(df, weight + i);
    } else {
      HWY_ALIGN float w_tail[kMaxLanes] = {};
      std::memcpy(w_tail, weight + i, (n - i) * sizeof(float));
      w = hn::Load(df, w_tail);
    }
    return hn::Mul(hn::Mul(v, scale), w);
  });
}

void SoftmaxImpl(float* x, int64_t count) {
  if (count <= 0) return;
  const DF df;
  const auto n = static_cast<size_t>(count);
  float max_value = x[0];
  for (size_t i = 1; i < n; ++i) max_value = std::max(max_value, x[i]);
  const VF vmax = hn::Set(df, max_value);
  // Padding with the max gives exp(0) = 1 in padded lanes, so they are masked
  // out of the sum rather than relying on exp(-inf) = 0.
  VF vsum = hn::Zero(df);
  MapPadded(x, n, max_value, x, [&](VF v, size_t i) {
    const VF e = hn::Exp(df, hn::Sub(v, vmax));
    const size_t valid = std::min(hn::Lanes(df), n - i);
    vsum = hn::Add(vsum, hn::IfThenElseZero(hn::FirstN(df, valid), e));
    return e;
  });
  const VF inv_sum = hn::Set(df, 1.0f / hn::GetLane(hn::SumOfLanes(df, vsum)));
  MapPadded(x, n, 0.0f, x, [&](VF v, size_t) { return hn::Mul(v, inv_sum); });
}

void SiluMulImpl(const float* gate, const float* up, int64_t count, float* out) {
  if (count <= 0) return;
  const DF df;
  const auto n = static_cast<size_t>(count);
  const VF one = hn::Set(df, 1.0f);
  // Exp is valid only up to +104 (and f32 overflows beyond ~88), so -g is
  // clamped at 80: for g < -80, silu(g) is below 1e-33 in magnitude either way.
  const VF exp_limit = hn::Set(df, 80.0f);
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  const auto silu_mul = [&](VF g, VF u) {
    const VF e = hn::Exp(df, hn::Min(hn::Neg(g), exp_limit));
    return hn::Mul(hn::Div(g, hn::Add(one, e)), u);
  };
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(silu_mul(hn::LoadU(df, gate + i), hn::LoadU(df, up + i)), df, out + i);
  }
  if (i < n) {
    HWY_ALIGN float g_tail[kMaxLanes] = {};
    HWY_ALIGN float u_tail[kMaxLanes] = {};
    std::memcpy(g_tail, gate + i, (n - i) * sizeof(float));
    std::memcpy(u_tail, up + i, (n - i) * sizeof(float));
    hn::Store(silu_mul(hn::Load(df, g_tail), hn::Load(df, u_tail)), df, g_tail);
    std::memcpy(out + i, g_tail, (n - i) * sizeof(float));
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace expertd::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace expertd::kernels {

HWY_EXPORT(DotImpl);
HWY_EXPORT(AxpyImpl);
HWY_EXPORT(RmsNormImpl);
HWY_EXPORT(SoftmaxImpl);
HWY_EXPORT(SiluMulImpl);

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  HWY_DYNAMIC_DISPATCH(RmsNormImpl)(x, weight, n, eps, out);
}

void Softmax(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(SoftmaxImpl)(x, n); }

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(SiluMulImpl)(gate, up, n, out);
}

float Dot(const float* a, const float* b, int64_t n) {
  return HWY_DYNAMIC_DISPATCH(DotImpl)(a, b, n);
}

void Axpy(float a, const float* x, int64_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(AxpyImpl)(a, x, n, y);
}

void ApplyRope(float* x, int num_heads, int head_dim, const float* cos_sin) {
  // Not hot (num_heads * head_dim values per token), so a plain loop.
  const int half = head_dim / 2;
  const float* cos = cos_sin;
  const float* sin = cos_sin + half;
  for (int h = 0; h < num_heads; ++h) {
    float* head = x + static_cast<int64_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const float x0 = head[i];
      const float x1 = head[i + half];
      head[i] = x0 * cos[i] - x1 * sin[i];
      head[i + half] = x1 * cos[i] + x0 * sin[i];
    }
  }
}

}  // namespace expertd::kernels
#endif  // HWY_ONCE
