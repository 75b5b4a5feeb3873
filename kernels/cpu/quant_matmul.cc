// Dot products straight from GGML blocks against 8-bit activation rows.
//
// Portable path (every Highway target): weights and activations widen to
// int16 and meet in ReorderWidenMulAccumulate (pmaddwd: pairs of int16
// products summed into int32 lanes), the widest integer dot product Highway
// 1.0 offers everywhere. x86 from AVX2 up (AVX-512 hosts included) instead
// runs the pmaddubsw kernels below on the bytes as stored. Either way a
// 32-element sub-block's sum fits easily in int32 (|q| <= 63, |x| <= 127),
// integer vectors are only added and multiplied by integer scales, so they
// hold exact sums, and f32 appears only when a block's sum is scaled (see
// quant_matmul.h for what that makes exact). Built with -ffp-contract=off
// so the scalar f32 steps are the same as in quant_blocks.cc.
//
// Measured on the 2-core AVX-512 (Zen 5) VM, cache-resident 256 x 2048,
// thread CPU time (kernels_bench cached_matvec_*): bf16 29 Gelem/s, q8_0 27,
// q4_k 27 and q6_k 25 (23 and 17 with 32-byte vectors), q4_0 22, q5_k 19.
// From memory (~12 GB/s per core) all are bound by bandwidth or close to it
// (27 Gelem/s is 15 GB/s of Q4_K weights); VNNI (vpdpbusd) is the next step,
// taken so far by MXFP4's decode kernel (Mxfp4DecodeRows: four rows per pass,
// cache-resident 2880 x 2880 13 -> 35 Gelem/s on an AVX-512 VNNI Xeon, 32
// with --simd-target AVX2; bench/README.md).
// The AVX2 kernels, measured on an AVX-512 host (kernels_bench --simd-target
// AVX2, cached_quant 1024 x 2048, 1 thread CPU time; AVX3 in brackets):
// matvec q4_k 38 Gelem/s (36), q6_k 29 (34), q8_0 28 (28); batch 8 q4_k 48
// (67), q6_k 44 (60). Per-block horizontal sums had held AVX2's q4_k and
// q6_k at 24 and 19 whatever the batch.

#include "kernels/cpu/quant_matmul.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

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
    const float scale = HalfToFloat(w[i].d) * x[i].d;
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
    const float scale = HalfToFloat(w[i].d) * x[i].d;
    acc = hn::MulAdd(hn::ConvertTo(df, hn::Add(s0, s1)), hn::Set(df, scale), acc);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

// MXFP4: the codes looked up in the value table (16 int8 entries) per
// block, then as Q8_0. Only non-x86 targets run this; x86 looks the values
// up with pshufb below.
float DotMXFP4(const BlockMXFP4* HWY_RESTRICT w, const ActQ8_32* HWY_RESTRICT x, size_t blocks) {
  const D16x32 d16;
  const hn::RepartitionToWide<D16x32> d32;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t n = hn::Lanes(d16);
  auto acc = hn::Zero(df);
  for (size_t i = 0; i < blocks; ++i) {
    int8_t values[32];
    for (int l = 0; l < 16; ++l) {
      values[l] = kMxfp4Values[w[i].qs[l] & 0xF];
      values[l + 16] = kMxfp4Values[w[i].qs[l] >> 4];
    }
    auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
    for (size_t k = 0; k < 32; k += n) {
      s0 = hn::ReorderWidenMulAccumulate(d32, LoadI8(d16, values + k), LoadI8(d16, x[i].qs + k), s0, s1);
    }
    const float scale = Mxfp4Scale(w[i].e) * x[i].d;
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
    acc += (x[i].d * HalfToFloat(w[i].d)) * static_cast<float>(scaled) -
           (x[i].d * HalfToFloat(w[i].dmin)) * static_cast<float>(mins);
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
    acc += (x[i].d * HalfToFloat(w[i].d)) * static_cast<float>(scaled);
  }
  return acc;
}

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// x86 with AVX2 (every x86 target from AVX2 up, AVX-512 included): Highway
// 1.0 has no u8 x i8 multiply, so these use pmaddubsw directly on 32-byte
// vectors, one sub-block per vector: unsigned 4-6 bit codes times int8
// activations summed in pairs into int16 (at most 63 * 127 * 2, no
// saturation), then pmaddwd by the sub-block's integer scale into int32.
// The same exact integers as the portable kernels, so the same results.
#define EXPERTD_QUANT_X86 1

HWY_INLINE float ScaleF32(uint16_t h) { return _cvtsh_ss(h); }  // F16C, exact
HWY_INLINE float BlockScale(const BlockQ8_0& b) { return ScaleF32(b.d); }
HWY_INLINE float BlockScale(const BlockQ4_0& b) { return ScaleF32(b.d); }
HWY_INLINE float BlockScale(const BlockMXFP4& b) { return Mxfp4Scale(b.e); }

HWY_INLINE int32_t HorizontalSum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// The 32 signed codes of a Q8_0 block, or of a Q4_0 block (nibbles - 8).
HWY_INLINE __m256i Codes(const BlockQ8_0& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
HWY_INLINE __m256i Codes(const BlockQ4_0& b) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i low = _mm_set1_epi8(0xF), eight = _mm_set1_epi8(8);
  return _mm256_set_m128i(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low), eight),
                          _mm_sub_epi8(_mm_and_si128(q, low), eight));
}

// MXFP4's values: each nibble indexes the 16-entry table (pshufb).
HWY_INLINE __m256i Codes(const BlockMXFP4& b) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i low = _mm_set1_epi8(0xF);
  const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values));
  return _mm256_set_m128i(_mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), low)),
                          _mm_shuffle_epi8(table, _mm_and_si128(q, low)));
}

// Q8_0, Q4_0 and MXFP4: each block's exact integer sum, scaled and accumulated in
// eight f32 lanes (the portable kernels use Highway's lane count, so their
// sums differ by f32 reordering only). A block unpacked for pmaddubsw,
// which needs one unsigned side: |w|, and w itself to move its sign onto x.
// The weights' work, done once per block however many activation rows meet
// it (UnpackedRows: prefill re-decoded MXFP4's nibbles for every row).
struct Q8Unpacked {
  __m256i magnitude;  // |w|
  __m256i codes;      // w, for its signs
  float scale = 0;
};
// Value-initialise (`Q8Lanes acc{}`: zero lanes); see LaneSums512.
struct Q8Lanes {
  __m256 sums;
};

template <typename Block>
HWY_INLINE void UnpackQ8(const Block& b, Q8Unpacked* u) {
  u->codes = Codes(b);
  u->magnitude = _mm256_sign_epi8(u->codes, u->codes);
  u->scale = BlockScale(b);
}

HWY_INLINE void AccumulateQ8(const Q8Unpacked& u, const ActQ8_32& x, Q8Lanes& acc) {
  const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs));
  const __m256i pairs = _mm256_maddubs_epi16(u.magnitude, _mm256_sign_epi8(xq, u.codes));
  const __m256 sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  acc.sums = _mm256_fmadd_ps(sums, _mm256_set1_ps(u.scale * x.d), acc.sums);
}

HWY_INLINE float FinishQ8(const Q8Lanes& acc) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc.sums), _mm256_extractf128_ps(acc.sums, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// MatVec's dot: the same unpack and accumulate steps per block as
// UnpackedRows, so a batched step gives these values bit for bit.
template <typename Block>
float DotQ8X86(const Block* HWY_RESTRICT w, const ActQ8_32* HWY_RESTRICT x, size_t blocks) {
  Q8Lanes acc{};
  for (size_t i = 0; i < blocks; ++i) {
    Q8Unpacked u;
    UnpackQ8(w[i], &u);
    AccumulateQ8(u, x[i], acc);
  }
  return FinishQ8(acc);
}

// MXFP4 decode (one activation row), several weight rows per pass. The
// per-block kernel above (DotQ8X86) spent ~15 instructions on each block,
// moved the sign of w onto x for every row, and chained every block's FMA
// into one accumulator; decode read only ~11 GB/s of MXFP4 on one Zen core.
// Here:
//   * codes + 12 (pshufb on a biased table, values 0..24) are unsigned, so
//     they go straight into pmaddubsw, or vpdpbusd where the CPU has
//     AVX-512 VNNI; dot(w + 12, x) - 12 * sum(x) is dot(w, x), and the
//     correction 12 * sum(x) per 4-byte lane depends on x alone, so it is
//     computed once per activation block for all the rows of a pass (and
//     seeds vpdpbusd's accumulator);
//   * the 16 nibble bytes are broadcast to both 128-bit halves and shifted
//     by 0 and 4 in one vpsrlvq;
//   * the block scale comes from a 256-entry table of Mxfp4Scale (a
//     broadcast load), multiplied by x's scale in a vector;
//   * kMxfp4Rows rows per pass give as many independent FMA chains and load
//     each activation block once; software prefetch keeps their four
//     streams ahead (kMxfp4PrefetchBytes).
// Every int32 lane is the same exact sum of four products w x as
// AccumulateQ8's (pmaddubsw + pmaddwd of |w| and sign(x, w)), and it is
// scaled and added in the same f32 steps in block order into a row's own
// eight lanes, so each result is DotQ8X86's bit for bit: MatVec, MatMul
// (UnpackedRows) and any split of rows still agree exactly.
constexpr size_t kMxfp4Rows = 4;
// Four rows are four streams a row apart, which the hardware prefetcher
// follows badly: each row's line 1 KiB ahead goes to L2 (past a row's end,
// the same offset in the next pass's row), as bf16_dot.cc does. Measured
// (kernels_bench expert_matvec_mxfp4, 1 thread, from memory): 4.9 GB/s
// without, 7-12 GB/s with (memory_read: 10.7); 512 and 2048 bytes ahead
// were within the noise of 1024.
constexpr size_t kMxfp4PrefetchBytes = 1024;

struct Mxfp4ScaleTable {
  float scale[256] = {};
};
constexpr Mxfp4ScaleTable MakeMxfp4ScaleTable() {
  Mxfp4ScaleTable t;
  for (int e = 0; e < 256; ++e) t.scale[e] = Mxfp4Scale(static_cast<uint8_t>(e));
  return t;
}
inline constexpr Mxfp4ScaleTable kMxfp4Scales = MakeMxfp4ScaleTable();

// What a pass needs of the weights' constants, loaded once.
struct Mxfp4Consts {
  __m256i table;   // kMxfp4Values + 12 in both 128-bit halves
  __m256i shifts;  // 0 for the low half (low nibbles), 4 for the high
  __m256i low;     // 0x0F bytes
};

HWY_INLINE Mxfp4Consts LoadMxfp4Consts() {
  int8_t biased[16];
  for (int i = 0; i < 16; ++i) biased[i] = static_cast<int8_t>(kMxfp4Values[i] + 12);
  return Mxfp4Consts{_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(biased))),
                     _mm256_set_epi64x(4, 4, 0, 0), _mm256_set1_epi8(0xF)};
}

// A block's 32 values + 12 as unsigned bytes, in element order.
HWY_INLINE __m256i Mxfp4Biased(const BlockMXFP4& b, const Mxfp4Consts& k) {
  const __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs)));
  return _mm256_shuffle_epi8(k.table, _mm256_and_si256(_mm256_srlv_epi64(q, k.shifts), k.low));
}

// The int32 lanes of dot(w, x) over four elements each, from w + 12:
// pmaddubsw (pairs at most 24 x 128 x 2, no saturation) and pmaddwd, less
// the correction; or vpdpbusd seeded with the negated correction.
struct Mxfp4LanesAvx2 {
  static HWY_INLINE __m256i Correction(__m256i xq) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(12), xq);
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));  // 12 x (sum of each 4 x)
  }
  static HWY_INLINE __m256i Lanes(__m256i biased, __m256i xq, __m256i correction) {
    const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(biased, xq), _mm256_set1_epi16(1));
    return _mm256_sub_epi32(sums, correction);
  }
};

// Rows [0, kRows) of w (each `blocks` blocks) against x: y[k] for row k.
template <size_t kRows, class LaneOps>
HWY_INLINE void Mxfp4Pass(const BlockMXFP4* HWY_RESTRICT w, size_t blocks, const ActQ8_32* HWY_RESTRICT x,
                          float* HWY_RESTRICT y) {
  const Mxfp4Consts k = LoadMxfp4Consts();
  __m256 acc[kRows];
#pragma GCC unroll 8
  for (size_t r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_ps();
  const size_t row_bytes = blocks * sizeof(BlockMXFP4);
  for (size_t i = 0; i < blocks; ++i) {
    if constexpr (kRows > 1) {
#pragma GCC unroll 8
      for (size_t r = 0; r < kRows; ++r) {
        const size_t offset = i * sizeof(BlockMXFP4) + kMxfp4PrefetchBytes;
        const uintptr_t row = reinterpret_cast<uintptr_t>(w + r * blocks);
        const uintptr_t ahead = offset < row_bytes ? row + offset : row + kRows * row_bytes + (offset - row_bytes);
        __builtin_prefetch(reinterpret_cast<const void*>(ahead), /*rw=*/0, /*locality: L2*/ 2);
      }
    }
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs));
    const __m256i correction = LaneOps::Correction(xq);
    const __m256 xd = _mm256_set1_ps(x[i].d);
#pragma GCC unroll 8
    for (size_t r = 0; r < kRows; ++r) {
      const BlockMXFP4& b = w[r * blocks + i];
      const __m256i lanes = LaneOps::Lanes(Mxfp4Biased(b, k), xq, correction);
      // Mxfp4Scale(e) * x.d: AccumulateQ8's product, rounded the same.
      const __m256 scale = _mm256_mul_ps(_mm256_broadcast_ss(&kMxfp4Scales.scale[b.e]), xd);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), scale, acc[r]);
    }
  }
#pragma GCC unroll 8
  for (size_t r = 0; r < kRows; ++r) y[r] = FinishQ8(Q8Lanes{acc[r]});
}

template <class LaneOps>
HWY_INLINE void Mxfp4DecodeRowsWith(const BlockMXFP4* w, size_t blocks, const ActQ8_32* x, float* y,
                                    size_t row_begin, size_t row_end) {
  size_t r = row_begin;
  for (; r + kMxfp4Rows <= row_end; r += kMxfp4Rows) {
    Mxfp4Pass<kMxfp4Rows, LaneOps>(w + r * blocks, blocks, x, y + r);
  }
  for (; r < row_end; ++r) Mxfp4Pass<1, LaneOps>(w + r * blocks, blocks, x, y + r);
}

#if HWY_TARGET <= HWY_AVX3
// AVX-512 VNNI (Ice Lake, Zen 4 and later) is not part of Highway 1.0's AVX3
// target, and code compiled for it here could not be inlined into this
// target's functions, so vpdpbusd is written as an instruction: it
// multiplies unsigned by signed bytes and adds each four products to an
// int32 lane, here the biased codes against x onto the negated correction.
// Mxfp4DecodeRows runs it only where the CPU reports AVX-512 VNNI.
#define EXPERTD_QUANT_MXFP4_VNNI 1
struct Mxfp4LanesVnni {
  static HWY_INLINE __m256i Correction(__m256i xq) {
    return _mm256_sub_epi32(_mm256_setzero_si256(), Mxfp4LanesAvx2::Correction(xq));
  }
  static HWY_INLINE __m256i Lanes(__m256i biased, __m256i xq, __m256i correction) {
    // AT&T order: acc += dot(biased as u8, xq as s8) per 4-byte lane. {evex}
    // (%{evex%} in GCC's asm) asks for the AVX-512 encoding, the one the
    // CPU check vouches for (AVX-VNNI's VEX form is another feature).
    asm("%{evex%} vpdpbusd %[x], %[w], %[acc]" : [acc] "+v"(correction) : [w] "v"(biased), [x] "v"(xq));
    return correction;
  }
};
#endif

void Mxfp4DecodeRows(const void* w, size_t cols, const void* xq, float* y, size_t row_begin, size_t row_end) {
  const auto* wb = static_cast<const BlockMXFP4*>(w);
  const auto* xb = static_cast<const ActQ8_32*>(xq);
  const size_t blocks = cols / 32;
#ifdef EXPERTD_QUANT_MXFP4_VNNI
  if (__builtin_cpu_supports("avx512vnni")) {
    return Mxfp4DecodeRowsWith<Mxfp4LanesVnni>(wb, blocks, xb, y, row_begin, row_end);
  }
#endif
  Mxfp4DecodeRowsWith<Mxfp4LanesAvx2>(wb, blocks, xb, y, row_begin, row_end);
}

template <bool kFifthBit, typename Block>
float DotKX86(const Block* HWY_RESTRICT w, const ActQ8_K* HWY_RESTRICT x, size_t blocks) {
  const __m256i low = _mm256_set1_epi8(0xF);
  const __m256i bit = _mm256_set1_epi8(1);
  float acc = 0;
  for (size_t i = 0; i < blocks; ++i) {
    // Q4KScaleMin for all eight sub-blocks at once, four bytes per word:
    // words 0-1 are the scales of sub-blocks 0-7, words 2-3 the mins.
    uint32_t packed[3], words[4];
    std::memcpy(packed, w[i].scales, 12);
    words[0] = packed[0] & 0x3F3F3F3Fu;
    words[2] = packed[1] & 0x3F3F3F3Fu;
    words[1] = (packed[2] & 0x0F0F0F0Fu) | ((packed[0] >> 2) & 0x30303030u);
    words[3] = ((packed[2] >> 4) & 0x0F0F0F0Fu) | ((packed[1] >> 2) & 0x30303030u);
    uint8_t sc[8], m[8];
    std::memcpy(sc, words, 8);
    std::memcpy(m, words + 2, 8);
    // sum_j m_j * (sum of x over sub-block j): the 16 per-16 sums against
    // each min twice.
    const __m256i mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(m)),
                                                                  _mm_loadl_epi64(reinterpret_cast<const __m128i*>(m))));
    const int32_t mins = HorizontalSum(
        _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].bsums)), mins16));
    __m256i qh;
    if constexpr (kFifthBit) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i].qh));
    __m256i total = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i].qs + 32 * c));
      __m256i lo = _mm256_and_si256(q, low);
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
      if constexpr (kFifthBit) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, bit), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), bit), 4));
        qh = _mm256_srli_epi16(qh, 2);
      }
      const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 64 * c));
      const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 64 * c + 32));
      total = _mm256_add_epi32(total, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_set1_epi16(sc[2 * c])));
      total = _mm256_add_epi32(total,
                               _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xhi), _mm256_set1_epi16(sc[2 * c + 1])));
    }
    const int32_t scaled = HorizontalSum(total);
    acc += (x[i].d * ScaleF32(w[i].d)) * static_cast<float>(scaled) -
           (x[i].d * ScaleF32(w[i].dmin)) * static_cast<float>(mins);
  }
  return acc;
}

// A batch of activation rows (prefill) against weight rows: each block is
// unpacked once for up to kUnpackedRowsTile activation rows. Every (row,
// activation) pair still adds its blocks' terms in block order into its own
// lanes, the same f32 steps as the MatVec kernels (DotQ4_K512, DotQ6_K512,
// DotQ4_KLanes256, DotQ6_KLanes256 run kUnpack and kAccumulate per block),
// so the values are MatVec's bit for bit. The weight row stays in L1 while
// the batch's activation blocks stream from L2.
constexpr size_t kUnpackedRowsTile = 64;

template <typename Block, typename Act, typename Unpacked, typename Lanes, void (*kUnpack)(const Block&, Unpacked*),
          void (*kAccumulate)(const Unpacked&, const Act&, Lanes&), float (*kFinish)(const Lanes&)>
void UnpackedRows(const void* w, size_t rows, size_t cols, const void* xq, size_t batch, float* y, size_t row_begin,
                  size_t row_end) {
  const size_t blocks = cols / (std::is_same_v<Act, ActQ8_32> ? 32 : 256);
  const auto* wb = static_cast<const Block*>(w);
  const auto* xb = static_cast<const Act*>(xq);
  Lanes acc[kUnpackedRowsTile];
  for (size_t r = row_begin; r < row_end; ++r) {
    for (size_t m0 = 0; m0 < batch; m0 += kUnpackedRowsTile) {
      const size_t tile = std::min(kUnpackedRowsTile, batch - m0);
      std::fill_n(acc, tile, Lanes{});
      for (size_t i = 0; i < blocks; ++i) {
        Unpacked u;
        kUnpack(wb[r * blocks + i], &u);
        for (size_t m = 0; m < tile; ++m) kAccumulate(u, xb[(m0 + m) * blocks + i], acc[m]);
      }
      for (size_t m = 0; m < tile; ++m) y[(m0 + m) * rows + r] = kFinish(acc[m]);
    }
  }
}

#if HWY_TARGET <= HWY_AVX3
// Q4_K on 64-byte vectors (AVX-512BW): two sub-blocks per pmaddubsw. A load
// of 64 code bytes holds chunks c and c + 1; their low nibbles are
// sub-blocks 2c and 2c + 2, the high ones 2c + 1 and 2c + 3, so 128-bit lane
// shuffles pair them as the activations lie ([2c | 2c + 1], 64 bytes). Each
// int16 pair sum is multiplied by its sub-block's scale (vpermw spreads the
// eight scales over the halves), the same integers as DotKX86.
#define EXPERTD_QUANT_Q4K_512 1
// One Q4_K block unpacked for pmaddubsw: the work that depends on the
// weights alone, done once per block however many activation rows meet it.
struct Q4KUnpacked {
  __m512i codes[4];   // [first, second] of half 0, then of half 1
  __m512i scales[4];  // the matching int16 scale vectors
  __m256i mins16;     // each sub-block's min, against the per-16 sums
  float d = 0, dmin = 0;
};

HWY_INLINE void UnpackQ4_K512(const BlockQ4_K& w, Q4KUnpacked* u) {
  const __m512i low = _mm512_set1_epi8(0xF);
  // Index vectors for vpermw: halves of sub-blocks (0, 1), (2, 3), (4, 5), (6, 7).
  const __m512i pick01 = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(1), 1);
  const __m512i two = _mm512_set1_epi16(2);
  const __m512i pick23 = _mm512_add_epi16(pick01, two);
  const __m512i pick45 = _mm512_add_epi16(pick23, two);
  const __m512i pick67 = _mm512_add_epi16(pick45, two);
  uint32_t packed[3], words[4];
  std::memcpy(packed, w.scales, 12);
  words[0] = packed[0] & 0x3F3F3F3Fu;
  words[2] = packed[1] & 0x3F3F3F3Fu;
  words[1] = (packed[2] & 0x0F0F0F0Fu) | ((packed[0] >> 2) & 0x30303030u);
  words[3] = ((packed[2] >> 4) & 0x0F0F0F0Fu) | ((packed[1] >> 2) & 0x30303030u);
  const __m128i sc_m = _mm_loadu_si128(reinterpret_cast<const __m128i*>(words));
  const __m512i scales = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(sc_m));  // sc[0..7] in lanes 0-7
  const __m128i m8 = _mm_srli_si128(sc_m, 8);
  u->mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
  // Unrolled (GCC's -O2 does not unroll): a variable index would keep the
  // unpacked vectors in memory instead of registers.
#pragma GCC unroll 4
  for (int half = 0; half < 2; ++half) {  // chunks 2 half and 2 half + 1
    const __m512i q = _mm512_loadu_si512(w.qs + 64 * half);
    const __m512i lo = _mm512_and_si512(q, low);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), low);
    u->codes[2 * half] = _mm512_shuffle_i64x2(lo, hi, 0x44);       // sub-blocks 4 half, 4 half + 1
    u->codes[2 * half + 1] = _mm512_shuffle_i64x2(lo, hi, 0xEE);   // 4 half + 2, 4 half + 3
    u->scales[2 * half] = _mm512_permutexvar_epi16(half == 0 ? pick01 : pick45, scales);
    u->scales[2 * half + 1] = _mm512_permutexvar_epi16(half == 0 ? pick23 : pick67, scales);
  }
  u->d = ScaleF32(w.d);
  u->dmin = ScaleF32(w.dmin);
}

// Q4_K and Q6_K on 64-byte vectors keep each block's exact integer sums in
// their vector lanes and scale them into f32 lane accumulators, one FMA per
// block and term, with a single horizontal sum per dot product at the end
// (as the Q8_0 kernels do). Two horizontal integer sums and a scalar f32
// chain per 256-element block had made the Q4_K decode kernel compute-bound
// on one core (20 tokens/s on the OLMoE-1B-7B shape, Q4_K_M, where
// llama.cpp's lane-accumulating kernel reads 25). The f32 additions are
// therefore ordered by lane rather than by block: within f32 reordering of
// DotQuantRowScalar instead of bit for bit, and the same bits for MatVec
// and the batched path (UnpackedRows), which accumulate the same way. Lane
// values stay exact in f32: a lane of the code sums adds 16 products code x
// activation x scale, at most 16 x 15 x 127 x 63 (Q4_K) or 16 x 63 x 127 x
// 128 (Q6_K) in magnitude, below 2^24.
// Value-initialise (`LaneSums512 acc{}`: zero lanes); an initialiser calling
// the intrinsics would be compiled outside this target's attributes.
struct LaneSums512 {
  __m512 codes;  // the scaled code sums, each block's times its factor
  __m256 per16;  // x's per-16 sums against the per-16 weights, likewise
};

// Adds one unpacked 256-element block's terms against an activation block:
// codes_factor x (the codes against x, each pair times its sub-block's
// scale) and per16_factor x (x's per-16 sums against `per16`: Q4_K's mins,
// Q6_K's scales for its -32).
HWY_INLINE void AccumulateBlock512(const __m512i (&codes)[4], const __m512i (&scales)[4], __m256i per16,
                                   const ActQ8_K& x, float codes_factor, float per16_factor, LaneSums512& acc) {
  __m512i total = _mm512_setzero_si512();
  // Unrolled (GCC's -O2 does not unroll): a variable index would keep the
  // unpacked vectors in memory instead of registers.
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512i xv = _mm512_loadu_si512(x.qs + 64 * c);
    total = _mm512_add_epi32(total, _mm512_madd_epi16(_mm512_maddubs_epi16(codes[c], xv), scales[c]));
  }
  const __m256i sums16 =
      _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums)), per16);
  acc.codes = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_set1_ps(codes_factor), acc.codes);
  acc.per16 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums16), _mm256_set1_ps(per16_factor), acc.per16);
}

// The dot product: the code lanes folded to eight, less the per-16 lanes,
// summed in a fixed tree.
HWY_INLINE float FinishLanes512(const LaneSums512& acc) {
  const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc.codes), 1));
  const __m256 lanes = _mm256_sub_ps(_mm256_add_ps(_mm512_castps512_ps256(acc.codes), high), acc.per16);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(lanes), _mm256_extractf128_ps(lanes, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

HWY_INLINE void AccumulateQ4_K512(const Q4KUnpacked& u, const ActQ8_K& x, LaneSums512& acc) {
  AccumulateBlock512(u.codes, u.scales, u.mins16, x, x.d * u.d, x.d * u.dmin, acc);
}

float DotQ4_K512(const BlockQ4_K* HWY_RESTRICT w, const ActQ8_K* HWY_RESTRICT x, size_t blocks) {
  LaneSums512 acc{};
  for (size_t i = 0; i < blocks; ++i) {
    Q4KUnpacked u;
    UnpackQ4_K512(w[i], &u);
    AccumulateQ4_K512(u, x[i], acc);
  }
  return FinishLanes512(acc);
}

#define EXPERTD_QUANT_Q6K_512 1
struct Q6KUnpacked {
  __m512i codes[4];   // [q01, q23] of half 0, then of half 1
  __m512i scales[4];  // the matching int16 scale vectors
  __m256i scales16;   // the 16 scales, against the per-16 sums (the -32 offset)
  float d = 0;
};

HWY_INLINE void UnpackQ6_K512(const BlockQ6_K& w, Q6KUnpacked* u) {
  const __m512i low = _mm512_set1_epi8(0xF);
  const __m512i three = _mm512_set1_epi8(3);
  const __m512i quarter = _mm512_srli_epi16(
      _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7,
                       6, 5, 4, 3, 2, 1, 0),
      3);  // lane k -> k / 8
  const __m512i four = _mm512_set1_epi16(4);
  u->scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales)));
  const __m512i scales = _mm512_castsi256_si512(u->scales16);
  // Unrolled (GCC's -O2 does not unroll): a variable index would keep the
  // unpacked vectors in memory instead of registers.
#pragma GCC unroll 4
  for (int h = 0; h < 2; ++h) {
    const __m512i l = _mm512_loadu_si512(w.ql + 64 * h);
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qh + 32 * h));
    const __m512i h01 = _mm512_inserti64x4(_mm512_castsi256_si512(hb), _mm256_srli_epi16(hb, 2), 1);
    const __m512i h23 = _mm512_srli_epi16(h01, 4);
    u->codes[2 * h] = _mm512_or_si512(_mm512_and_si512(l, low), _mm512_slli_epi16(_mm512_and_si512(h01, three), 4));
    u->codes[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low),
                                          _mm512_slli_epi16(_mm512_and_si512(h23, three), 4));
    const __m512i pick01 = _mm512_add_epi16(quarter, _mm512_set1_epi16(static_cast<int16_t>(8 * h)));
    u->scales[2 * h] = _mm512_permutexvar_epi16(pick01, scales);
    u->scales[2 * h + 1] = _mm512_permutexvar_epi16(_mm512_add_epi16(pick01, four), scales);
  }
  u->d = ScaleF32(w.d);
}

// Codes q in [0, 63] (the stored form): sum (q - 32) x = sum q x - 32 sum x,
// the -32 as the per-16 term (times 32, exact in f32).
HWY_INLINE void AccumulateQ6_K512(const Q6KUnpacked& u, const ActQ8_K& x, LaneSums512& acc) {
  const float d = x.d * u.d;
  AccumulateBlock512(u.codes, u.scales, u.scales16, x, d, 32.0f * d, acc);
}

// Q6_K on 64-byte vectors: per half h, ql's 64 bytes give the low bits of
// the quarters t = 0, 1 (low nibbles) and t = 2, 3 (high nibbles), in the
// order the activations lie; qh's 32 bytes shifted by 0, 2 and 4, 6 give
// their top bits. vpermw spreads the int8 scales, one per 8 int16 lanes
// (16 elements). The same products as DotQ6_KLanes256 (AVX2).
float DotQ6_K512(const BlockQ6_K* HWY_RESTRICT w, const ActQ8_K* HWY_RESTRICT x, size_t blocks) {
  LaneSums512 acc{};
  for (size_t i = 0; i < blocks; ++i) {
    Q6KUnpacked u;
    UnpackQ6_K512(w[i], &u);
    AccumulateQ6_K512(u, x[i], acc);
  }
  return FinishLanes512(acc);
}
#endif  // AVX-512

#if HWY_TARGET > HWY_AVX3
// Q4_K and Q6_K on AVX2 alone (AVX-512 hosts run the 64-byte kernels above):
// as there, each block's exact integer sums stay in their vector lanes and
// are scaled into f32 lane accumulators, one FMA per block and term, with a
// single horizontal sum per dot product, instead of two horizontal integer
// sums and a scalar f32 chain per block. The f32 additions are ordered by
// lane, so results are within f32 reordering of DotQuantRowScalar (not bit
// for bit); MatVec and the batched path (UnpackedRows) run the same unpack
// and accumulate steps per block, so they agree bit for bit. Lane values
// are exact in f32 (|v| <= 2^24), with activations in [-127, 127]
// (QuantizeActivationRow's range):
//   Q4_K: a lane of lo_total + hi_total adds 8 pmaddwd lanes of 2 pmaddubsw
//     pairs, 32 products code x activation x scale, at most 32 x 15 x 127 x
//     63 = 3,840,480 in magnitude.
//   Q6_K: codes up to 63 and int8 scales up to 128 in magnitude; all 32
//     products of a lane would reach 32 x 63 x 127 x 128 = 32.8 M > 2^24, so
//     each half-block (h) converts its own 16: at most 16,386,048 < 2^24.
//   per-16 terms: each lane is 2 per-16 sums (|sum| <= 16 x 127) times a
//     min (<= 63) or a scale (<= 128): at most 520,192; Q6_K's factor 32 on
//     them is a power of two, exact.
// Value-initialise (`LaneSums256 acc{}`); see LaneSums512.
struct LaneSums256 {
  __m256 codes0;  // scaled code sums (Q6_K: half 0's)
  __m256 codes1;  // Q6_K: half 1's scaled code sums; Q4_K leaves it zero
  __m256 per16;   // x's per-16 sums against the per-16 weights, scaled
};

HWY_INLINE float FinishLanes256(const LaneSums256& acc) {
  const __m256 lanes = _mm256_sub_ps(_mm256_add_ps(acc.codes0, acc.codes1), acc.per16);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(lanes), _mm256_extractf128_ps(lanes, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Sub-block j's int16 scale in every lane of `scales` (eight int16 scales,
// the same in both 128-bit halves): pshufb picks bytes 2j and 2j + 1.
HWY_INLINE __m256i SpreadScale(__m256i scales, int j) {
  return _mm256_shuffle_epi8(scales, _mm256_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * j)));
}

// One Q4_K block unpacked for pmaddubsw (see Q4KUnpacked; here 32-byte
// vectors): the weights' work, done once per block however many activation
// rows meet it. The integers of DotKX86<false> (the same pmaddubsw and
// pmaddwd), kept in lanes; pshufb spreads each sub-block's scale.
#define EXPERTD_QUANT_K_LANES256 1
struct Q4KUnpacked256 {
  __m256i codes[8];  // sub-block j's 32 codes: chunk j / 2's low (even j) or high (odd j) nibbles
  __m256i scales;    // the eight scales as int16, the same in both 128-bit halves
  __m256i mins16;    // each sub-block's min twice, against the per-16 sums
  float d = 0, dmin = 0;
};

HWY_INLINE void UnpackQ4_K256(const BlockQ4_K& w, Q4KUnpacked256* u) {
  const __m256i low = _mm256_set1_epi8(0xF);
  uint32_t packed[3];
  std::memcpy(packed, w.scales, 12);
  // Q4KScaleMin for all eight sub-blocks: bytes 0-7 the scales, 8-15 the mins.
  const __m128i sc_m = _mm_set_epi32(
      static_cast<int>(((packed[2] >> 4) & 0x0F0F0F0Fu) | ((packed[1] >> 2) & 0x30303030u)),
      static_cast<int>(packed[1] & 0x3F3F3F3Fu),
      static_cast<int>((packed[2] & 0x0F0F0F0Fu) | ((packed[0] >> 2) & 0x30303030u)),
      static_cast<int>(packed[0] & 0x3F3F3F3Fu));
  u->scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sc_m));
  const __m128i m8 = _mm_srli_si128(sc_m, 8);
  u->mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs + 32 * c));
    u->codes[2 * c] = _mm256_and_si256(q, low);
    u->codes[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
  }
  u->d = ScaleF32(w.d);
  u->dmin = ScaleF32(w.dmin);
}

HWY_INLINE void AccumulateQ4_K256(const Q4KUnpacked256& u, const ActQ8_K& x, LaneSums256& acc) {
  __m256i lo_total = _mm256_setzero_si256(), hi_total = _mm256_setzero_si256();
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs + 64 * c));
    const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs + 64 * c + 32));
    lo_total = _mm256_add_epi32(
        lo_total, _mm256_madd_epi16(_mm256_maddubs_epi16(u.codes[2 * c], xlo), SpreadScale(u.scales, 2 * c)));
    hi_total = _mm256_add_epi32(
        hi_total, _mm256_madd_epi16(_mm256_maddubs_epi16(u.codes[2 * c + 1], xhi), SpreadScale(u.scales, 2 * c + 1)));
  }
  const __m256i sums16 = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums)), u.mins16);
  acc.codes0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(lo_total, hi_total)), _mm256_set1_ps(x.d * u.d),
                               acc.codes0);
  acc.per16 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums16), _mm256_set1_ps(x.d * u.dmin), acc.per16);
}

float DotQ4_KLanes256(const BlockQ4_K* HWY_RESTRICT w, const ActQ8_K* HWY_RESTRICT x, size_t blocks) {
  LaneSums256 acc{};
  for (size_t i = 0; i < blocks; ++i) {
    Q4KUnpacked256 u;
    UnpackQ4_K256(w[i], &u);
    AccumulateQ4_K256(u, x[i], acc);
  }
  return FinishLanes256(acc);
}

// Codes q in [0, 63] (the stored form): sum (q - 32) x = sum q x - 32 sum x,
// the -32 as the per-16 term (x's per-16 sums against the scales). Per half
// h, ql's 64 bytes give the low bits of quarters t = 0, 1 (low nibbles) and
// t = 2, 3 (high nibbles), qh's 32 bytes shifted by 2t their top bits.
struct Q6KUnpacked256 {
  __m256i codes[8];  // quarter t of half h at 4h + t, in [0, 63]
  __m256i scales[2];  // half h's eight int16 scales, the same in both 128-bit halves
  __m256i scales16;   // the 16 scales as int16, against the per-16 sums
  float d = 0;
};

HWY_INLINE void UnpackQ6_K256(const BlockQ6_K& w, Q6KUnpacked256* u) {
  const __m256i low = _mm256_set1_epi8(0xF);
  const __m256i three = _mm256_set1_epi8(3);
  const __m128i scales8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales));
  u->scales16 = _mm256_cvtepi8_epi16(scales8);
  u->scales[0] = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(scales8));
  u->scales[1] = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_unpackhi_epi64(scales8, scales8)));
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    const __m256i la = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.ql + 64 * h));
    const __m256i lb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.ql + 64 * h + 32));
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qh + 32 * h));
    u->codes[4 * h] = _mm256_or_si256(_mm256_and_si256(la, low), _mm256_slli_epi16(_mm256_and_si256(hb, three), 4));
    u->codes[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(lb, low),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), three), 4));
    u->codes[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), low),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), three), 4));
    u->codes[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), low),
                                          _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), three), 4));
  }
  u->d = ScaleF32(w.d);
}

HWY_INLINE void AccumulateQ6_K256(const Q6KUnpacked256& u, const ActQ8_K& x, LaneSums256& acc) {
  __m256i totals[2];
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
    __m256i total = _mm256_setzero_si256();
#pragma GCC unroll 4
    for (int t = 0; t < 4; ++t) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs + 128 * h + 32 * t));
      // Scale 2t in the low 128 bits (elements l < 16 of the quarter), 2t + 1
      // in the high (l >= 16), as the pmaddubsw pairs lie.
      const __m256i pick = _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * (2 * t + 1))),
                                            _mm_set1_epi16(static_cast<int16_t>(0x0100 + 0x0202 * (2 * t))));
      const __m256i pairs = _mm256_maddubs_epi16(u.codes[4 * h + t], xv);
      total = _mm256_add_epi32(total, _mm256_madd_epi16(pairs, _mm256_shuffle_epi8(u.scales[h], pick)));
    }
    totals[h] = total;
  }
  const __m256i sums16 = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.bsums)), u.scales16);
  const float d = x.d * u.d;
  acc.codes0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(totals[0]), _mm256_set1_ps(d), acc.codes0);
  acc.codes1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(totals[1]), _mm256_set1_ps(d), acc.codes1);
  acc.per16 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums16), _mm256_set1_ps(32.0f * d), acc.per16);
}

float DotQ6_KLanes256(const BlockQ6_K* HWY_RESTRICT w, const ActQ8_K* HWY_RESTRICT x, size_t blocks) {
  LaneSums256 acc{};
  for (size_t i = 0; i < blocks; ++i) {
    Q6KUnpacked256 u;
    UnpackQ6_K256(w[i], &u);
    AccumulateQ6_K256(u, x[i], acc);
  }
  return FinishLanes256(acc);
}
#endif  // AVX2 without AVX-512

#endif  // x86 with AVX2

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
#ifdef EXPERTD_QUANT_X86
  constexpr auto kQ8_0 = DotQ8X86<BlockQ8_0>;
  constexpr auto kQ4_0 = DotQ8X86<BlockQ4_0>;
#ifdef EXPERTD_QUANT_Q4K_512
  constexpr auto kQ4_K = DotQ4_K512;
#else
  constexpr auto kQ4_K = DotQ4_KLanes256;
#endif
  constexpr auto kQ5_K = DotKX86<true, BlockQ5_K>;
#ifdef EXPERTD_QUANT_Q6K_512
  constexpr auto kQ6_K = DotQ6_K512;
#else
  constexpr auto kQ6_K = DotQ6_KLanes256;
#endif
#else
  constexpr auto kQ8_0 = DotQ8_0;
  constexpr auto kQ4_0 = DotQ4_0;
  constexpr auto kMXFP4 = DotMXFP4;
  constexpr auto kQ4_K = DotK<false, BlockQ4_K>;
  constexpr auto kQ5_K = DotK<true, BlockQ5_K>;
  constexpr auto kQ6_K = DotQ6_K;
#endif
  switch (dtype) {
    case DType::kQ8_0: Rows<BlockQ8_0, ActQ8_32, kQ8_0>(w, r, n, 32, xq, m, y, begin, end); return;
    case DType::kQ4_0:
#ifdef EXPERTD_QUANT_X86
      if (m > 1) {
        return UnpackedRows<BlockQ4_0, ActQ8_32, Q8Unpacked, Q8Lanes, UnpackQ8<BlockQ4_0>, AccumulateQ8, FinishQ8>(
            w, r, n, xq, m, y, begin, end);
      }
#endif
      Rows<BlockQ4_0, ActQ8_32, kQ4_0>(w, r, n, 32, xq, m, y, begin, end);
      return;
    case DType::kQ4_K:
#ifdef EXPERTD_QUANT_Q4K_512
      if (m > 1) {
        return UnpackedRows<BlockQ4_K, ActQ8_K, Q4KUnpacked, LaneSums512, UnpackQ4_K512, AccumulateQ4_K512, FinishLanes512>(
            w, r, n, xq, m, y, begin, end);
      }
#elif defined(EXPERTD_QUANT_K_LANES256)
      if (m > 1) {
        return UnpackedRows<BlockQ4_K, ActQ8_K, Q4KUnpacked256, LaneSums256, UnpackQ4_K256, AccumulateQ4_K256, FinishLanes256>(
            w, r, n, xq, m, y, begin, end);
      }
#endif
      Rows<BlockQ4_K, ActQ8_K, kQ4_K>(w, r, n, 256, xq, m, y, begin, end);
      return;
    case DType::kQ5_K: Rows<BlockQ5_K, ActQ8_K, kQ5_K>(w, r, n, 256, xq, m, y, begin, end); return;
    case DType::kQ6_K:
#ifdef EXPERTD_QUANT_Q6K_512
      if (m > 1) {
        return UnpackedRows<BlockQ6_K, ActQ8_K, Q6KUnpacked, LaneSums512, UnpackQ6_K512, AccumulateQ6_K512, FinishLanes512>(
            w, r, n, xq, m, y, begin, end);
      }
#elif defined(EXPERTD_QUANT_K_LANES256)
      if (m > 1) {
        return UnpackedRows<BlockQ6_K, ActQ8_K, Q6KUnpacked256, LaneSums256, UnpackQ6_K256, AccumulateQ6_K256, FinishLanes256>(
            w, r, n, xq, m, y, begin, end);
      }
#endif
      Rows<BlockQ6_K, ActQ8_K, kQ6_K>(w, r, n, 256, xq, m, y, begin, end);
      return;
    case DType::kMXFP4:
#ifdef EXPERTD_QUANT_X86
      if (m > 1) {
        return UnpackedRows<BlockMXFP4, ActQ8_32, Q8Unpacked, Q8Lanes, UnpackQ8<BlockMXFP4>, AccumulateQ8, FinishQ8>(
            w, r, n, xq, m, y, begin, end);
      }
#endif
#ifdef EXPERTD_QUANT_X86
      return Mxfp4DecodeRows(w, n, xq, y, begin, end);  // m == 1
#else
      Rows<BlockMXFP4, ActQ8_32, kMXFP4>(w, r, n, 32, xq, m, y, begin, end);
      return;
#endif
    case DType::kF32:
    case DType::kBF16:
    case DType::kF16:
      return;  // MatMul runs float weights itself
  }
}

#undef EXPERTD_QUANT_X86
#undef EXPERTD_QUANT_Q4K_512
#undef EXPERTD_QUANT_Q6K_512
#undef EXPERTD_QUANT_K_LANES256
#undef EXPERTD_QUANT_MXFP4_VNNI

// QuantizeActivationRow's bytes exactly: the maximum is order-independent,
// d and 1 / d are the same scalar steps, x * (1 / d) the same product, and
// NearestInt rounds to nearest even like the scalar code (|x / d| <= 127.5).
HWY_INLINE float QuantizeBlockQ8(const float* HWY_RESTRICT x, size_t count, int8_t* HWY_RESTRICT q) {
  const hn::CappedTag<float, 16> df;
  const hn::RebindToSigned<decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> d8;
  const size_t n = hn::Lanes(df);
  auto amax = hn::Zero(df);
  for (size_t k = 0; k < count; k += n) amax = hn::Max(amax, hn::Abs(hn::LoadU(df, x + k)));
  const float d = hn::GetLane(hn::MaxOfLanes(df, amax)) / 127.0f;
  const auto id = hn::Set(df, d > 0 ? 1.0f / d : 0.0f);
  const auto lo = hn::Set(di, -127), hi = hn::Set(di, 127);
  for (size_t k = 0; k < count; k += n) {
    const auto i = hn::Min(hn::Max(hn::NearestInt(hn::Mul(hn::LoadU(df, x + k), id)), lo), hi);
    hn::StoreU(hn::DemoteTo(d8, i), d8, q + k);
  }
  return d;
}

void QuantizeActivations(DType dtype, const float* x, int64_t cols, int64_t batch, void* out) {
  const auto n = static_cast<size_t>(cols);
  for (int64_t m = 0; m < batch; ++m, x += cols) {
    if (dtype == DType::kQ8_0 || dtype == DType::kQ4_0 || dtype == DType::kMXFP4) {
      auto* blocks = static_cast<ActQ8_32*>(out) + static_cast<size_t>(m) * (n / 32);
      for (size_t i = 0; i < n / 32; ++i) blocks[i].d = QuantizeBlockQ8(x + 32 * i, 32, blocks[i].qs);
    } else if (DTypeIsQuantized(dtype)) {
      auto* blocks = static_cast<ActQ8_K*>(out) + static_cast<size_t>(m) * (n / 256);
      for (size_t i = 0; i < n / 256; ++i) {
        blocks[i].d = QuantizeBlockQ8(x + 256 * i, 256, blocks[i].qs);
        for (int g = 0; g < 16; ++g) {
          int sum = 0;
          for (int l = 0; l < 16; ++l) sum += blocks[i].qs[16 * g + l];
          blocks[i].bsums[g] = static_cast<int16_t>(sum);
        }
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace expertd::kernels::internal
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace expertd::kernels::internal {

HWY_EXPORT(QuantRows);
HWY_EXPORT(QuantizeActivations);

void QuantizeActivationRows(DType dtype, const float* x, int64_t cols, int64_t batch, void* out) {
  HWY_DYNAMIC_DISPATCH(QuantizeActivations)(dtype, x, cols, batch, out);
}

void QuantMatMulRows(DType dtype, const void* w, int64_t rows, int64_t cols, const void* xq, int64_t batch,
                     float* y, int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(QuantRows)(dtype, w, rows, cols, xq, batch, y, row_begin, row_end);
}

}  // namespace expertd::kernels::internal
#endif  // HWY_ONCE
