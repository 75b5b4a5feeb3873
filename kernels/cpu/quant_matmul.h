#ifndef EXPERTD_KERNELS_CPU_QUANT_MATMUL_H_
#define EXPERTD_KERNELS_CPU_QUANT_MATMUL_H_

#include <cstdint>

#include "base/dtype.h"

namespace expertd::kernels::internal {

// MatMul's rows [row_begin, row_end) for a quantised weight matrix (the
// kernels/cpu/matmul.h entry points call this; nothing else should).
// xq holds `batch` activation rows, each QuantizeActivationRow's output for
// w's dtype (ActivationRowBytes apart); y is [batch][rows].
//
// Each y[m][r] is one dot product of row r with activation row m, computed
// the same way whatever the batch, the row range or the thread, so results
// never depend on how rows are split. Every block's integer sums are exact;
// only their scaling is in f32. Q5_K (and Q4_K and Q6_K below AVX2) scale
// them in block order, so the SIMD result equals DotQuantRowScalar bit for
// bit; Q8_0, Q4_0, MXFP4, and Q4_K and Q6_K on x86 from AVX2 up, scale them
// into f32 vector lanes, which reorders the f32 additions (within a few ulp
// of the scalar sum times the row's length), differently on AVX2 and
// AVX-512. Kernels that run several weight rows per pass (MXFP4's MatVec)
// keep each row's steps those of the one-row kernel, so grouping rows never
// changes a value either.
void QuantMatMulRows(DType dtype, const void* w, int64_t rows, int64_t cols, const void* xq, int64_t batch,
                     float* y, int64_t row_begin, int64_t row_end);

// QuantizeActivationRow (quant_blocks.h) on `batch` rows of `cols`, byte for
// byte, vectorised: it runs on every MatVec call.
void QuantizeActivationRows(DType dtype, const float* x, int64_t cols, int64_t batch, void* out);

}  // namespace expertd::kernels::internal

#endif  // EXPERTD_KERNELS_CPU_QUANT_MATMUL_H_
