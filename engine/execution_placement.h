#ifndef EXPERTD_ENGINE_EXECUTION_PLACEMENT_H_
#define EXPERTD_ENGINE_EXECUTION_PLACEMENT_H_

// Where to run an expert that missed VRAM but sits in DRAM (DESIGN.md's
// execution placement; the idea of Fiddler, Kamahori et al. 2024, decided
// per batch from measured rates): copy it over PCIe and compute on the GPU,
// or compute it on the CPU from DRAM and send only the activations. A copy
// costs the expert's bytes over the measured host-to-device bandwidth, behind
// whatever is already queued on the copy stream; the CPU costs a weight pass
// plus a per-row term (at batch 1 matvec is bound by memory, at larger
// batches the arithmetic grows with the rows). Both rates start from options
// and follow measurements. The choice is myopic: it does not credit a copy
// with later hits on the expert, so callers that expect reuse (a high
// predictor score) can pass a larger `rows` or skip the model.

#include <cstdint>

namespace expertd::engine {

enum class Placement { kCopyToDevice, kComputeOnCpu };

struct PlacementOptions {
  // Until measured: PCIe 4.0 x16 as pinned copies achieve it.
  double h2d_bytes_per_second = 24e9;
  double copy_overhead_seconds = 10e-6;  // launch + event per copy
  // Until measured: CPU bf16 matvec streams weights at this rate (batch 1) ...
  double cpu_weight_bytes_per_second = 10e9;
  // ... and each extra row of the batch costs this many seconds per weight byte.
  double cpu_seconds_per_byte_per_row = 2e-11;
  // Weight of a new measurement in the running estimates (0, 1].
  double smoothing = 0.2;
};

class ExecutionPlacement {
 public:
  explicit ExecutionPlacement(PlacementOptions options = {});

  // For one expert of `expert_bytes` needed by `rows` rows of this batch,
  // with `queued_copy_bytes` already waiting on the copy stream.
  Placement Decide(uint64_t expert_bytes, int rows, uint64_t queued_copy_bytes = 0) const;
  double CopySeconds(uint64_t expert_bytes, uint64_t queued_copy_bytes = 0) const;
  double CpuSeconds(uint64_t expert_bytes, int rows) const;

  // Measurements: a finished copy, and a CPU computation of an expert of
  // `expert_bytes` for `rows` rows.
  void RecordCopy(uint64_t bytes, double seconds);
  void RecordCpuCompute(uint64_t expert_bytes, int rows, double seconds);

  double h2d_bytes_per_second() const { return h2d_bytes_per_second_; }

 private:
  PlacementOptions options_;
  double h2d_bytes_per_second_;
  // CPU time per weight byte is modelled as base + per_row * (rows - 1):
  // fitted by exponentially weighted least squares over (rows, s/byte).
  double cpu_base_seconds_per_byte_;
  double cpu_per_row_seconds_per_byte_;
  // Weighted sums for the fit: weight, x, y, x*x, x*y with x = rows - 1.
  double sw_ = 0, sx_ = 0, sy_ = 0, sxx_ = 0, sxy_ = 0;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_EXECUTION_PLACEMENT_H_
