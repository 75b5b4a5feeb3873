// Every eviction policy through the same checks (parameterised over
// EvictionPolicyNames()), then hand-made event sequences with known victims.

#include "cache/eviction_policy.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cache/sim/policy_simulator.h"
#include "cache/sim/synthetic_trace.h"
#include "gtest/gtest.h"

namespace expertd::cache {
namespace {

using Keys = std::set<ExpertKey>;

std::shared_ptr<const AccessTrace> SyntheticFuture(int layers, int experts, int k, int tokens, uint64_t seed) {
  SyntheticTraceOptions options;
  options.num_layers = layers;
  options.num_experts = experts;
  options.k = k;
  options.tokens = tokens;
  options.seed = seed;
  options.zipf_exponent = 0.8;
  options.reuse_probability = 0.3;
  options.cross_layer_probability = 0.3;
  return std::make_shared<const AccessTrace>(MakeSyntheticTrace(options));
}

std::unique_ptr<EvictionPolicy> NewPolicy(const std::string& name, int layers, int experts,
                                          std::shared_ptr<const AccessTrace> future = nullptr) {
  PolicyOptions options;
  options.num_layers = layers;
  options.num_experts = experts;
  options.future = future != nullptr ? future : SyntheticFuture(layers, experts, 1, 1, 1);
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = MakeEvictionPolicy(name, options);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? *std::move(policy) : nullptr;
}

std::function<bool(const ExpertKey&)> AllBut(const Keys& excluded) {
  return [excluded](const ExpertKey& key) { return !excluded.contains(key); };
}

std::optional<ExpertKey> VictimOf(EvictionPolicy& policy) {
  return policy.PickVictim([](const ExpertKey&) { return true; });
}

class EveryPolicyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryPolicyTest, NameMatchesFactoryName) {
  auto policy = NewPolicy(GetParam(), 2, 4);
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(std::string(policy->name()), GetParam());
}

TEST_P(EveryPolicyTest, NoVictimWhenNothingIsResident) {
  auto policy = NewPolicy(GetParam(), 2, 4);
  ASSERT_NE(policy, nullptr);
  EXPECT_EQ(VictimOf(*policy), std::nullopt);
  policy->OnInsert({0, 1}, false);
  policy->OnRemove({0, 1});
  EXPECT_EQ(VictimOf(*policy), std::nullopt);
}

TEST_P(EveryPolicyTest, NoVictimWhenNothingIsEvictable) {
  auto policy = NewPolicy(GetParam(), 2, 4);
  ASSERT_NE(policy, nullptr);
  policy->OnPassStart();
  policy->OnLayerStart(0);
  policy->OnInsert({0, 0}, false);
  policy->OnInsert({1, 2}, true);
  EXPECT_EQ(policy->PickVictim([](const ExpertKey&) { return false; }), std::nullopt);
  EXPECT_EQ(policy->PickVictim(AllBut({{0, 0}, {1, 2}})), std::nullopt);
}

// Inserts a mix of keys, removes some (budget shrink), pins others, then
// drains: every victim must be resident, evictable and never a removed key,
// and draining must end exactly at the pinned keys.
TEST_P(EveryPolicyTest, DrainsExactlyTheEvictableResidentKeys) {
  constexpr int kLayers = 4, kExperts = 6;
  auto policy = NewPolicy(GetParam(), kLayers, kExperts, SyntheticFuture(kLayers, kExperts, 2, 8, 3));
  ASSERT_NE(policy, nullptr);
  std::mt19937 random(7);
  Keys resident, removed, pinned;
  policy->OnPassStart();
  for (int layer = 0; layer < kLayers; ++layer) {
    policy->OnLayerStart(layer);
    for (int expert = 0; expert < kExperts; ++expert) {
      if (random() % 3 == 0) continue;
      const ExpertKey key{layer, expert};
      policy->OnInsert(key, random() % 2 == 0);
      resident.insert(key);
    }
    if (layer == 1) policy->OnPassStart();
  }
  for (const ExpertKey& key : Keys(resident)) {
    if (random() % 4 == 0) {
      policy->OnRemove(key);
      resident.erase(key);
      removed.insert(key);
    } else if (random() % 4 == 0) {
      pinned.insert(key);
    } else if (random() % 3 == 0) {
      policy->OnHit(key);
    }
  }
  ASSERT_FALSE(removed.empty());
  ASSERT_FALSE(pinned.empty());
  while (std::optional<ExpertKey> victim = policy->PickVictim(AllBut(pinned))) {
    ASSERT_TRUE(resident.contains(*victim)) << victim->ToString() << " is not resident";
    ASSERT_FALSE(pinned.contains(*victim)) << victim->ToString() << " is pinned";
    ASSERT_FALSE(removed.contains(*victim)) << victim->ToString() << " was removed";
    policy->OnRemove(*victim);
    resident.erase(*victim);
  }
  EXPECT_EQ(resident, pinned);
}

// A long replay with every event kind, random pins and random removals; the
// test keeps its own model of what is resident and checks every victim.
TEST_P(EveryPolicyTest, RandomReplayNamesOnlyResidentEvictableKeys) {
  constexpr int kLayers = 6, kExperts = 10, kK = 3, kCapacity = 9;
  std::shared_ptr<const AccessTrace> trace = SyntheticFuture(kLayers, kExperts, kK, 300, 11);
  auto policy = NewPolicy(GetParam(), kLayers, kExperts, trace);
  ASSERT_NE(policy, nullptr);
  std::mt19937 random(5);
  Keys resident;
  std::vector<float> scores(kExperts);
  int64_t victims = 0;
  for (const std::vector<ExpertKey>& pass : trace->passes) {
    policy->OnPassStart();
    for (size_t begin = 0; begin < pass.size(); begin += kK) {
      const int layer = pass[begin].layer;
      policy->OnLayerStart(layer);
      for (float& score : scores) score = static_cast<float>(random() % 1000) / 1000.0f;
      policy->OnRouterScores(layer, scores);
      // Some resident keys are loading or being computed on.
      Keys pinned;
      for (const ExpertKey& key : resident) {
        if (random() % 5 == 0) pinned.insert(key);
      }
      // A prefetch of a key of the next layer.
      const ExpertKey prefetch{(layer + 1) % kLayers, static_cast<int32_t>(random() % kExperts)};
      if (resident.contains(prefetch)) {
        policy->OnPrefetchHit(prefetch);
      } else if (resident.size() < kCapacity) {
        policy->OnInsert(prefetch, true);
        resident.insert(prefetch);
      }
      for (size_t i = begin; i < begin + kK; ++i) {
        const ExpertKey& key = pass[i];
        policy->OnAccess(key);
        if (resident.contains(key)) {
          policy->OnHit(key);
        } else {
          if (resident.size() >= kCapacity) {
            std::optional<ExpertKey> victim = policy->PickVictim(AllBut(pinned));
            ASSERT_TRUE(victim.has_value());
            ASSERT_TRUE(resident.contains(*victim)) << victim->ToString();
            ASSERT_FALSE(pinned.contains(*victim)) << victim->ToString();
            policy->OnRemove(*victim);
            resident.erase(*victim);
            ++victims;
          }
          policy->OnInsert(key, false);
          resident.insert(key);
        }
        pinned.insert(key);
      }
      // A budget shrink now and then.
      if (random() % 10 == 0 && !resident.empty()) {
        auto it = resident.begin();
        std::advance(it, random() % resident.size());
        policy->OnRemove(*it);
        resident.erase(it);
      }
    }
  }
  EXPECT_GT(victims, 100);
}

// The same replay through the simulator, with and without (noisy) prefetch:
// the simulator refuses and counts any victim that is not resident and
// evictable.
TEST_P(EveryPolicyTest, SimulatorSeesNoInvalidVictims) {
  std::shared_ptr<const AccessTrace> trace = SyntheticFuture(5, 12, 2, 200, 21);
  for (double accuracy : {1.0, 0.6}) {
    for (PrefetchMode mode : {PrefetchMode::kNone, PrefetchMode::kOracleNextLayer}) {
      auto policy = NewPolicy(GetParam(), 5, 12, trace);
      ASSERT_NE(policy, nullptr);
      SimulationOptions options;
      options.capacity_slots = 7;
      options.prefetch = mode;
      options.prefetch_accuracy = accuracy;
      const SimulationResult result = Simulate(*trace, *policy, options);
      EXPECT_EQ(result.invalid_victims, 0);
      EXPECT_EQ(result.uncached_misses, 0);
      EXPECT_EQ(result.hits + result.misses, result.accesses);
      EXPECT_GT(result.evictions, 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, EveryPolicyTest, ::testing::ValuesIn(EvictionPolicyNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(MakeEvictionPolicyTest, RejectsUnknownName) {
  PolicyOptions options;
  options.num_layers = 2;
  options.num_experts = 4;
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = MakeEvictionPolicy("mru", options);
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(policy.status().message().find("least-stale"), absl::string_view::npos) << policy.status();
}

TEST(MakeEvictionPolicyTest, RejectsMissingModelShape) {
  PolicyOptions options;
  EXPECT_FALSE(MakeEvictionPolicy("lru", options).ok());
}

TEST(MakeEvictionPolicyTest, BeladyNeedsAMatchingFuture) {
  PolicyOptions options;
  options.num_layers = 2;
  options.num_experts = 4;
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = MakeEvictionPolicy("belady", options);
  ASSERT_FALSE(policy.ok());
  EXPECT_NE(policy.status().message().find("future"), absl::string_view::npos) << policy.status();

  auto future = std::make_shared<AccessTrace>();
  future->num_layers = 2;
  future->num_experts = 4;
  future->passes = {{{0, 1}, {1, 4}}};  // Expert 4 is outside the model.
  options.future = future;
  EXPECT_FALSE(MakeEvictionPolicy("belady", options).ok());
  future->passes = {{{0, 1}, {1, 3}}};
  EXPECT_TRUE(MakeEvictionPolicy("belady", options).ok());
  future->num_experts = 5;
  EXPECT_FALSE(MakeEvictionPolicy("belady", options).ok());
}

// --- Hand-made sequences with known victims. ---

TEST(LruTest, EvictsLeastRecentlyUsed) {
  auto lru = NewPolicy("lru", 2, 4);
  lru->OnInsert({0, 0}, false);
  lru->OnInsert({0, 1}, false);
  lru->OnInsert({1, 2}, true);
  lru->OnAccess({0, 0});
  lru->OnHit({0, 0});
  EXPECT_EQ(VictimOf(*lru), (ExpertKey{0, 1}));
  EXPECT_EQ(lru->PickVictim(AllBut({{0, 1}})), (ExpertKey{1, 2}));
  lru->OnHit({0, 1});
  EXPECT_EQ(VictimOf(*lru), (ExpertKey{1, 2}));
}

TEST(LfuTest, EvictsLeastFrequentThenOldest) {
  auto lfu = NewPolicy("lfu", 2, 4);
  const ExpertKey a{0, 0}, b{0, 1}, c{1, 0}, d{1, 1};
  lfu->OnInsert(a, false);
  lfu->OnInsert(b, false);
  lfu->OnInsert(c, false);
  lfu->OnHit(a);
  lfu->OnHit(a);
  lfu->OnHit(c);
  EXPECT_EQ(VictimOf(*lfu), b);  // Uses: a 3, b 1, c 2.
  lfu->OnRemove(b);
  lfu->OnInsert(d, true);
  EXPECT_EQ(VictimOf(*lfu), d);
  lfu->OnHit(d);
  // c and d both at 2: c was used longer ago.
  EXPECT_EQ(VictimOf(*lfu), c);
  // b's single earlier use comes back with it: 2 uses, and the most recent.
  lfu->OnInsert(b, false);
  EXPECT_EQ(VictimOf(*lfu), c);
  EXPECT_EQ(lfu->PickVictim(AllBut({c})), d);
}

TEST(LeastStaleTest, CurrentEntriesKeepTheirPlaceUntilThePassEnds) {
  auto policy = NewPolicy("least-stale", 2, 4);
  const ExpertKey a{0, 0}, b{0, 1}, c{1, 0};
  policy->OnPassStart();
  policy->OnInsert(a, false);
  policy->OnInsert(b, false);
  // Both current: FIFO of when they became current; a hit does not reorder.
  policy->OnHit(a);
  EXPECT_EQ(VictimOf(*policy), a);
  // The pass start turns both stale; a hit makes a current again, so b, the
  // only stale entry, goes first — ahead of c, inserted earlier in this pass.
  policy->OnPassStart();
  policy->OnInsert(c, false);
  policy->OnHit(a);
  EXPECT_EQ(VictimOf(*policy), b);
  // No evictable stale entry: the oldest current one, c (current before a).
  EXPECT_EQ(policy->PickVictim(AllBut({b})), c);
  EXPECT_EQ(policy->PickVictim(AllBut({b, c})), a);
}

TEST(LeastStaleTest, StaleEntriesQueueInTheOrderTheyBecameCurrent) {
  auto policy = NewPolicy("least-stale", 3, 4);
  const ExpertKey a{0, 0}, b{1, 0}, c{2, 0}, d{2, 1};
  policy->OnPassStart();
  policy->OnInsert(a, false);
  policy->OnInsert(b, false);
  policy->OnPassStart();
  policy->OnInsert(c, false);
  policy->OnHit(a);
  policy->OnPassStart();
  policy->OnInsert(d, false);
  // Stale queue: b (current in pass 1), then c and a (current in pass 2).
  EXPECT_EQ(VictimOf(*policy), b);
  EXPECT_EQ(policy->PickVictim(AllBut({b})), c);
  EXPECT_EQ(policy->PickVictim(AllBut({b, c})), a);
  EXPECT_EQ(policy->PickVictim(AllBut({a, b, c})), d);
}

// SpecMD's collision: layer 0's expert was prefetched, then used; the
// expert prefetched for layer 1 arrived between the two. LRU sees the
// just-used expert as the most recent and throws out the prefetched one;
// Least-Stale evicts the one whose use is over.
TEST(LeastStaleTest, ProtectsTheExpertPrefetchedForTheNextLayer) {
  const ExpertKey used{0, 3}, prefetched{1, 2};
  for (const char* name : {"least-stale", "lru"}) {
    auto policy = NewPolicy(name, 2, 4);
    policy->OnPassStart();
    policy->OnLayerStart(0);
    policy->OnInsert(used, true);
    policy->OnInsert(prefetched, true);
    policy->OnAccess(used);
    policy->OnHit(used);
    EXPECT_EQ(VictimOf(*policy), std::string(name) == "lru" ? prefetched : used) << name;
  }
}

// A prefetch hint for a resident expert: LRU leaves it at the cold end and
// evicts it; lru-hint refreshes it as a use, as least-stale makes it current.
TEST(LruHintTest, APrefetchHintRefreshesAResidentExpert) {
  const ExpertKey a{0, 0}, b{1, 0};
  for (const char* name : {"lru", "lru-hint"}) {
    auto policy = NewPolicy(name, 2, 4);
    policy->OnInsert(a, false);
    policy->OnInsert(b, false);
    policy->OnPrefetchHit(a);
    EXPECT_EQ(VictimOf(*policy), std::string(name) == "lru" ? a : b) << name;
  }
  // Otherwise it is LRU: a use refreshes, the least recent goes.
  auto policy = NewPolicy("lru-hint", 2, 4);
  policy->OnInsert(a, false);
  policy->OnInsert(b, false);
  policy->OnAccess(a);
  policy->OnHit(a);
  EXPECT_EQ(VictimOf(*policy), b);
  policy->OnRemove(b);
  EXPECT_EQ(VictimOf(*policy), a);
}

TEST(LeastStaleTest, PrefetchOfAResidentStaleEntryMakesItCurrent) {
  auto policy = NewPolicy("least-stale", 2, 4);
  const ExpertKey a{0, 0}, b{1, 0};
  policy->OnInsert(a, false);
  policy->OnInsert(b, false);
  policy->OnPassStart();
  policy->OnPrefetchHit(a);
  EXPECT_EQ(VictimOf(*policy), b);
}

TEST(LayerDistanceTest, EvictsTheStaleLayerFurthestAheadInTheCycle) {
  auto policy = NewPolicy("layer-distance", 4, 4);
  const ExpertKey l0{0, 0}, l1{1, 0}, l2{2, 0}, l3{3, 0};
  policy->OnPassStart();
  for (const ExpertKey& key : {l0, l1, l2, l3}) policy->OnInsert(key, false);
  policy->OnPassStart();
  policy->OnLayerStart(2);
  // From layer 2 the cycle reaches 3, 0, 1: layer 1 is the furthest away.
  EXPECT_EQ(VictimOf(*policy), l1);
  EXPECT_EQ(policy->PickVictim(AllBut({l1})), l0);
  EXPECT_EQ(policy->PickVictim(AllBut({l1, l0})), l3);
  EXPECT_EQ(policy->PickVictim(AllBut({l1, l0, l3})), l2);
  policy->OnLayerStart(3);
  EXPECT_EQ(VictimOf(*policy), l2);
}

TEST(LayerDistanceTest, StaleBeforeCurrentThenLowerRouterScoreThenAge) {
  auto policy = NewPolicy("layer-distance", 4, 4);
  const ExpertKey a{1, 0}, b{1, 1}, c{1, 2}, fresh{0, 3};
  policy->OnPassStart();
  policy->OnInsert(a, false);
  policy->OnInsert(b, false);
  policy->OnInsert(c, false);
  policy->OnPassStart();
  policy->OnLayerStart(3);
  policy->OnInsert(fresh, false);  // Current.
  // Same layer, no scores: the oldest.
  EXPECT_EQ(VictimOf(*policy), a);
  policy->OnRouterScores(1, std::vector<float>{0.5f, 0.1f, 0.3f, 0.1f});
  EXPECT_EQ(VictimOf(*policy), b);
  EXPECT_EQ(policy->PickVictim(AllBut({b})), c);
  // Only the current entry is evictable.
  EXPECT_EQ(policy->PickVictim(AllBut({a, b, c})), fresh);
  // A hit makes a current: among current entries layer 1 is further than 0.
  policy->OnHit(a);
  EXPECT_EQ(policy->PickVictim(AllBut({b, c})), a);
}

TEST(BeladyTest, EvictsTheKeyUsedFurthestInTheFuture) {
  auto future = std::make_shared<AccessTrace>();
  future->num_layers = 1;
  future->num_experts = 4;
  const ExpertKey a{0, 0}, b{0, 1}, c{0, 2}, d{0, 3};
  future->passes = {{a, b, c}, {b, a}, {c}, {a}};
  auto belady = NewPolicy("belady", 1, 4, future);
  for (const ExpertKey& key : {a, b, c}) {
    belady->OnAccess(key);
    belady->OnInsert(key, false);
  }
  // Next uses: b at 3, a at 4, c at 5.
  EXPECT_EQ(VictimOf(*belady), c);
  belady->OnAccess(b);
  belady->OnHit(b);
  // b is never used again.
  EXPECT_EQ(VictimOf(*belady), b);
  EXPECT_EQ(belady->PickVictim(AllBut({b})), c);
  belady->OnAccess(a);
  belady->OnHit(a);
  // a's next use (6) is now after c's (5); d, prefetched, is never used.
  belady->OnInsert(d, true);
  EXPECT_TRUE(VictimOf(*belady) == b || VictimOf(*belady) == d);
  EXPECT_EQ(belady->PickVictim(AllBut({b, d})), a);
}

}  // namespace
}  // namespace expertd::cache
