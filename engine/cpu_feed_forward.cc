#include "engine/cpu_feed_forward.h"

#include <chrono>
#include <cstddef>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"

namespace expertd {

void CpuFeedForward(const FeedForwardWeights& ff, const float* x, int m, float* gate_scratch, float* up_scratch,
                    float* out, kernels::ThreadPool* pool) {
  const int64_t ffn = ff.gate.rows;
  kernels::MatMul(ff.gate, x, m, gate_scratch, pool);
  kernels::MatMul(ff.up, x, m, up_scratch, pool);
  kernels::SiluMul(gate_scratch, up_scratch, m * ffn, gate_scratch);
  kernels::MatMul(ff.down, gate_scratch, m, out, pool);
}

void CalibrateCpuExperts(const FeedForwardWeights& like, kernels::ThreadPool* pool,
                         ExecutionPlacement& placement) {
  // Weights of small values (zero bytes are fine in every dtype): the
  // kernels' speed does not depend on them.
  const size_t bytes = like.gate.size_bytes() + like.up.size_bytes() + like.down.size_bytes();
  std::vector<std::byte> weights(bytes, std::byte{0});
  FeedForwardWeights expert = like;
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

}  // namespace expertd
