#include "engine/execution_placement.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace expertd::engine {
namespace {

constexpr uint64_t kExpertBytes = 12ull << 20;  // OLMoE-1B-7B bf16 expert

TEST(ExecutionPlacementTest, FewRowsGoToTheCpuManyRowsAreCopied) {
  PlacementOptions options;
  options.h2d_bytes_per_second = 20e9;
  options.copy_overhead_seconds = 0;
  options.cpu_weight_bytes_per_second = 40e9;  // faster than the link at batch 1
  options.cpu_seconds_per_byte_per_row = 1.0 / 40e9;
  ExecutionPlacement placement(options);
  // CPU: bytes * (1 + (rows - 1)) / 40e9 against copy bytes / 20e9: equal at 2 rows.
  EXPECT_EQ(placement.Decide(kExpertBytes, 1), Placement::kComputeOnCpu);
  EXPECT_EQ(placement.Decide(kExpertBytes, 2), Placement::kCopyToDevice) << "a tie copies";
  EXPECT_EQ(placement.Decide(kExpertBytes, 8), Placement::kCopyToDevice);
  EXPECT_EQ(placement.Decide(kExpertBytes, 0), Placement::kCopyToDevice);
}

TEST(ExecutionPlacementTest, AQueuedCopyStreamFavoursTheCpu) {
  PlacementOptions options;
  options.h2d_bytes_per_second = 25e9;
  options.cpu_weight_bytes_per_second = 10e9;
  ExecutionPlacement placement(options);
  EXPECT_EQ(placement.Decide(kExpertBytes, 1), Placement::kCopyToDevice);
  EXPECT_EQ(placement.Decide(kExpertBytes, 1, 8 * kExpertBytes), Placement::kComputeOnCpu)
      << "eight experts already queued ahead of this copy";
}

TEST(ExecutionPlacementTest, CopyBandwidthFollowsMeasurements) {
  PlacementOptions options;
  options.h2d_bytes_per_second = 25e9;
  options.copy_overhead_seconds = 0;
  options.smoothing = 0.5;
  ExecutionPlacement placement(options);
  for (int i = 0; i < 40; ++i) placement.RecordCopy(kExpertBytes, static_cast<double>(kExpertBytes) / 5e9);
  EXPECT_NEAR(placement.h2d_bytes_per_second(), 5e9, 1e6);
  EXPECT_NEAR(placement.CopySeconds(kExpertBytes), static_cast<double>(kExpertBytes) / 5e9, 1e-6);
  // Nonsense measurements are ignored.
  placement.RecordCopy(0, 1.0);
  placement.RecordCopy(kExpertBytes, 0.0);
  placement.RecordCopy(kExpertBytes, -1.0);
  EXPECT_NEAR(placement.h2d_bytes_per_second(), 5e9, 1e6);
}

TEST(ExecutionPlacementTest, CpuModelIsFittedFromMeasuredBatches) {
  ExecutionPlacement placement;  // default guesses, then the truth below
  const double base = 1.0 / 15e9;      // s per byte at one row
  const double per_row = 0.3 / 15e9;   // each extra row adds 30%
  for (int i = 0; i < 60; ++i) {
    const int rows = 1 + i % 6;
    placement.RecordCpuCompute(kExpertBytes, rows, static_cast<double>(kExpertBytes) * (base + per_row * (rows - 1)));
  }
  for (int rows : {1, 4, 16}) {
    const double want = static_cast<double>(kExpertBytes) * (base + per_row * (rows - 1));
    EXPECT_NEAR(placement.CpuSeconds(kExpertBytes, rows), want, want * 1e-6) << rows;
  }
}

TEST(ExecutionPlacementTest, OneBatchSizeFitsTheBaseAndKeepsThePerRowGuess) {
  PlacementOptions options;
  options.cpu_seconds_per_byte_per_row = 1e-11;
  options.smoothing = 1.0;  // the last measurement is the estimate
  ExecutionPlacement placement(options);
  placement.RecordCpuCompute(kExpertBytes, 1, static_cast<double>(kExpertBytes) / 8e9);
  EXPECT_NEAR(placement.CpuSeconds(kExpertBytes, 1), static_cast<double>(kExpertBytes) / 8e9, 1e-9);
  EXPECT_NEAR(placement.CpuSeconds(kExpertBytes, 3) - placement.CpuSeconds(kExpertBytes, 1),
              2 * 1e-11 * static_cast<double>(kExpertBytes), 1e-9);
}

}  // namespace
}  // namespace expertd::engine
