// The precision plan (engine/precision_plan.h): hot experts higher, cold
// lower, under a byte budget that is kept exactly.

#include "engine/precision_plan.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace expertd::engine {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Sizes of one 128x128 expert bundle (hidden 128, ffn 128) as the packer
// writes them: bf16 96 KiB, q8_0 51 KiB, q4_0 27 KiB.
const std::vector<PrecisionCandidate> kCandidates = {
    {DType::kBF16, 98304}, {DType::kQ8_0, 52224}, {DType::kQ4_0, 27648}};

std::vector<ExpertAccessCount> RandomCounts(int layers, int experts, uint32_t seed) {
  std::mt19937 rng(seed);
  // Few distinct values, so ties are common.
  std::uniform_int_distribution<int> count(0, 12);
  std::vector<ExpertAccessCount> out;
  for (int l = 0; l < layers; ++l) {
    for (int e = 0; e < experts; ++e) out.push_back({l, e, static_cast<uint64_t>(count(rng))});
  }
  return out;
}

uint64_t SumOfBundles(const PrecisionPlan& plan) {
  uint64_t sum = 0;
  for (const PrecisionPlan::Entry& entry : plan.entries) sum += plan.candidates[entry.candidate].bundle_bytes;
  return sum;
}

// The cheapest upgrade the plan left undone: from the first expert (in
// hotness order) at the lowest level reached, or none when all are highest.
uint64_t NextStepBytes(const PrecisionPlan& plan) {
  int lowest_level = 0;
  for (const PrecisionPlan::Entry& entry : plan.entries) lowest_level = std::max(lowest_level, entry.candidate);
  if (lowest_level == 0) return 0;
  return plan.candidates[lowest_level - 1].bundle_bytes - plan.candidates[lowest_level].bundle_bytes;
}

TEST(PrecisionPlan, KeepsTheBudgetAndLeavesNoUpgradeThatFits) {
  const std::vector<ExpertAccessCount> counts = RandomCounts(4, 16, 7);
  const uint64_t lowest = 64 * kCandidates[2].bundle_bytes, highest = 64 * kCandidates[0].bundle_bytes;
  for (uint64_t target = lowest; target <= highest + 100000; target += 77777) {
    SCOPED_TRACE(target);
    auto plan = PlanPrecision(counts, kCandidates, target);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->total_bytes, SumOfBundles(*plan));
    EXPECT_LE(plan->total_bytes, target);
    EXPECT_EQ(plan->entries.size(), counts.size());
    const uint64_t next = NextStepBytes(*plan);
    if (next != 0) {
      EXPECT_GT(plan->total_bytes + next, target) << "an upgrade that fits was left undone";
    }
  }
}

TEST(PrecisionPlan, AHotterExpertNeverGetsALowerPrecision) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    const std::vector<ExpertAccessCount> counts = RandomCounts(3, 16, seed);
    for (double share : {0.3, 0.5, 0.7, 0.9}) {
      const uint64_t lowest = 48 * kCandidates[2].bundle_bytes, highest = 48 * kCandidates[0].bundle_bytes;
      const auto target = static_cast<uint64_t>(lowest + share * (highest - lowest));
      auto plan = PlanPrecision(counts, kCandidates, target);
      ASSERT_TRUE(plan.ok()) << plan.status();
      for (const PrecisionPlan::Entry& a : plan->entries) {
        for (const PrecisionPlan::Entry& b : plan->entries) {
          // A lower candidate index is a higher precision.
          if (a.expert.accesses > b.expert.accesses) {
            EXPECT_LE(a.candidate, b.candidate) << "layer " << a.expert.layer << " expert " << a.expert.expert
                                                << " is hotter than layer " << b.expert.layer << " expert "
                                                << b.expert.expert;
          }
        }
      }
      // Every expert appears with its dtype.
      for (const ExpertAccessCount& c : counts) {
        EXPECT_TRUE(plan->DtypeOf(c.layer, c.expert).ok());
      }
    }
  }
}

// Every expert leaves the lowest precision before any reaches the highest.
TEST(PrecisionPlan, RaisesLevelByLevelHottestFirst) {
  const std::vector<ExpertAccessCount> counts = {{0, 0, 5}, {0, 1, 50}, {1, 0, 20}, {1, 1, 1}};
  // All at q8_0 plus one step q8_0 -> bf16, and a little slack.
  const uint64_t target = 4 * kCandidates[1].bundle_bytes + (kCandidates[0].bundle_bytes - kCandidates[1].bundle_bytes) + 10;
  auto plan = PlanPrecision(counts, kCandidates, target);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(*plan->DtypeOf(0, 1), DType::kBF16);
  EXPECT_EQ(*plan->DtypeOf(1, 0), DType::kQ8_0);
  EXPECT_EQ(*plan->DtypeOf(0, 0), DType::kQ8_0);
  EXPECT_EQ(*plan->DtypeOf(1, 1), DType::kQ8_0);
  EXPECT_EQ(plan->total_bytes, target - 10);

  // Room for two experts at q8_0 only: the two hottest.
  auto two = PlanPrecision(counts, kCandidates, 2 * kCandidates[1].bundle_bytes + 2 * kCandidates[2].bundle_bytes);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(*two->DtypeOf(0, 1), DType::kQ8_0);
  EXPECT_EQ(*two->DtypeOf(1, 0), DType::kQ8_0);
  EXPECT_EQ(*two->DtypeOf(0, 0), DType::kQ4_0);
  EXPECT_EQ(*two->DtypeOf(1, 1), DType::kQ4_0);
}

TEST(PrecisionPlan, TiesGoToTheLowerLayerThenExpert) {
  // All equally hot, listed in no particular order.
  const std::vector<ExpertAccessCount> counts = {{2, 1, 3}, {0, 3, 3}, {2, 0, 3}, {0, 2, 3}};
  const uint64_t target = 2 * kCandidates[1].bundle_bytes + 2 * kCandidates[2].bundle_bytes;
  auto plan = PlanPrecision(counts, kCandidates, target);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(*plan->DtypeOf(0, 2), DType::kQ8_0);
  EXPECT_EQ(*plan->DtypeOf(0, 3), DType::kQ8_0);
  EXPECT_EQ(*plan->DtypeOf(2, 0), DType::kQ4_0);
  EXPECT_EQ(*plan->DtypeOf(2, 1), DType::kQ4_0);
  // The same plan whatever the input order.
  std::vector<ExpertAccessCount> reversed(counts.rbegin(), counts.rend());
  auto again = PlanPrecision(reversed, kCandidates, target);
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < plan->entries.size(); ++i) {
    EXPECT_EQ(again->entries[i].expert.layer, plan->entries[i].expert.layer);
    EXPECT_EQ(again->entries[i].expert.expert, plan->entries[i].expert.expert);
    EXPECT_EQ(again->entries[i].candidate, plan->entries[i].candidate);
  }
}

TEST(PrecisionPlan, ABudgetBelowAllLowestNamesTheMinimum) {
  const std::vector<ExpertAccessCount> counts = RandomCounts(2, 16, 4);
  const uint64_t minimum = 32 * kCandidates[2].bundle_bytes;  // 884736
  auto plan = PlanPrecision(counts, kCandidates, minimum - 1);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("at least 884736 bytes"));
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("q4_0"));

  auto exact = PlanPrecision(counts, kCandidates, minimum);
  ASSERT_TRUE(exact.ok()) << exact.status();
  EXPECT_EQ(exact->total_bytes, minimum);
  for (const PrecisionPlan::Entry& entry : exact->entries) EXPECT_EQ(entry.candidate, 2);
}

TEST(PrecisionPlan, ABudgetForAllHighestGivesAllHighest) {
  const std::vector<ExpertAccessCount> counts = RandomCounts(2, 16, 5);
  for (uint64_t target : {32 * kCandidates[0].bundle_bytes, 32 * kCandidates[0].bundle_bytes + 1, uint64_t{1} << 40}) {
    auto plan = PlanPrecision(counts, kCandidates, target);
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(plan->total_bytes, 32 * kCandidates[0].bundle_bytes);
    for (const PrecisionPlan::Entry& entry : plan->entries) EXPECT_EQ(entry.candidate, 0);
  }
  // One step short of all-highest: one expert, the coldest, stays at q8_0.
  auto plan = PlanPrecision(counts, kCandidates, 32 * kCandidates[0].bundle_bytes - 1);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->entries.back().candidate, 1);
  EXPECT_EQ(plan->entries[plan->entries.size() - 2].candidate, 0);
}

TEST(PrecisionPlan, TiersCountExpertsBytesAndAccesses) {
  const std::vector<ExpertAccessCount> counts = {{0, 0, 6}, {0, 1, 3}, {0, 2, 1}, {0, 3, 0}};
  // All at q4_0 (4 x 27648) and two steps to q8_0 (24576 each), with 100
  // bytes to spare: the two hottest at q8_0.
  const uint64_t target = 4 * kCandidates[2].bundle_bytes + 2 * 24576 + 100;
  auto plan = PlanPrecision(counts, kCandidates, target);
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::vector<PrecisionPlan::Tier> tiers = plan->Tiers();
  ASSERT_EQ(tiers.size(), 3u);
  EXPECT_EQ(tiers[0].experts, 0);
  EXPECT_EQ(tiers[0].bytes, 0u);
  EXPECT_EQ(tiers[1].experts, 2);
  EXPECT_EQ(tiers[1].accesses, 9u);
  EXPECT_EQ(tiers[1].bytes, 2 * kCandidates[1].bundle_bytes);
  EXPECT_EQ(tiers[2].experts, 2);
  EXPECT_EQ(tiers[2].accesses, 1u);
  EXPECT_EQ(tiers[2].bytes, 2 * kCandidates[2].bundle_bytes);
  EXPECT_EQ(plan->total_bytes, target - 100);
  EXPECT_EQ(plan->total_accesses(), 10u);
  EXPECT_THAT(plan->Summary(), HasSubstr("q8_0: 2 experts (102.0 KiB, 90.0% of accesses)"));
  EXPECT_THAT(plan->Summary(), HasSubstr("bf16: 0 experts"));
}

TEST(PrecisionPlan, RefusesBadInput) {
  const std::vector<ExpertAccessCount> counts = {{0, 0, 1}, {0, 1, 2}};
  EXPECT_FALSE(PlanPrecision({}, kCandidates, 1 << 30).ok());
  EXPECT_FALSE(PlanPrecision(counts, {}, 1 << 30).ok());
  const std::vector<PrecisionCandidate> unordered = {kCandidates[1], kCandidates[0]};
  auto bad_order = PlanPrecision(counts, unordered, 1 << 30);
  ASSERT_FALSE(bad_order.ok());
  EXPECT_THAT(std::string(bad_order.status().message()), HasSubstr("highest precision"));
  const std::vector<ExpertAccessCount> twice = {{0, 0, 1}, {0, 0, 2}};
  auto duplicate = PlanPrecision(twice, kCandidates, 1 << 30);
  ASSERT_FALSE(duplicate.ok());
  EXPECT_THAT(std::string(duplicate.status().message()), HasSubstr("listed twice"));
  auto plan = PlanPrecision(counts, kCandidates, 1 << 30);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->DtypeOf(3, 0).status().code(), absl::StatusCode::kNotFound);
}

model::ModelConfig ExpertShape(int hidden, int ffn) {
  model::ModelConfig config;
  config.hidden_size = hidden;
  config.expert_intermediate_size = ffn;
  return config;
}

TEST(PrecisionCandidates, SizesFollowTheBundleLayout) {
  auto candidates = PrecisionCandidatesFor(ExpertShape(128, 128), {DType::kBF16, DType::kQ8_0, DType::kQ4_0});
  ASSERT_TRUE(candidates.ok()) << candidates.status();
  ASSERT_EQ(candidates->size(), 3u);
  EXPECT_EQ((*candidates)[0].bundle_bytes, kCandidates[0].bundle_bytes);
  EXPECT_EQ((*candidates)[1].bundle_bytes, kCandidates[1].bundle_bytes);
  EXPECT_EQ((*candidates)[2].bundle_bytes, kCandidates[2].bundle_bytes);
  // 256 x 512: q4_k is 144 bytes per 256 weights.
  auto k_quants = PrecisionCandidatesFor(ExpertShape(256, 512), {DType::kQ6_K, DType::kQ4_K});
  ASSERT_TRUE(k_quants.ok()) << k_quants.status();
  EXPECT_EQ((*k_quants)[1].bundle_bytes, 3u * 256 * 512 / 256 * 144);
}

TEST(PrecisionCandidates, RefusesWhatTheShapeOrOrderDoesNotAllow) {
  auto k_quant = PrecisionCandidatesFor(ExpertShape(128, 128), {DType::kBF16, DType::kQ4_K});
  ASSERT_FALSE(k_quant.ok());
  EXPECT_THAT(std::string(k_quant.status().message()), HasSubstr("q4_k"));
  EXPECT_THAT(std::string(k_quant.status().message()), HasSubstr("128 (hidden_size)"));
  auto larger = PrecisionCandidatesFor(ExpertShape(128, 128), {DType::kQ8_0, DType::kBF16});
  ASSERT_FALSE(larger.ok());
  EXPECT_THAT(std::string(larger.status().message()), HasSubstr("bf16"));
  // q4_0 and q4_k are the same size: neither is the higher precision.
  EXPECT_FALSE(PrecisionCandidatesFor(ExpertShape(256, 256), {DType::kQ4_K, DType::kQ4_0}).ok());
  EXPECT_FALSE(PrecisionCandidatesFor(ExpertShape(128, 128), {DType::kQ8_0, DType::kQ8_0}).ok());
}

TEST(PrecisionCandidates, DefaultsFitTheShapeAndParse) {
  EXPECT_THAT(DefaultPrecisionDtypes(ExpertShape(2048, 1024)),
              ElementsAre(DType::kBF16, DType::kQ8_0, DType::kQ6_K, DType::kQ4_K));
  EXPECT_THAT(DefaultPrecisionDtypes(ExpertShape(128, 128)), ElementsAre(DType::kBF16, DType::kQ8_0, DType::kQ4_0));
  auto parsed = ParsePrecisionDtypes(" q8_0, q4_0 ", ExpertShape(128, 128));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(*parsed, ElementsAre(DType::kQ8_0, DType::kQ4_0));
  auto defaulted = ParsePrecisionDtypes("", ExpertShape(128, 128));
  ASSERT_TRUE(defaulted.ok());
  EXPECT_THAT(*defaulted, ElementsAre(DType::kBF16, DType::kQ8_0, DType::kQ4_0));
  for (const char* bad : {"q3_k", "keep", "bf16,,q8_0"}) {
    auto refused = ParsePrecisionDtypes(bad, ExpertShape(128, 128));
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--precision-dtypes"));
  }
}

}  // namespace
}  // namespace expertd::engine
