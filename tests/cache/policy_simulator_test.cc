#include "cache/sim/policy_simulator.h"

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/sim/synthetic_trace.h"
#include "gtest/gtest.h"

namespace expertd::cache {
namespace {

std::unique_ptr<EvictionPolicy> NewPolicy(const std::string& name, const std::shared_ptr<const AccessTrace>& trace) {
  PolicyOptions options;
  options.num_layers = trace->num_layers;
  options.num_experts = trace->num_experts;
  options.future = trace;
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = MakeEvictionPolicy(name, options);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? *std::move(policy) : nullptr;
}

SimulationResult SimulateNamed(const std::string& name, const std::shared_ptr<const AccessTrace>& trace,
                     const SimulationOptions& options) {
  auto policy = NewPolicy(name, trace);
  return policy ? Simulate(*trace, *policy, options) : SimulationResult{};
}

// Three layers, one expert each, capacity 2, LRU, no prefetch. Pass 0 loads
// all three (the third evicts layer 0's). Pass 1: layer 0 misses (evicted in
// pass 0: not a collision) and evicts layer 1's, which was resident when the
// pass began: its miss is a collision, and so is layer 2's.
TEST(SimulateTest, CountsCollisionMissesWithinAPass) {
  auto trace = std::make_shared<AccessTrace>();
  trace->num_layers = 3;
  trace->num_experts = 1;
  trace->passes = {{{0, 0}, {1, 0}, {2, 0}}, {{0, 0}, {1, 0}, {2, 0}}};
  SimulationOptions options;
  options.capacity_slots = 2;
  const SimulationResult result = SimulateNamed("lru", trace, options);
  EXPECT_EQ(result.accesses, 6);
  EXPECT_EQ(result.hits, 0);
  EXPECT_EQ(result.misses, 6);
  EXPECT_EQ(result.evictions, 4);
  EXPECT_EQ(result.collision_misses, 2);
}

TEST(SimulateTest, PinsTheLayersAlreadyAccessedExperts) {
  // One layer of 3 experts in a cache of 3: the third access cannot evict
  // the first two, so with 2 slots it would have to go uncached.
  auto trace = std::make_shared<AccessTrace>();
  trace->num_layers = 1;
  trace->num_experts = 4;
  trace->passes = {{{0, 0}, {0, 1}, {0, 2}}};
  SimulationOptions options;
  options.capacity_slots = 2;
  const SimulationResult result = SimulateNamed("lru", trace, options);
  EXPECT_EQ(result.uncached_misses, 1);
  EXPECT_EQ(result.evictions, 0);
  EXPECT_EQ(result.invalid_victims, 0);
}

TEST(SimulateTest, ExactOraclePrefetchLeavesOnlyTheFirstLayerMissing) {
  SyntheticTraceOptions synth;
  synth.num_layers = 6;
  synth.num_experts = 16;
  synth.k = 3;
  synth.tokens = 50;
  synth.zipf_exponent = 0.5;
  auto trace = std::make_shared<const AccessTrace>(MakeSyntheticTrace(synth));
  for (const std::string& name : EvictionPolicyNames()) {
    SimulationOptions options;
    options.capacity_slots = 2 * synth.k;
    options.prefetch = PrefetchMode::kOracleNextLayer;
    const SimulationResult result = SimulateNamed(name, trace, options);
    EXPECT_EQ(result.misses, synth.k) << name;
    EXPECT_EQ(result.useful_prefetches, result.hits) << name;
    EXPECT_EQ(result.collision_misses, 0) << name;
  }
}

TEST(SimulateTest, NoisyPrefetchMissesAtLeastTheWrongGuesses) {
  SyntheticTraceOptions synth;
  synth.num_layers = 8;
  synth.num_experts = 32;
  synth.k = 4;
  synth.tokens = 200;
  auto trace = std::make_shared<const AccessTrace>(MakeSyntheticTrace(synth));
  SimulationOptions options;
  // Room for every expert: a miss is a wrong guess, or the first use.
  options.capacity_slots = synth.num_layers * synth.num_experts;
  options.prefetch = PrefetchMode::kOracleNextLayer;
  options.prefetch_accuracy = 0.75;
  const SimulationResult result = SimulateNamed("lru", trace, options);
  EXPECT_EQ(result.collision_misses, 0);
  EXPECT_EQ(result.evictions, 0);
  // A wrong guess misses unless the expert is still resident from an earlier
  // token; with all 32 experts of a layer cached that is soon every time.
  EXPECT_GT(result.misses, synth.k);
  EXPECT_LT(result.misses, synth.num_layers * synth.num_experts + synth.k);
  // With 2 layers' worth of slots nothing survives a pass: a quarter of the
  // accesses at least are wrong guesses.
  options.capacity_slots = 2 * synth.k;
  const SimulationResult tight = SimulateNamed("lru", trace, options);
  EXPECT_GT(static_cast<double>(tight.misses) / tight.accesses, 0.22);
  // Same seed, same result; another seed, other guesses.
  EXPECT_EQ(SimulateNamed("lru", trace, options).misses, tight.misses);
  options.prefetch_seed = 9;
  EXPECT_NE(SimulateNamed("lru", trace, options).misses, tight.misses);
}

// A cyclic layer trace: every pass routes to the same experts, so each layer's
// experts come back exactly one pass later. With a predictor that is right
// 3 times in 4 and room for two and a half layers' experts (between one
// layer's and all of them), LRU keeps the experts just used — the most recent
// — and throws out the ones prefetched for the layer about to run; Least-Stale
// evicts the used ones, whose FIFO age dates from their own prefetch.
TEST(SimulateTest, LeastStaleBeatsLruOnACyclicTraceWithPrefetch) {
  constexpr int kLayers = 8, kExperts = 16, kK = 2;
  auto trace = std::make_shared<AccessTrace>();
  trace->num_layers = kLayers;
  trace->num_experts = kExperts;
  for (int t = 0; t < 400; ++t) {
    std::vector<ExpertKey>& pass = trace->passes.emplace_back();
    for (int l = 0; l < kLayers; ++l) {
      for (int e = 0; e < kK; ++e) pass.push_back(ExpertKey{l, (3 * l + e) % kExperts});
    }
  }
  SimulationOptions options;
  options.capacity_slots = 5;
  options.prefetch = PrefetchMode::kOracleNextLayer;
  options.prefetch_accuracy = 0.75;
  const SimulationResult lru = SimulateNamed("lru", trace, options);
  const SimulationResult least_stale = SimulateNamed("least-stale", trace, options);
  EXPECT_GT(least_stale.hits, lru.hits);
  EXPECT_LT(least_stale.collision_misses, lru.collision_misses);
  EXPECT_GT(lru.collision_misses, 0);
}

// A prefetch hint for a resident expert refreshes it in lru-hint and marks it
// current in least-stale; plain LRU ignores it. With a prefetcher, LRU that
// takes the hint is the fair baseline (DESIGN.md §3); with imperfect
// predictions it beats LRU.
TEST(SimulateTest, LruHintTakesThePrefetchHintLruIgnores) {
  // The bundled model's shape (4 layers x 16 experts, top-4), its even
  // routing, a quarter of the experts cached.
  SyntheticTraceOptions synth;
  synth.num_layers = 4;
  synth.num_experts = 16;
  synth.k = 4;
  synth.tokens = 500;
  auto trace = std::make_shared<AccessTrace>(MakeSyntheticTrace(synth));
  SimulationOptions options;
  options.capacity_slots = 16;
  options.prefetch = PrefetchMode::kOracleNextLayer;
  // Wrong guesses make demand misses, whose loads evict the coldest entry:
  // in LRU that is often an expert the hint said the next layer needs.
  options.prefetch_accuracy = 0.9;
  const SimulationResult lru = SimulateNamed("lru", trace, options);
  const SimulationResult lru_hint = SimulateNamed("lru-hint", trace, options);
  EXPECT_GT(lru_hint.hits, lru.hits);
  EXPECT_LT(lru_hint.collision_misses, lru.collision_misses);
  options.prefetch = PrefetchMode::kNone;  // no hints: the same policy
  EXPECT_EQ(SimulateNamed("lru-hint", trace, options).hits, SimulateNamed("lru", trace, options).hits);
}

// Belady's choices are optimal under the simulator's rules: it matches an
// exhaustive search on many small random traces, and no other policy gets
// more hits without prefetch.
TEST(SimulateTest, BeladyMatchesBruteForceAndBoundsEveryPolicy) {
  std::mt19937 random(42);
  int checked = 0;
  for (int round = 0; round < 120; ++round) {
    auto trace = std::make_shared<AccessTrace>();
    trace->num_layers = 2 + static_cast<int>(random() % 3);
    trace->num_experts = 2 + static_cast<int>(random() % 3);
    const int k = 1 + static_cast<int>(random() % std::min(2, trace->num_experts));
    const int passes = 2 + static_cast<int>(random() % 4);
    if (passes * trace->num_layers * k > 40) continue;
    for (int p = 0; p < passes; ++p) {
      std::vector<ExpertKey>& pass = trace->passes.emplace_back();
      for (int l = 0; l < trace->num_layers; ++l) {
        std::vector<int32_t> experts;
        while (static_cast<int>(experts.size()) < k) {
          const int32_t e = static_cast<int32_t>(random() % trace->num_experts);
          if (std::find(experts.begin(), experts.end(), e) == experts.end()) experts.push_back(e);
        }
        for (int32_t e : experts) pass.push_back(ExpertKey{l, e});
      }
    }
    const int64_t capacity = k + static_cast<int64_t>(random() % 4);
    absl::StatusOr<int64_t> optimum = BruteForceOptimalHits(*trace, capacity);
    ASSERT_TRUE(optimum.ok()) << optimum.status();
    SimulationOptions options;
    options.capacity_slots = capacity;
    const SimulationResult belady = SimulateNamed("belady", trace, options);
    ASSERT_EQ(belady.hits, *optimum) << "round " << round << ", capacity " << capacity;
    for (const std::string& name : EvictionPolicyNames()) {
      EXPECT_LE(SimulateNamed(name, trace, options).hits, belady.hits) << name << ", round " << round;
    }
    ++checked;
  }
  EXPECT_GT(checked, 60);
}

TEST(SimulateTest, EveryPolicyIsBoundedByBeladyOnASyntheticTrace) {
  SyntheticTraceOptions synth;
  synth.num_layers = 8;
  synth.num_experts = 32;
  synth.k = 4;
  synth.tokens = 300;
  synth.zipf_exponent = 1.0;
  synth.reuse_probability = 0.4;
  synth.cross_layer_probability = 0.4;
  auto trace = std::make_shared<const AccessTrace>(MakeSyntheticTrace(synth));
  for (int64_t capacity : {8, 32, 96}) {
    SimulationOptions options;
    options.capacity_slots = capacity;
    const int64_t belady = SimulateNamed("belady", trace, options).hits;
    for (const std::string& name : EvictionPolicyNames()) {
      EXPECT_LE(SimulateNamed(name, trace, options).hits, belady) << name << " at " << capacity;
    }
  }
}

TEST(BruteForceOptimalHitsTest, RefusesLargeTraces) {
  AccessTrace trace;
  trace.num_layers = 1;
  trace.num_experts = 2;
  trace.passes.assign(60, {{0, 0}});
  EXPECT_FALSE(BruteForceOptimalHits(trace, 1).ok());
}

TEST(ValidateAccessTraceTest, RejectsKeysOutsideTheModelAndDescendingLayers) {
  AccessTrace trace;
  trace.num_layers = 2;
  trace.num_experts = 3;
  trace.passes = {{{0, 1}, {1, 2}}};
  EXPECT_TRUE(ValidateAccessTrace(trace).ok());
  trace.passes = {{{0, 1}, {1, 3}}};
  EXPECT_FALSE(ValidateAccessTrace(trace).ok());
  trace.passes = {{{1, 1}, {0, 2}}};
  EXPECT_FALSE(ValidateAccessTrace(trace).ok());
}

}  // namespace
}  // namespace expertd::cache
