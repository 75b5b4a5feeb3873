// Weight-streaming matrix-vector kernels.
//
// Every output element y[m][r] is produced by one canonical reduction,
// DotTile's: a single vector accumulator per (row, x) pair fed with the full
// vectors of the row in column order, then the last partial vector from
// zero-padded copies, then SumOfLanes. Every tile shape (four weight rows
// against one x in MatVec, four rows against four x in MatMul, and the
// smaller edge tiles) runs exactly that sequence of vector operations for
// each pair, with no scalar arithmetic the compiler could contract
// differently per instantiation. So MatMul and MatVec agree bit for bit, and
// the split of rows over threads cannot change any value.
//
// The parallelism that hides FMA latency comes from the pairs in a tile
// rather than from several accumulators per pair: a 4x4 MatMul tile then
// fits in 16 registers and each load of x feeds four rows, which doubled
// batch-8 throughput against four accumulators per pair (same MatVec speed,
// which is bound by memory either way).

#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <vector>

#include "kernels/cpu/bf16_dot.h"
#include "kernels/cpu/dtype.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/quant_matmul.h"
#include "kernels/cpu/thread_pool.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/matmul.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace expertd::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <typename WeightT, class DF>
HWY_INLINE hn::Vec<DF> LoadWeights(DF df, const WeightT* HWY_RESTRICT p) {
  if constexpr (std::is_same_v<WeightT, float>) {
    return hn::LoadU(df, p);
  } else {
    // bf16 and f16 widen exactly to f32 (a shift, or F16C's vcvtph2ps).
    const hn::Rebind<WeightT, DF> dw;
    return hn::PromoteTo(df, hn::LoadU(dw, p));
  }
}

// y[r * y_row_stride + b * y_batch_stride] = dot(w row r, x row b) for
// r < kRows, b < kBatch. Strides are in elements.
template <size_t kRows, size_t kBatch, typename WeightT>
HWY_INLINE void DotTile(const WeightT* HWY_RESTRICT w, size_t w_stride,
                        const float* HWY_RESTRICT x, size_t x_stride, size_t cols,
                        float* HWY_RESTRICT y, size_t y_row_stride, size_t y_batch_stride) {
  const hn::ScalableTag<float> df;
  using V = hn::Vec<decltype(df)>;
  const size_t lanes = hn::Lanes(df);

  V acc[kRows][kBatch];
#pragma GCC unroll 16
  for (size_t r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
    for (size_t b = 0; b < kBatch; ++b) acc[r][b] = hn::Zero(df);
  }

  // Main loop: one 64-byte cache line of each weight row per step. Tiles of
  // several rows read several streams a row apart, which the hardware
  // prefetcher follows badly, so they prefetch each row's line 2 KiB ahead
  // into L2 (not L1: with four streams, L1 prefetches evicted lines before
  // use; on one thread of an AMD EPYC Zen 4 host, 4-row tiles of expert
  // matrices streamed at 0.47 of plain reads with L1 prefetches, 0.85-0.95
  // with L2 ones). Vectors still enter each accumulator in column order, so
  // the reduction is the same as the one-vector loop below.
  constexpr size_t kLineBytes = 64;
  // A single row is one sequential stream, which the hardware prefetcher
  // follows on its own; software prefetches there only cost (see MatVecRowsT).
  constexpr size_t kPrefetchBytes = kRows == 1 ? 0 : 2048;
  constexpr size_t kMaxLanes = hn::MaxLanes(decltype(df)());
  constexpr size_t kVectorsPerLine =
      std::max<size_t>(1, kLineBytes / (kMaxLanes * sizeof(WeightT)));
  const size_t row_bytes = cols * sizeof(WeightT);
  const size_t stride_bytes = w_stride * sizeof(WeightT);
  size_t c = 0;
  if (lanes == kMaxLanes) {
    for (; c + kVectorsPerLine * lanes <= cols; c += kVectorsPerLine * lanes) {
#pragma GCC unroll 16
      for (size_t r = 0; r < (kPrefetchBytes > 0 ? kRows : 0); ++r) {
        // Each row's stream continues in the same row of the next tile (the
        // row kRows further on), where this thread reads next: prefetching
        // straight past the end of a row would land in the next row of this
        // tile, which is being read already, and leave the next tile cold.
        // Via uintptr_t: the address may lie past the matrix, which is fine
        // for a prefetch but not for pointer arithmetic.
        const size_t offset = (c * sizeof(WeightT)) + kPrefetchBytes;
        const uintptr_t row = reinterpret_cast<uintptr_t>(w + r * w_stride);
        const uintptr_t ahead = offset < row_bytes ? row + offset : row + kRows * stride_bytes + (offset - row_bytes);
        __builtin_prefetch(reinterpret_cast<const void*>(ahead), /*rw=*/0, /*locality: L2*/ 2);
      }
#pragma GCC unroll 16
      for (size_t u = 0; u < kVectorsPerLine; ++u) {
        V xv[kBatch];
#pragma GCC unroll 16
        for (size_t b = 0; b < kBatch; ++b) xv[b] = hn::LoadU(df, x + b * x_stride + c + u * lanes);
#pragma GCC unroll 16
        for (size_t r = 0; r < kRows; ++r) {
          const V wv = LoadWeights(df, w + r * w_stride + c + u * lanes);
#pragma GCC unroll 16
          for (size_t b = 0; b < kBatch; ++b) acc[r][b] = hn::MulAdd(wv, xv[b], acc[r][b]);
        }
      }
    }
  }
  for (; c + lanes <= cols; c += lanes) {
    V xv[kBatch];
#pragma GCC unroll 16
    for (size_t b = 0; b < kBatch; ++b) xv[b] = hn::LoadU(df, x + b * x_stride + c);
#pragma GCC unroll 16
    for (size_t r = 0; r < kRows; ++r) {
      const V wv = LoadWeights(df, w + r * w_stride + c);
#pragma GCC unroll 16
      for (size_t b = 0; b < kBatch; ++b) acc[r][b] = hn::MulAdd(wv, xv[b], acc[r][b]);
    }
  }
  if (c < cols) {
    // The partial last vector goes through zero-padded copies rather than a
    // scalar loop: reading past the row is not allowed, and vector FMAs keep
    // the reduction identical across tile shapes (see the file comment).
    const size_t remaining = cols - c;
    HWY_ALIGN float x_tail[kBatch][kMaxLanes] = {};
#pragma GCC unroll 16
    for (size_t b = 0; b < kBatch; ++b) {
      std::memcpy(x_tail[b], x + b * x_stride + c, remaining * sizeof(float));
    }
#pragma GCC unroll 16
    for (size_t r = 0; r < kRows; ++r) {
      HWY_ALIGN WeightT w_tail[kMaxLanes] = {};
      std::memcpy(w_tail, w + r * w_stride + c, remaining * sizeof(WeightT));
      const V wv = LoadWeights(df, w_tail);
#pragma GCC unroll 16
      for (size_t b = 0; b < kBatch; ++b) {
        acc[r][b] = hn::MulAdd(wv, hn::Load(df, x_tail[b]), acc[r][b]);
      }
    }
  }

#pragma GCC unroll 16
  for (size_t r = 0; r < kRows; ++r) {
#pragma GCC unroll 16
    for (size_t b = 0; b < kBatch; ++b) {
      y[r * y_row_stride + b * y_batch_stride] = hn::GetLane(hn::SumOfLanes(df, acc[r][b]));
    }
  }
}

// x at most this large stays in L1 while a row streams past it.
constexpr size_t kL1ResidentXBytes = 16 * 1024;

// When x fits in L1, one row at a time: the weights are then read in memory
// order, a single sequential stream the hardware prefetcher runs ahead of by
// itself. On one thread of an AMD EPYC (Zen 4) host, expert-shaped bf16
// matrices (1024x2048) streamed at 1.0 of plain reads this way, against
// 0.4-0.5 in 4-row tiles with L1 prefetches and 0.6-0.95 with L2 ones.
// Wider rows (Mixtral's down projection, 14336 columns) reload x from L2 for
// every row, which halves the speed of single rows (0.4 of plain reads), so
// there four rows share each load of x (0.85-0.95 with L2 prefetches).
template <typename WeightT>
void MatVecRowsT(const WeightT* HWY_RESTRICT w, size_t cols, const float* HWY_RESTRICT x,
                 float* HWY_RESTRICT y, size_t row_begin, size_t row_end) {
  size_t r = row_begin;
  if (cols * sizeof(float) > kL1ResidentXBytes) {
    for (; r + 4 <= row_end; r += 4) DotTile<4, 1>(w + r * cols, cols, x, 0, cols, y + r, 1, 0);
  }
  for (; r < row_end; ++r) DotTile<1, 1>(w + r * cols, cols, x, 0, cols, y + r, 1, 0);
}

// Weight rows per MatMul tile; with four x per tile that is 16 accumulators.
constexpr size_t kMatMulRows = 4;

// Runs DotTile<kRows, b> for the leftover batch size b in [1, 4).
template <size_t kRows, typename WeightT>
HWY_INLINE void DotTileBatchTail(size_t batch_left, const WeightT* HWY_RESTRICT w, size_t cols,
                                 const float* HWY_RESTRICT x, float* HWY_RESTRICT y,
                                 size_t rows) {
  switch (batch_left) {
    case 3:
      DotTile<kRows, 3>(w, cols, x, cols, cols, y, 1, rows);
      break;
    case 2:
      DotTile<kRows, 2>(w, cols, x, cols, cols, y, 1, rows);
      break;
    case 1:
      DotTile<kRows, 1>(w, cols, x, cols, cols, y, 1, rows);
      break;
    default:
      break;
  }
}

// Blocks of kMatMulRows weight rows against every x in tiles of up to four:
// each weight row comes from memory once and later batch tiles re-read it
// from cache, while each x vector load feeds several rows.
template <typename WeightT>
void MatMulRowsT(const WeightT* HWY_RESTRICT w, size_t rows, size_t cols,
                 const float* HWY_RESTRICT x, size_t batch, float* HWY_RESTRICT y,
                 size_t row_begin, size_t row_end) {
  size_t r = row_begin;
  for (; r + kMatMulRows <= row_end; r += kMatMulRows) {
    size_t m = 0;
    for (; m + 4 <= batch; m += 4) {
      DotTile<kMatMulRows, 4>(w + r * cols, cols, x + m * cols, cols, cols, y + m * rows + r, 1,
                              rows);
    }
    DotTileBatchTail<kMatMulRows>(batch - m, w + r * cols, cols, x + m * cols, y + m * rows + r,
                                  rows);
  }
  for (; r < row_end; ++r) {
    size_t m = 0;
    for (; m + 4 <= batch; m += 4) {
      DotTile<1, 4>(w + r * cols, cols, x + m * cols, cols, cols, y + m * rows + r, 1, rows);
    }
    DotTileBatchTail<1>(batch - m, w + r * cols, cols, x + m * cols, y + m * rows + r, rows);
  }
}

void MatVecRows(DType dtype, const void* data, int64_t cols, const float* x, float* y,
                int64_t row_begin, int64_t row_end) {
  const auto n = static_cast<size_t>(cols);
  const auto begin = static_cast<size_t>(row_begin);
  const auto end = static_cast<size_t>(row_end);
  switch (dtype) {
    case DType::kF32:
      MatVecRowsT(static_cast<const float*>(data), n, x, y, begin, end);
      return;
    case DType::kBF16:
      MatVecRowsT(static_cast<const hwy::bfloat16_t*>(data), n, x, y, begin, end);
      return;
    case DType::kF16:
      MatVecRowsT(static_cast<const hwy::float16_t*>(data), n, x, y, begin, end);
      return;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
    case DType::kMXFP4:
      return;  // quantised weights go through internal::QuantMatMulRows
  }
}

void MatMulRows(DType dtype, const void* data, int64_t rows, int64_t cols, const float* x,
                int64_t batch, float* y, int64_t row_begin, int64_t row_end) {
  const auto r = static_cast<size_t>(rows);
  const auto n = static_cast<size_t>(cols);
  const auto m = static_cast<size_t>(batch);
  const auto begin = static_cast<size_t>(row_begin);
  const auto end = static_cast<size_t>(row_end);
  switch (dtype) {
    case DType::kF32:
      MatMulRowsT(static_cast<const float*>(data), r, n, x, m, y, begin, end);
      return;
    case DType::kBF16:
      MatMulRowsT(static_cast<const hwy::bfloat16_t*>(data), r, n, x, m, y, begin, end);
      return;
    case DType::kF16:
      MatMulRowsT(static_cast<const hwy::float16_t*>(data), r, n, x, m, y, begin, end);
      return;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
    case DType::kMXFP4:
      return;  // quantised weights go through internal::QuantMatMulRows
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace expertd::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace expertd::kernels {
namespace {

HWY_EXPORT(MatVecRows);
HWY_EXPORT(MatMulRows);

// A chunk should stream at least this much weight data: waking a worker and
// handing it a range costs a few microseconds, which is about 64 KiB of reads.
constexpr int64_t kMinChunkBytes = 64 * 1024;

struct Job {
  const WeightMatrix* w;
  const float* x;
  int64_t batch;
  float* y;
};

int64_t MinChunkRows(const WeightMatrix& w) {
  const int64_t row_bytes = std::max<int64_t>(1, DTypeBytes(w.dtype, w.cols));
  const int64_t rows = std::max<int64_t>(1, kMinChunkBytes / row_bytes);
  return (rows + 3) / 4 * 4;  // whole 4-row tiles in MatVec
}

// Quantised weights (and bf16 weights with bf16_activations): the
// activation rows are quantised to 8 bits (rounded to bf16) once per
// call, on the calling thread, into this thread's scratch (MatVec's
// signature has no scratch argument, and the engine must not allocate per
// token: the buffers grow to the largest call and stay). Workers of a
// parallel call only read the caller's buffer, which outlives ParallelFor.
//
// The scratch also remembers the f32 rows it last quantised: a MoE layer
// calls MatMulRowRange for gate and up of every expert with the same x
// (in decode, every expert), and quantising a 2048-row again costs ~12% of
// the row range's dot products while comparing it costs a memcmp. The bytes
// are compared exactly, so a hit returns what quantising would; large
// batches (prefill) are not remembered, as comparing would cost as much.
struct ActivationScratch {
  std::vector<float> input;  // the rows last converted, when small enough
  DType form = DType::kF32;  // what they were converted to
  int64_t cols = 0;
  std::vector<std::byte> converted;
};

// x [batch][cols] in `form` (a quantised activation form, or kBF16 for
// bf16_activations), converted by `convert` into this thread's scratch
// unless it holds these very rows in that form already.
template <typename Convert>
const void* ConvertActivations(DType form, int64_t cols, const float* x, int64_t batch, size_t bytes,
                               const Convert& convert) {
  constexpr int64_t kMaxRememberedElements = 16384;
  thread_local ActivationScratch scratch;
  const int64_t elements = cols * batch;
  const auto input_bytes = static_cast<size_t>(elements) * sizeof(float);
  if (scratch.form == form && scratch.cols == cols && scratch.input.size() == static_cast<size_t>(elements) &&
      std::memcmp(scratch.input.data(), x, input_bytes) == 0) {
    return scratch.converted.data();
  }
  if (scratch.converted.size() < bytes) scratch.converted.resize(bytes);
  convert(scratch.converted.data());
  if (elements <= kMaxRememberedElements) {
    scratch.input.assign(x, x + elements);
    scratch.form = form;
    scratch.cols = cols;
  } else {
    scratch.input.clear();
    scratch.form = DType::kF32;
  }
  return scratch.converted.data();
}

const void* QuantizeActivations(const WeightMatrix& w, const float* x, int64_t batch) {
  // Q8_0 and Q4_0 share their activation form, as do the K-quants.
  const DType form = DTypeBlockElements(w.dtype) == 32 ? DType::kQ8_0 : DType::kQ4_K;
  const auto bytes = static_cast<size_t>(ActivationRowBytes(w.dtype, w.cols) * batch);
  return ConvertActivations(form, w.cols, x, batch, bytes, [&](std::byte* out) {
    internal::QuantizeActivationRows(w.dtype, x, w.cols, batch, out);
  });
}

// bf16 weights with bf16_activations on a CPU that has AVX-512 BF16
// (elsewhere the flag is ignored: x stays f32).
bool UsesBf16Dot(const WeightMatrix& w) {
  return w.bf16_activations && w.dtype == DType::kBF16 && internal::HaveBf16Dot();
}

const uint16_t* RoundActivations(const WeightMatrix& w, const float* x, int64_t batch) {
  const auto bytes = static_cast<size_t>(w.cols * batch) * sizeof(uint16_t);
  return static_cast<const uint16_t*>(ConvertActivations(DType::kBF16, w.cols, x, batch, bytes, [&](std::byte* out) {
    internal::RoundToBf16(x, w.cols * batch, reinterpret_cast<uint16_t*>(out));
  }));
}

// Rows [begin, end) of a matrix whose x was converted first (xc: quantised
// blocks, or bf16 rows).
using ConvertedRows = void (*)(const WeightMatrix& w, const void* xc, int64_t batch, float* y, int64_t begin,
                               int64_t end);

void QuantRowsOf(const WeightMatrix& w, const void* xq, int64_t batch, float* y, int64_t begin, int64_t end) {
  internal::QuantMatMulRows(w.dtype, w.data, w.rows, w.cols, xq, batch, y, begin, end);
}

void Bf16RowsOf(const WeightMatrix& w, const void* xb, int64_t batch, float* y, int64_t begin, int64_t end) {
  internal::Bf16DotRows(static_cast<const uint16_t*>(w.data), w.rows, w.cols, static_cast<const uint16_t*>(xb), batch,
                        y, begin, end);
}

struct ConvertedJob {
  const WeightMatrix* w;
  const void* xc;
  int64_t batch;
  float* y;
  ConvertedRows rows;
};

// x converted once on the calling thread, then every row, split over the pool.
void RunConverted(const WeightMatrix& w, const void* xc, int64_t batch, float* y, ThreadPool* pool,
                  ConvertedRows rows) {
  if (pool == nullptr) {
    rows(w, xc, batch, y, 0, w.rows);
    return;
  }
  const ConvertedJob job{&w, xc, batch, y, rows};
  pool->ParallelFor(w.rows, MinChunkRows(w), [job = &job](int64_t begin, int64_t end) {
    job->rows(*job->w, job->xc, job->batch, job->y, begin, end);
  });
}

}  // namespace

bool Bf16ActivationsSupported() { return internal::HaveBf16Dot(); }

void MatVec(const WeightMatrix& w, const float* x, float* y, ThreadPool* pool) {
  if (w.rows <= 0) return;
  if (DTypeIsQuantized(w.dtype)) {
    RunConverted(w, QuantizeActivations(w, x, 1), 1, y, pool, QuantRowsOf);
    return;
  }
  if (UsesBf16Dot(w)) {
    RunConverted(w, RoundActivations(w, x, 1), 1, y, pool, Bf16RowsOf);
    return;
  }
  if (pool == nullptr) {
    HWY_DYNAMIC_DISPATCH(MatVecRows)(w.dtype, w.data, w.cols, x, y, 0, w.rows);
    return;
  }
  // The lambda captures one pointer so std::function stores it inline
  // instead of allocating on every call.
  const Job job{&w, x, 1, y};
  pool->ParallelFor(w.rows, MinChunkRows(w), [job = &job](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(MatVecRows)(job->w->dtype, job->w->data, job->w->cols, job->x, job->y,
                                     begin, end);
  });
}

void MatMul(const WeightMatrix& w, const float* x, int64_t batch, float* y, ThreadPool* pool) {
  if (w.rows <= 0 || batch <= 0) return;
  if (DTypeIsQuantized(w.dtype)) {
    RunConverted(w, QuantizeActivations(w, x, batch), batch, y, pool, QuantRowsOf);
    return;
  }
  if (UsesBf16Dot(w)) {
    RunConverted(w, RoundActivations(w, x, batch), batch, y, pool, Bf16RowsOf);
    return;
  }
  if (batch == 1) {
    // The 4-row MatVec tiles read x once per four rows; same values either way.
    MatVec(w, x, y, pool);
    return;
  }
  if (pool == nullptr) {
    HWY_DYNAMIC_DISPATCH(MatMulRows)(w.dtype, w.data, w.rows, w.cols, x, batch, y, 0, w.rows);
    return;
  }
  const Job job{&w, x, batch, y};
  pool->ParallelFor(w.rows, MinChunkRows(w), [job = &job](int64_t begin, int64_t end) {
    HWY_DYNAMIC_DISPATCH(MatMulRows)(job->w->dtype, job->w->data, job->w->rows, job->w->cols,
                                     job->x, job->batch, job->y, begin, end);
  });
}

void MatMulRowRange(const WeightMatrix& w, const float* x, int64_t batch, float* y, int64_t row_begin,
                    int64_t row_end) {
  if (row_begin >= row_end || batch <= 0) return;
  if (DTypeIsQuantized(w.dtype)) {
    // Each call quantises x again: the same bytes every time, so any split
    // of rows still gives MatMul's values.
    QuantRowsOf(w, QuantizeActivations(w, x, batch), batch, y, row_begin, row_end);
    return;
  }
  if (UsesBf16Dot(w)) {
    // Rounding x is the same every call, as for quantised weights.
    Bf16RowsOf(w, RoundActivations(w, x, batch), batch, y, row_begin, row_end);
    return;
  }
  if (batch == 1) {
    HWY_DYNAMIC_DISPATCH(MatVecRows)(w.dtype, w.data, w.cols, x, y, row_begin, row_end);
  } else {
    HWY_DYNAMIC_DISPATCH(MatMulRows)(w.dtype, w.data, w.rows, w.cols, x, batch, y, row_begin, row_end);
  }
}

}  // namespace expertd::kernels
#endif  // HWY_ONCE
