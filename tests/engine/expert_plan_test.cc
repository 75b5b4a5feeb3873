// Which experts of a MoE layer run where: ready ones first, execution
// placement sending device misses with a host copy to the CPU when that is
// cheaper than the copy (queued copies included), loads started at once.

#include "engine/expert_plan.h"

#include <chrono>

#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "engine/cpu_feed_forward.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace expertd::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Experts ready in the compute tier, and those with a host copy.
class FakeExperts : public ExpertSource {
 public:
  FakeExperts(std::set<int> device, std::set<int> host) : device_(std::move(device)), host_(std::move(host)) {}
  absl::StatusOr<ExpertHandle> Acquire(int layer, int expert) override { return ExpertHandle(); }
  std::optional<ExpertHandle> TryAcquire(int layer, int expert) override {
    if (!device_.contains(expert)) return std::nullopt;
    return ExpertHandle();
  }
  std::optional<ExpertHandle> TryAcquireHostCopy(int layer, int expert) override {
    if (!host_.contains(expert)) return std::nullopt;
    ++host_pins;
    return ExpertHandle();
  }
  bool HasHostCopy(int layer, int expert) const override { return host_.contains(expert); }
  int host_pins = 0;
  void StartLoad(int layer, int expert) override { loads.push_back(expert); }
  std::vector<int> loads;

 private:
  std::set<int> device_;
  std::set<int> host_;
};

std::vector<int> Experts(const std::vector<ExpertPlan::Pinned>& pinned) {
  std::vector<int> out;
  for (const auto& p : pinned) out.push_back(p.expert);
  return out;
}

class ExpertPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.num_layers = 1;
    config_.num_experts = 8;
    config_.experts_per_token = 2;
    config_.layer_is_moe = {true};
    // Two rows: row 0 picks experts 1 and 3, row 1 picks 5 and 6.
    rows_ = {RowPlan{.position = 0, .kv = nullptr, .appends_kv = true, .k = 2, .first_slot = 0},
             RowPlan{.position = 0, .kv = nullptr, .appends_kv = true, .k = 2, .first_slot = 2}};
    logits_ = {0, 5, 0, 4, 0, 0, 0, 0,   //
               0, 0, 0, 0, 0, 5, 4, 0};
    dispatch_.emplace(config_);  // sized by the config, so only now
    dispatch_->BeginPass(rows_);
  }
  void Plan(FakeExperts& experts, const ExecutionPlacement* placement) {
    dispatch_->Route(0, logits_.data(), experts);
    plan_.Plan(0, *dispatch_, experts, placement, kExpertBytes);
  }

  static constexpr uint64_t kExpertBytes = 1'000'000;
  model::ModelConfig config_;
  std::vector<RowPlan> rows_;
  std::vector<float> logits_;
  std::optional<MoeDispatch> dispatch_;
  ExpertPlan plan_;
};

TEST_F(ExpertPlanTest, WithoutPlacementMissesAreLoadedAllAtOnce) {
  FakeExperts experts({3, 6}, {1, 5});
  Plan(experts, nullptr);
  EXPECT_THAT(Experts(plan_.ready()), ElementsAre(3, 6));
  EXPECT_THAT(plan_.on_cpu(), IsEmpty()) << "host copies are not used without placement";
  EXPECT_THAT(plan_.pending(), ElementsAre(1, 5));
  EXPECT_THAT(experts.loads, ElementsAre(1, 5));
  plan_.ReleasePins();
  EXPECT_THAT(plan_.ready(), IsEmpty());
  EXPECT_THAT(plan_.pending(), ElementsAre(1, 5)) << "pending outlives the pins";
}

TEST_F(ExpertPlanTest, ACheapCpuComputesHostCopiesAndOnlyTrueMissesLoad) {
  PlacementOptions options;
  options.h2d_bytes_per_second = 1e6;        // 1 s per copy
  options.cpu_weight_bytes_per_second = 1e12;  // 1 us per expert
  ExecutionPlacement placement(options);
  FakeExperts experts({3}, {1, 5, 6});
  Plan(experts, &placement);
  EXPECT_THAT(Experts(plan_.ready()), ElementsAre(3));
  EXPECT_THAT(Experts(plan_.on_cpu()), ElementsAre(1, 5, 6));
  EXPECT_THAT(plan_.pending(), IsEmpty());
  EXPECT_THAT(experts.loads, IsEmpty());
}

TEST_F(ExpertPlanTest, ASlowCpuCopiesEverything) {
  PlacementOptions options;
  options.h2d_bytes_per_second = 1e12;
  options.cpu_weight_bytes_per_second = 1e6;
  ExecutionPlacement placement(options);
  FakeExperts experts({}, {1, 3, 5, 6});
  Plan(experts, &placement);
  EXPECT_THAT(plan_.on_cpu(), IsEmpty());
  EXPECT_THAT(plan_.pending(), ElementsAre(1, 3, 5, 6));
  EXPECT_EQ(experts.host_pins, 0) << "copies decided on a query, without touching DRAM's statistics";
}

// A copy waits behind the layer's earlier copies: once the queue makes it
// slower than the CPU, the next host copy is computed on the CPU.
TEST_F(ExpertPlanTest, QueuedCopiesTipLaterExpertsToTheCpu) {
  PlacementOptions options;
  options.h2d_bytes_per_second = 1e9;            // 1 ms per expert copy
  options.copy_overhead_seconds = 0;
  options.cpu_weight_bytes_per_second = 0.6e9;  // 1.67 ms per expert
  ExecutionPlacement placement(options);
  FakeExperts experts({}, {1, 3, 5, 6});
  Plan(experts, &placement);
  // 1: copy (1 ms < 1.67); 3: behind one copy (2 ms) -> CPU; 5: still 2 ms
  // behind one queued copy -> CPU; 6 likewise.
  EXPECT_THAT(plan_.pending(), ElementsAre(1));
  EXPECT_THAT(Experts(plan_.on_cpu()), ElementsAre(3, 5, 6));
}

// The CPU side of placement starts from a measurement of this machine: the
// calibrated estimate is near a timing of the same block taken here.
TEST(CpuExpertCalibrationTest, EstimatesComeFromThisMachine) {
  constexpr int kHidden = 512;
  constexpr int kFfn = 256;
  model::FeedForwardWeights like;
  like.gate = {DType::kBF16, nullptr, kFfn, kHidden};
  like.up = {DType::kBF16, nullptr, kFfn, kHidden};
  like.down = {DType::kBF16, nullptr, kHidden, kFfn};
  const uint64_t bytes = 3ull * kHidden * kFfn * 2;
  PlacementOptions options;
  options.cpu_weight_bytes_per_second = 1e3;  // absurd: 13 minutes per expert
  ExecutionPlacement placement(options);
  const double before = placement.CpuSeconds(bytes, 1);
  CalibrateCpuExperts(like, nullptr, placement);
  const double estimate = placement.CpuSeconds(bytes, 1);
  EXPECT_LT(estimate, before / 1000) << "the default is replaced, not nudged";
  EXPECT_GE(placement.CpuSeconds(bytes, 8), estimate);

  std::vector<std::byte> weights(bytes);
  model::FeedForwardWeights expert = like;
  expert.gate.data = weights.data();
  expert.up.data = weights.data() + bytes / 3;
  expert.down.data = weights.data() + 2 * bytes / 3;
  std::vector<float> x(kHidden, 0.5f), gate(kFfn), up(kFfn), out(kHidden);
  double best = 1e9;
  for (int r = 0; r < 5; ++r) {
    const auto start = std::chrono::steady_clock::now();
    CpuFeedForward(expert, x.data(), 1, gate.data(), up.data(), out.data(), nullptr);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  // Loose bounds: this VM is noisy; a default left in place would be off
  // by orders of magnitude.
  EXPECT_GT(estimate, best / 20);
  EXPECT_LT(estimate, best * 50);
}

}  // namespace
}  // namespace expertd::engine
