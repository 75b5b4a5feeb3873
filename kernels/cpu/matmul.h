#ifndef EXPERTD_KERNELS_CPU_MATMUL_H_
#define EXPERTD_KERNELS_CPU_MATMUL_H_

#include <cstdint>

#include "kernels/cpu/dtype.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::kernels {

// A row-major weight matrix [rows][cols] in its storage dtype, not owned
// (it points into the model's weight memory or an expert cache slot).
// y = W x, so rows is the output size and cols the input size.
struct WeightMatrix {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  // bf16 weights only: multiply them with x rounded to bf16 (to nearest
  // even), two bf16 products per lane and instruction, on CPUs with AVX-512
  // BF16 (kernels/cpu/bf16_dot.h: prefill on wide experts ~1.7x faster);
  // elsewhere, and for other dtypes, ignored. Off: x stays f32 and every
  // product is exact. Either way a batched call equals single calls bit for
  // bit and no split of rows changes a value.
  bool bf16_activations = false;

  // A row is whole blocks of its dtype.
  int64_t size_bytes() const { return rows * DTypeBytes(dtype, cols); }
};

// Whether WeightMatrix::bf16_activations takes effect on this CPU (it has
// AVX-512 BF16).
bool Bf16ActivationsSupported();

// y[r] = sum_c W[r][c] * x[c], accumulated in f32. pool may be null.
// Quantised weights (base/dtype.h) are read straight from their blocks: x is
// rounded to 8 bits per block once per call (quant_blocks.h) and each block
// is an exact integer dot product scaled in f32, so the result is within
// sum over blocks of (x's block scale / 2) * sum |dequantised w| of the f32
// dot with the dequantised weights, and splits of rows or batches, as
// below, never change it.
void MatVec(const WeightMatrix& w, const float* x, float* y, ThreadPool* pool);

// For each of `batch` input rows: y[m][r] = sum_c W[r][c] * x[m][c].
// x is [batch][w.cols], y is [batch][w.rows], both dense row-major.
// Every weight row is read once for the whole batch (prefill and batched
// decode are bandwidth-bound on the weights). pool may be null.
// The result for each m is bit-identical to MatVec on row m alone, so a
// batched step and single steps agree exactly.
void MatMul(const WeightMatrix& w, const float* x, int64_t batch, float* y, ThreadPool* pool);

// MatMul's output rows [row_begin, row_end) of w, for every x, on the calling
// thread; y's other rows are untouched. The values are MatMul's exactly (the
// split of rows never changes one), so a caller can run the rows of several
// matrices as one parallel job (a MoE layer's experts) instead of one job
// per matrix.
void MatMulRowRange(const WeightMatrix& w, const float* x, int64_t batch, float* y, int64_t row_begin,
                    int64_t row_end);

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_MATMUL_H_
