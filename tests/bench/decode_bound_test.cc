#include "bench/decode_bound.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace expertd::bench {
namespace {

// 1000 tokens/s over 4 MoE layers: 250 us a layer, 100 us of it before the
// routing at a share of 0.4.
constexpr double kResident = 1000;
constexpr int kMoeLayers = 4;
constexpr double kPreRouting = 0.4;

TEST(NoSpeculationBoundTest, WithoutMissesItIsTheResidentSpeed) {
  const std::map<uint64_t, int64_t> layers = {{0, 8}};
  auto no_batch = [](int) -> double {
    ADD_FAILURE() << "no batch to time";
    return 1;
  };
  EXPECT_DOUBLE_EQ(NoSpeculationBoundTokensPerSecond(layers, kResident, kMoeLayers, kPreRouting, no_batch), kResident);
}

TEST(NoSpeculationBoundTest, ReadsShorterThanTheLayersComputeCostNothing) {
  // 100 us before routing + 100 us of reads < 250 us of compute.
  const std::map<uint64_t, int64_t> layers = {{0, 4}, {3, 4}};
  EXPECT_DOUBLE_EQ(
      NoSpeculationBoundTokensPerSecond(layers, kResident, kMoeLayers, kPreRouting, [](int) { return 100e-6; }),
      kResident);
}

TEST(NoSpeculationBoundTest, ALayersReadsStartAfterItsRouting) {
  // Two tokens: four layers without misses (250 us each), two with one miss
  // (100 + 500 us) and two with three (100 + 1000 us): 1000 + 1200 + 2200
  // = 4400 us for 2 tokens.
  std::vector<int> asked;
  const std::map<uint64_t, int64_t> layers = {{0, 4}, {1, 2}, {3, 2}};
  const double bound = NoSpeculationBoundTokensPerSecond(layers, kResident, kMoeLayers, kPreRouting, [&](int misses) {
    asked.push_back(misses);
    return misses == 1 ? 500e-6 : 1000e-6;
  });
  EXPECT_NEAR(bound, 2 / 4400e-6, 1e-6);
  EXPECT_EQ(asked, (std::vector<int>{1, 3}));
}

TEST(NoSpeculationBoundTest, NothingCountedGivesZero) {
  EXPECT_EQ(NoSpeculationBoundTokensPerSecond({}, kResident, kMoeLayers, kPreRouting, [](int) { return 1.0; }), 0.0);
  EXPECT_EQ(NoSpeculationBoundTokensPerSecond({{1, 4}}, 0, kMoeLayers, kPreRouting, [](int) { return 1.0; }), 0.0);
}

}  // namespace
}  // namespace expertd::bench
