#ifndef EXPERTD_ENGINE_CPU_FEED_FORWARD_H_
#define EXPERTD_ENGINE_CPU_FEED_FORWARD_H_

// A SwiGLU feed-forward block (dense MLP, shared or routed expert) on the
// CPU, and the measurement execution placement starts from.

#include "engine/execution_placement.h"
#include "model/model_weights.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::engine {

// out[m][hidden] = down(silu(gate x) * up x) for m rows of x; gate_scratch
// and up_scratch hold m * ffn floats each. pool may be null. With extras
// (gpt-oss): biases after each projection and the clamped SwiGLU.
void CpuFeedForward(const model::FeedForwardWeights& ff, const float* x, int m, float* gate_scratch, float* up_scratch,
                    float* out, kernels::ThreadPool* pool, const model::ExpertExtras& extras = {});

// The activation of columns [lo, hi) of m rows of gate and up (row stride
// `stride`), into gate: SiLU(gate) * up, or with extras their biases first
// and then (up + 1) * g * sigmoid(alpha g), g = min(gate, limit), up
// clamped to +-limit (HF GptOssExperts._apply_gate).
void ExpertActivation(const model::ExpertExtras& extras, float* gate, float* up, int64_t m, int64_t stride, int64_t lo,
                      int64_t hi);
// Adds down_bias[lo, hi) to columns [lo, hi) of m rows of out (stride).
void AddDownBias(const model::ExpertExtras& extras, float* out, int64_t m, int64_t stride, int64_t lo, int64_t hi);

// Times CpuFeedForward on an expert of `like`'s shapes and dtypes (its own
// copy of the weights, warm in cache as a DRAM slot is after its load) at
// batch 1 and 8, and records both into `placement`, so its first decisions
// come from this machine rather than from defaults. The copy side is
// measured by the caller (it needs the device).
void CalibrateCpuExperts(const model::FeedForwardWeights& like, kernels::ThreadPool* pool,
                         ExecutionPlacement& placement);

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_CPU_FEED_FORWARD_H_
