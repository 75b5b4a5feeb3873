#include "engine/cpu_feed_forward.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"

namespace expertd::engine {

void ExpertActivation(const model::ExpertExtras& extras, float* gate, float* up, int64_t m, int64_t stride, int64_t lo,
                      int64_t hi) {
  for (int64_t r = 0; r < m; ++r) {
    float* g = gate + r * stride;
    float* u = up + r * stride;
    if (extras.gate_bias != nullptr) {
      for (int64_t i = lo; i < hi; ++i) {
        g[i] += extras.gate_bias[i];
        u[i] += extras.up_bias[i];
      }
    }
    if (extras.clamped_swiglu == nullptr) {
      kernels::SiluMul(g + lo, u + lo, hi - lo, g + lo);
      continue;
    }
    const float alpha = extras.clamped_swiglu->alpha, limit = extras.clamped_swiglu->limit;
    for (int64_t i = lo; i < hi; ++i) {
      const float clamped_gate = std::min(g[i], limit);
      const float clamped_up = std::clamp(u[i], -limit, limit);
      g[i] = (clamped_up + 1.0f) * clamped_gate / (1.0f + std::exp(-alpha * clamped_gate));
    }
  }
}

void AddDownBias(const model::ExpertExtras& extras, float* out, int64_t m, int64_t stride, int64_t lo, int64_t hi) {
  if (extras.down_bias == nullptr) return;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t i = lo; i < hi; ++i) out[r * stride + i] += extras.down_bias[i];
  }
}

void CpuFeedForward(const model::FeedForwardWeights& ff, const float* x, int m, float* gate_scratch, float* up_scratch,
                    float* out, kernels::ThreadPool* pool, const model::ExpertExtras& extras) {
  const int64_t ffn = ff.gate.rows;
  kernels::MatMul(ff.gate, x, m, gate_scratch, pool);
  kernels::MatMul(ff.up, x, m, up_scratch, pool);
  ExpertActivation(extras, gate_scratch, up_scratch, m, ffn, 0, ffn);
  kernels::MatMul(ff.down, gate_scratch, m, out, pool);
  AddDownBias(extras, out, m, ff.down.rows, 0, ff.down.rows);
}

void CalibrateCpuExperts(const model::FeedForwardWeights& like, kernels::ThreadPool* pool,
                         ExecutionPlacement& placement) {
  // Weights of small values (zero bytes are fine in every dtype): the
  // kernels' speed does not depend on them.
  const size_t bytes = like.gate.size_bytes() + like.up.size_bytes() + like.down.size_bytes();
  std::vector<std::byte> weights(bytes, std::byte{0});
  model::FeedForwardWeights expert = like;
  expert.gate.data = weights.data();
  expert.up.data = weights.data() + like.gate.size_bytes();
  expert.down.data = weights.data() + like.gate.size_bytes() + like.up.size_bytes();
  const int hidden = static_cast<int>(like.gate.cols);
  const int ffn = static_cast<int>(like.gate.rows);
  constexpr int kMaxRows = 8;
  std::vector<float> x(static_cast<size_t>(kMaxRows) * hidden, 0.5f);
  std::vector<float> gate(static_cast<size_t>(kMaxRows) * ffn), up(gate.size());
  std::vector<float> out(static_cast<size_t>(kMaxRows) * hidden);
  for (int rows : {1, kMaxRows}) {
    CpuFeedForward(expert, x.data(), rows, gate.data(), up.data(), out.data(), pool);  // warm
    constexpr int kReps = 3;
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < kReps; ++r) CpuFeedForward(expert, x.data(), rows, gate.data(), up.data(), out.data(), pool);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / kReps;
    placement.RecordCpuCompute(bytes, rows, seconds);
  }
}

}  // namespace expertd::engine
