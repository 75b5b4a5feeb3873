#ifndef EXPERTD_KERNELS_CPU_BF16_DOT_H_
#define EXPERTD_KERNELS_CPU_BF16_DOT_H_

#include <cstdint>

namespace expertd::kernels::internal {

// bf16 weights times activations rounded to bf16, with AVX-512 BF16's
// vdpbf16ps (the kernels/cpu/matmul.h entry points call this for a
// WeightMatrix with bf16_activations set; nothing else should).
//
// Why: prefill on wide experts is compute-bound, and f32 activations cost
// one FMA per weight (16 per instruction) after widening it; vdpbf16ps takes
// 32 bf16 pairs per instruction and needs no widening. On one core of an
// AMD EPYC Zen 4 host a 512x4096 matrix against 32 rows ran at 165 GFLOP/s
// this way against 96 for the f32 kernel (rounding the rows included). It is
// llama.cpp's arithmetic for bf16 weights on such CPUs. The price is x's
// precision: 8 bits of mantissa instead of 24 (a relative error of at most
// 2^-9 per element); each product is then exact and only the f32
// accumulation rounds.
//
// Highway 1.0 (Debian 12) has no target with AVX-512 BF16, so this file is
// compiled for it with a function attribute and chosen at run time
// (HaveBf16Dot); no other CPU runs it.

// Whether this CPU has AVX-512 BF16 (and so can run the two below).
bool HaveBf16Dot();

// x [n] rounded to bf16, to nearest even (vcvtne2ps2bf16; denormal inputs
// become zero).
void RoundToBf16(const float* x, int64_t n, uint16_t* out);

// y[m][r] = dot(w row r, xb row m) for r in [row_begin, row_end), m < batch.
// w is [rows][cols] bf16, xb [batch][cols] bf16, y [batch][rows] f32. Each
// dot is summed the same way whatever the batch, the row range or the tile
// (one f32 vector per dot, 32 columns a step in column order, the last
// partial step zero-padded, then one fixed-order horizontal sum), so splits
// of rows or batches never change a value and a batched step equals single
// steps bit for bit.
void Bf16DotRows(const uint16_t* w, int64_t rows, int64_t cols, const uint16_t* xb, int64_t batch, float* y,
                 int64_t row_begin, int64_t row_end);

}  // namespace expertd::kernels::internal

#endif  // EXPERTD_KERNELS_CPU_BF16_DOT_H_
