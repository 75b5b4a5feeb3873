#include "engine/execution_placement.h"

#include <algorithm>
#include <cmath>

namespace expertd::engine {

ExecutionPlacement::ExecutionPlacement(PlacementOptions options)
    : options_(options),
      h2d_bytes_per_second_(options.h2d_bytes_per_second),
      cpu_base_seconds_per_byte_(1.0 / options.cpu_weight_bytes_per_second),
      cpu_per_row_seconds_per_byte_(options.cpu_seconds_per_byte_per_row) {
  options_.smoothing = std::clamp(options_.smoothing, 1e-3, 1.0);
}

double ExecutionPlacement::CopySeconds(uint64_t expert_bytes, uint64_t queued_copy_bytes) const {
  return options_.copy_overhead_seconds +
         static_cast<double>(expert_bytes + queued_copy_bytes) / h2d_bytes_per_second_;
}

double ExecutionPlacement::CpuSeconds(uint64_t expert_bytes, int rows) const {
  const double extra_rows = std::max(0, rows - 1);
  return static_cast<double>(expert_bytes) *
         (cpu_base_seconds_per_byte_ + cpu_per_row_seconds_per_byte_ * extra_rows);
}

Placement ExecutionPlacement::Decide(uint64_t expert_bytes, int rows, uint64_t queued_copy_bytes) const {
  if (rows <= 0) return Placement::kCopyToDevice;  // nothing to compute now; a copy at least helps later
  return CpuSeconds(expert_bytes, rows) < CopySeconds(expert_bytes, queued_copy_bytes) ? Placement::kComputeOnCpu
                                                                                       : Placement::kCopyToDevice;
}

void ExecutionPlacement::RecordCopy(uint64_t bytes, double seconds) {
  const double transfer = seconds - options_.copy_overhead_seconds;
  if (bytes == 0 || !(transfer > 0)) return;
  const double measured = static_cast<double>(bytes) / transfer;
  h2d_bytes_per_second_ += options_.smoothing * (measured - h2d_bytes_per_second_);
}

void ExecutionPlacement::RecordCpuCompute(uint64_t expert_bytes, int rows, double seconds) {
  if (expert_bytes == 0 || rows <= 0 || !(seconds > 0)) return;
  const double x = rows - 1;
  const double y = seconds / static_cast<double>(expert_bytes);
  const double keep = 1.0 - options_.smoothing;
  sw_ = keep * sw_ + 1.0;
  sx_ = keep * sx_ + x;
  sy_ = keep * sy_ + y;
  sxx_ = keep * sxx_ + x * x;
  sxy_ = keep * sxy_ + x * y;
  const double variance = sw_ * sxx_ - sx_ * sx_;
  // With one batch size seen so far the slope is unknown: keep the current
  // per-row estimate and fit only the base.
  double slope = cpu_per_row_seconds_per_byte_;
  if (variance > 1e-9 * std::max(1.0, sw_ * sxx_)) {
    slope = std::max(0.0, (sw_ * sxy_ - sx_ * sy_) / variance);
  }
  cpu_per_row_seconds_per_byte_ = slope;
  cpu_base_seconds_per_byte_ = std::max(1e-15, (sy_ - slope * sx_) / sw_);
}

}  // namespace expertd::engine
