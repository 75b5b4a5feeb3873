// Dot products straight from GGML blocks against 8-bit activation rows.
//
// Weights and activations widen to int16 and meet in ReorderWidenMulAccumulate
// (pmaddwd: pairs of int16 products summed into int32 lanes), the widest
// integer dot product Highway 1.0 offers on every x86 target. A 32-element
// sub-block's sum fits easily in int32 (|q| <= 63, |x| <= 127). Integer
// vectors are only ever added and multiplied by integer scales, so they hold
// exact sums; f32 appears only when a block's sum is scaled (see
// quant_matmul.h for what that makes exact). Built with -ffp-contract=off so
// the scalar f32 steps are the same as in quant_blocks.cc.

#include "kernels/cpu/quant_matmul.h"

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/dtype.h"
#include "kernels/cpu/quant_blocks.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/quant_matmul.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace expertd::kernels::internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// int16 lanes per step: at most 32 (one 32-element sub-block), and at most
// 16 where a sub-block is 16 elements or a step reads 16 bytes of nibbles.
using D16x32 = hn::CappedTag<int16_t, 32>;
using D16x16 = hn::CappedTag<int16_t, 16>;

template <class D16>
HWY_INLINE hn::Vec<D16> LoadI8(D16 d16, const int8_t* p) {
  return hn::PromoteTo(d16, hn::LoadU(hn::Rebind<int8_t, D16>(), p));
}
template <class D16>
HWY_INLINE hn::Vec<D16> LoadU8(D16 d16, const uint8_t* p) {
  return hn::PromoteTo(d16, hn::LoadU(hn::Rebind<uint8_t, D16>(), p));
}

// Sum of all lanes of an int32 accumulator pair, exact.
template <class D32>
HWY_INLINE int32_t SumI32(D32 d32, hn::Vec<D32> a, hn::Vec<D32> b) {
  return hn::GetLane(hn::SumOfLanes(d32, hn::Add(a, b)));
}

float DotQ8_0(const BlockQ8_0* HWY_RESTRICT w, const ActQ8_32* HWY_RESTRICT x, size_t blocks) {
  const D16x32 d16;
  const hn::RepartitionToWide<D16x32> d32;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t n = hn::Lanes(d16);
  auto acc = hn::Zero(df);
  for (size_t i = 0; i < blocks; ++i) {
    auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
    for (size_t k = 0; k < 32; k += n) {
      s0 = hn::ReorderWidenMulAccumulate(d32, LoadI8(d16, w[i].qs + k), LoadI8(d16, x[i].qs + k), s0, s1);
    }
    const float scale = F16ToF32(w[i].d) * x[i].d;
    acc = hn::MulAdd(hn::ConvertTo(df, hn::Add(s0, s1)), hn::Set(df, scale), acc);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

float DotQ4_0(const BlockQ4_0* HWY_RESTRICT w, const ActQ8_32* HWY_RESTRICT x, size_t blocks) {
  const D16x16 d16;
  const hn::RepartitionToWide<D16x16> d32;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t n = hn::Lanes(d16);
  const auto low = hn::Set(d16, 0xF), eight = hn::Set(d16, 8);
  auto acc = hn::Zero(df);
  for (size_t i = 0; i < blocks; ++i) {
    auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
    for (size_t k = 0; k < 16; k += n) {
      const auto q = LoadU8(d16, w[i].qs + k);
      const auto lo = hn::Sub(hn::And(q, low), eight);
      const auto hi = hn::Sub(hn::ShiftRight<4>(q), eight);
      s0 = hn::ReorderWidenMulAccumulate(d32, lo, LoadI8(d16, x[i].qs + k), s0, s1);
      s0 = hn::ReorderWidenMulAccumulate(d32, hi, LoadI8(d16, x[i].qs + 16 + k), s0, s1);
    }
    const float scale = F16ToF32(w[i].d) * x[i].d;
    acc = hn::MulAdd(hn::ConvertTo(df, hn::Add(s0, s1)), hn::Set(df, scale), acc);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

// Q4_K and Q5_K: the integer sums sum_j sc_j * dot(q_j, x_j) and
// sum_j m_j * sum(x_j), then the same f32 steps as DotQuantRowScalar.
template <bool kFifthBit, typename Block>
float DotK(const Block* HWY_RESTRICT w, const ActQ8_K* HWY_RESTRICT x, size_t blocks) {
  const D16x32 d16;
  const hn::RepartitionToWide<D16x32> d32;
  const size_t n = hn::Lanes(d16);
  const auto low = hn::Set(d16, 0xF), one = hn::Set(d16, 1);
  float acc = 0;
  for (size_t i = 0; i < blocks; ++i) {
    uint8_t sc[8], m[8];
    int32_t mins = 0;
    for (int j = 0; j < 8; ++j) {
      Q4KScaleMin(w[i].scales, j, &sc[j], &m[j]);
      mins += m[j] * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
    }
    auto total = hn::Zero(d32);
    for (int c = 0; c < 4; ++c) {
      auto lo0 = hn::Zero(d32), lo1 = hn::Zero(d32), hi0 = hn::Zero(d32), hi1 = hn::Zero(d32);
      for (size_t k = 0; k < 32; k += n) {
        const auto q = LoadU8(d16, w[i].qs + 32 * c + k);
        auto lo = hn::And(q, low);
        auto hi = hn::ShiftRight<4>(q);
        if constexpr (kFifthBit) {
          const auto h = LoadU8(d16, w[i].qh + k);
          lo = hn::Or(lo, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c), one)));
          hi = hn::Or(hi, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, 2 * c + 1), one)));
        }
        lo0 = hn::ReorderWidenMulAccumulate(d32, lo, LoadI8(d16, x[i].qs + 64 * c + k), lo0, lo1);
        hi0 = hn::ReorderWidenMulAccumulate(d32, hi, LoadI8(d16, x[i].qs + 64 * c + 32 + k), hi0, hi1);
      }
      total = hn::Add(total, hn::Mul(hn::Add(lo0, lo1), hn::Set(d32, sc[2 * c])));
      total = hn::Add(total, hn::Mul(hn::Add(hi0, hi1), hn::Set(d32, sc[2 * c + 1])));
    }
    const int32_t scaled = hn::GetLane(hn::SumOfLanes(d32, total));
    acc += (x[i].d * F16ToF32(w[i].d)) * static_cast<float>(scaled) -
           (x[i].d * F16ToF32(w[i].dmin)) * static_cast<float>(mins);
  }
  return acc;
}

float DotQ6_K(const BlockQ6_K* HWY_RESTRICT w, const ActQ8_K* HWY_RESTRICT x, size_t blocks) {
  const D16x16 d16;
  const hn::RepartitionToWide<D16x16> d32;
  const size_t n = hn::Lanes(d16);
  const auto low = hn::Set(d16, 0xF), three = hn::Set(d16, 3), bias = hn::Set(d16, 32);
  float acc = 0;
  for (size_t i = 0; i < blocks; ++i) {
    auto total = hn::Zero(d32);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[i].ql + 64 * h;
      const uint8_t* qh = w[i].qh + 32 * h;
      const int8_t* xs = x[i].qs + 128 * h;
      for (int half = 0; half < 2; ++half) {  // l in [16 half, 16 half + 16): one sub-block per t
        const int l0 = 16 * half;
        auto a0 = hn::Zero(d32), a1 = hn::Zero(d32), b0 = hn::Zero(d32), b1 = hn::Zero(d32);
        auto c0 = hn::Zero(d32), c1 = hn::Zero(d32), e0 = hn::Zero(d32), e1 = hn::Zero(d32);
        for (size_t k = 0; k < 16; k += n) {
          const auto la = LoadU8(d16, ql + l0 + k);
          const auto lb = LoadU8(d16, ql + 32 + l0 + k);
          const auto hb = LoadU8(d16, qh + l0 + k);
          const auto q0 = hn::Sub(hn::Or(hn::And(la, low), hn::ShiftLeft<4>(hn::And(hb, three))), bias);
          const auto q1 =
              hn::Sub(hn::Or(hn::And(lb, low), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(hb), three))), bias);
          const auto q2 =
              hn::Sub(hn::Or(hn::ShiftRight<4>(la), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(hb), three))), bias);
          const auto q3 = hn::Sub(hn::Or(hn::ShiftRight<4>(lb), hn::ShiftLeft<4>(hn::ShiftRight<6>(hb))), bias);
          a0 = hn::ReorderWidenMulAccumulate(d32, q0, LoadI8(d16, xs + l0 + k), a0, a1);
          b0 = hn::ReorderWidenMulAccumulate(d32, q1, LoadI8(d16, xs + 32 + l0 + k), b0, b1);
          c0 = hn::ReorderWidenMulAccumulate(d32, q2, LoadI8(d16, xs + 64 + l0 + k), c0, c1);
          e0 = hn::ReorderWidenMulAccumulate(d32, q3, LoadI8(d16, xs + 96 + l0 + k), e0, e1);
        }
        const int8_t* sc = w[i].scales + 8 * h + half;
        total = hn::Add(total, hn::Mul(hn::Add(a0, a1), hn::Set(d32, sc[0])));
        total = hn::Add(total, hn::Mul(hn::Add(b0, b1), hn::Set(d32, sc[2])));
        total = hn::Add(total, hn::Mul(hn::Add(c0, c1), hn::Set(d32, sc[4])));
        total = hn::Add(total, hn::Mul(hn::Add(e0, e1), hn::Set(d32, sc[6])));
      }
    }
    const int32_t scaled = hn::GetLane(hn::SumOfLanes(d32, total));
    acc += (x[i].d * F16ToF32(w[i].d)) * static_cast<float>(scaled);
  }
  return acc;
}

template <typename Block, typename Act, float (*kDot)(const Block*, const Act*, size_t)>
void Rows(const void* w, size_t rows, size_t cols, size_t block_elements, const void* xq, size_t batch, float* y,
          size_t row_begin, size_t row_end) {
  const size_t blocks = cols / block_elements;
  const size_t x_blocks = cols / (sizeof(Act) == sizeof(ActQ8_32) ? 32 : 256);
  const auto* wb = static_cast<const Block*>(w);
  const auto* xb = static_cast<const Act*>(xq);
  for (size_t r = row_begin; r < row_end; ++r) {
    for (size_t m = 0; m < batch; ++m) y[m * rows + r] = kDot(wb + r * blocks, xb + m * x_blocks, blocks);
  }
}

void QuantRows(DType dtype, const void* w, int64_t rows, int64_t cols, const void* xq, int64_t batch, float* y,
               int64_t row_begin, int64_t row_end) {
  const auto r = static_cast<size_t>(rows), n = static_cast<size_t>(cols), m = static_cast<size_t>(batch);
  const auto begin = static_cast<size_t>(row_begin), end = static_cast<size_t>(row_end);
  switch (dtype) {
    case DType::kQ8_0: Rows<BlockQ8_0, ActQ8_32, DotQ8_0>(w, r, n, 32, xq, m, y, begin, end); return;
    case DType::kQ4_0: Rows<BlockQ4_0, ActQ8_32, DotQ4_0>(w, r, n, 32, xq, m, y, begin, end); return;
    case DType::kQ4_K: Rows<BlockQ4_K, ActQ8_K, DotK<false, BlockQ4_K>>(w, r, n, 256, xq, m, y, begin, end); return;
    case DType::kQ5_K: Rows<BlockQ5_K, ActQ8_K, DotK<true, BlockQ5_K>>(w, r, n, 256, xq, m, y, begin, end); return;
    case DType::kQ6_K: Rows<BlockQ6_K, ActQ8_K, DotQ6_K>(w, r, n, 256, xq, m, y, begin, end); return;
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      return;  // MatMul runs float weights itself
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace expertd::kernels::internal
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace expertd::kernels::internal {

HWY_EXPORT(QuantRows);

void QuantMatMulRows(DType dtype, const void* w, int64_t rows, int64_t cols, const void* xq, int64_t batch,
                     float* y, int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(QuantRows)(dtype, w, rows, cols, xq, batch, y, row_begin, row_end);
}

}  // namespace expertd::kernels::internal
#endif  // HWY_ONCE
