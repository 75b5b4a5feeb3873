#include "kernels/cpu/bf16_dot.h"

// GCC 12's AVX-512 headers fill "don't care" operands with a
// self-initialised variable, which -Wuninitialized reports inside the
// headers (GCC PR 105593, fixed in GCC 13); Highway's own code turns the
// same warning off around them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <cstddef>
#include <cstdint>

namespace expertd::kernels::internal {
namespace {

#define EXPERTD_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

constexpr size_t kStep = 32;  // bf16 elements per 512-bit vector

// Columns [c, c + count) of a bf16 row, the rest of the vector zero: the
// partial last step reads nothing past the row.
EXPERTD_BF16_TARGET inline __m512bh LoadStep(const uint16_t* row, size_t c, size_t count) {
  if (count == kStep) return reinterpret_cast<__m512bh>(_mm512_loadu_si512(row + c));
  const __mmask32 mask = static_cast<__mmask32>((uint64_t{1} << count) - 1);
  return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, row + c));
}

// The sum of v's 16 lanes in a fixed order: halves, quarters, pairs, lanes,
// all in 512-bit registers.
EXPERTD_BF16_TARGET inline float SumOfLanes(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));  // 256-bit halves swapped
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0xB1));  // 128-bit quarters swapped
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4E));        // pairs within each quarter
  v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));        // neighbours
  return _mm512_cvtss_f32(v);
}

// y[r * y_row_stride + b * y_batch_stride] = dot(w row r, x row b) for
// r < kRows, b < kBatch. Every (r, b) has its own accumulator, fed in
// column order, so the tile shape never changes a value.
template <size_t kRows, size_t kBatch>
EXPERTD_BF16_TARGET inline void DotTile(const uint16_t* w, size_t cols, const uint16_t* x, float* y,
                                        size_t y_row_stride, size_t y_batch_stride) {
  __m512 acc[kRows][kBatch];
#pragma GCC unroll 16
  for (size_t r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
    for (size_t b = 0; b < kBatch; ++b) acc[r][b] = _mm512_setzero_ps();
  }
  // Several rows are several streams a row apart, which the hardware
  // prefetcher follows badly: each row's line 2 KiB ahead goes to L2, as in
  // matmul.cc's f32 tiles (measured there).
  constexpr size_t kPrefetchBytes = kRows == 1 ? 0 : 2048;
  for (size_t c = 0; c < cols; c += kStep) {
    const size_t count = cols - c < kStep ? cols - c : kStep;
    if constexpr (kPrefetchBytes > 0) {
#pragma GCC unroll 16
      for (size_t r = 0; r < kRows; ++r) {
        // Past the end of the row: the same offset in the next tile's row,
        // where this thread reads next (via uintptr_t: it may lie past the
        // matrix, fine for a prefetch but not for pointer arithmetic).
        const size_t offset = c * sizeof(uint16_t) + kPrefetchBytes;
        const size_t row_bytes = cols * sizeof(uint16_t);
        const uintptr_t row = reinterpret_cast<uintptr_t>(w + r * cols);
        const uintptr_t ahead = offset < row_bytes ? row + offset : row + kRows * row_bytes + (offset - row_bytes);
        __builtin_prefetch(reinterpret_cast<const void*>(ahead), /*rw=*/0, /*locality: L2*/ 2);
      }
    }
    __m512bh xv[kBatch];
#pragma GCC unroll 16
    for (size_t b = 0; b < kBatch; ++b) xv[b] = LoadStep(x + b * cols, c, count);
#pragma GCC unroll 16
    for (size_t r = 0; r < kRows; ++r) {
      const __m512bh wv = LoadStep(w + r * cols, c, count);
#pragma GCC unroll 16
      for (size_t b = 0; b < kBatch; ++b) acc[r][b] = _mm512_dpbf16_ps(acc[r][b], wv, xv[b]);
    }
  }
#pragma GCC unroll 16
  for (size_t r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
    for (size_t b = 0; b < kBatch; ++b) y[r * y_row_stride + b * y_batch_stride] = SumOfLanes(acc[r][b]);
  }
}

// Rows per tile; with four x rows per tile that is 16 accumulators, and
// with their 8 operands 24 of the 32 vector registers.
constexpr size_t kTileRows = 4;
constexpr size_t kTileBatch = 4;

// One block of kRows weight rows against every x row, four at a time.
template <size_t kRows>
EXPERTD_BF16_TARGET inline void RowsAgainstBatch(const uint16_t* w, size_t rows, size_t cols, const uint16_t* x,
                                                 size_t batch, float* y) {
  size_t m = 0;
  for (; m + kTileBatch <= batch; m += kTileBatch) DotTile<kRows, kTileBatch>(w, cols, x + m * cols, y + m * rows, 1, rows);
  switch (batch - m) {
    case 3:
      DotTile<kRows, 3>(w, cols, x + m * cols, y + m * rows, 1, rows);
      break;
    case 2:
      DotTile<kRows, 2>(w, cols, x + m * cols, y + m * rows, 1, rows);
      break;
    case 1:
      DotTile<kRows, 1>(w, cols, x + m * cols, y + m * rows, 1, rows);
      break;
    default:
      break;
  }
}

}  // namespace

bool HaveBf16Dot() { return __builtin_cpu_supports("avx512bf16"); }

EXPERTD_BF16_TARGET void RoundToBf16(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(out + i, reinterpret_cast<__m512i>(v));
  }
  if (i < n) {
    const auto left = static_cast<unsigned>(n - i);
    const __mmask16 lo = static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1u << left) - 1);
    const __mmask16 hi = static_cast<__mmask16>(left <= 16 ? 0 : (1u << (left - 16)) - 1);
    const __m512bh v =
        _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, x + i + 16), _mm512_maskz_loadu_ps(lo, x + i));
    _mm512_mask_storeu_epi16(out + i, static_cast<__mmask32>((uint64_t{1} << left) - 1),
                             reinterpret_cast<__m512i>(v));
  }
}

EXPERTD_BF16_TARGET void Bf16DotRows(const uint16_t* w, int64_t rows, int64_t cols, const uint16_t* xb,
                                     int64_t batch, float* y, int64_t row_begin, int64_t row_end) {
  const auto n = static_cast<size_t>(rows);
  const auto k = static_cast<size_t>(cols);
  const auto m = static_cast<size_t>(batch);
  auto r = static_cast<size_t>(row_begin);
  const auto end = static_cast<size_t>(row_end);
  // One x whose bf16 row fits in L1 (decode, 8192 columns or fewer): one
  // weight row at a time, a single sequential stream the hardware
  // prefetcher runs ahead of by itself, as matmul.cc's MatVecRowsT does for
  // f32 x (measured there: 1.0 of plain reads against 0.85-0.95 in 4-row
  // tiles). Wider rows, and batches, share each x load across 4-row tiles.
  constexpr size_t kL1ResidentXBytes = 16 * 1024;
  if (m > 1 || k * sizeof(uint16_t) > kL1ResidentXBytes) {
    for (; r + kTileRows <= end; r += kTileRows) RowsAgainstBatch<kTileRows>(w + r * k, n, k, xb, m, y + r);
  }
  for (; r < end; ++r) RowsAgainstBatch<1>(w + r * k, n, k, xb, m, y + r);
}

}  // namespace expertd::kernels::internal
