#include "predictor/prefetch_scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <utility>
#include <vector>

namespace expertd::predictor {
namespace {

using Key = std::pair<int, int>;  // (layer, expert)

// Stands in for ExpertCache: issue() starts a read unless the expert is
// resident or already loading; the test completes reads by hand.
struct FakeCache {
  std::set<Key> resident;
  std::vector<Key> loading;
  std::vector<Key> reads;  // every read started, in order
  size_t max_loading = 0;

  bool Issue(int layer, int expert) {
    const Key key{layer, expert};
    if (resident.contains(key) || std::find(loading.begin(), loading.end(), key) != loading.end()) return false;
    loading.push_back(key);
    reads.push_back(key);
    max_loading = std::max(max_loading, loading.size());
    return true;
  }
  void CompleteOldest(size_t n) {
    for (size_t i = 0; i < n && !loading.empty(); ++i) {
      resident.insert(loading.front());
      loading.erase(loading.begin());
    }
  }
};

PrefetchScheduler MakeScheduler(FakeCache* cache, int max_in_flight, int fixed_budget) {
  PrefetchSchedulerOptions options;
  options.max_in_flight = max_in_flight;
  options.fixed_budget_per_layer = fixed_budget;
  return PrefetchScheduler(
      options, [cache](int layer, int expert) { return cache->Issue(layer, expert); },
      [cache] { return static_cast<int>(cache->loading.size()); });
}

LayerPrediction Prediction(int layer, std::vector<std::pair<int32_t, float>> experts) {
  LayerPrediction p;
  p.layer = layer;
  p.distance = 1;
  p.experts = std::move(experts);
  return p;
}

TEST(PrefetchSchedulerTest, NeverExceedsMaxInFlight) {
  FakeCache cache;
  PrefetchScheduler s = MakeScheduler(&cache, /*max_in_flight=*/3, /*fixed_budget=*/10);
  s.BeginPass();
  s.BeginLayer(0);
  std::vector<std::pair<int32_t, float>> experts;
  for (int e = 0; e < 8; ++e) experts.emplace_back(e, 1.0f - 0.1f * e);
  s.Submit(std::vector<LayerPrediction>{Prediction(1, experts)});
  s.Pump();
  EXPECT_EQ(cache.reads.size(), 3u);
  s.Pump();  // still full
  EXPECT_EQ(cache.reads.size(), 3u);
  cache.CompleteOldest(2);
  s.Pump();
  EXPECT_EQ(cache.reads.size(), 5u);
  cache.CompleteOldest(3);
  s.Pump();
  EXPECT_EQ(cache.reads.size(), 8u);
  EXPECT_LE(cache.max_loading, 3u);
  EXPECT_EQ(s.stats().issued, 8u);
  EXPECT_EQ(s.queued_now(), 0u);
}

TEST(PrefetchSchedulerTest, BudgetPerLayerNearestLayerFirstThenScore) {
  FakeCache cache;
  PrefetchScheduler s = MakeScheduler(&cache, 100, /*fixed_budget=*/2);
  s.BeginPass();
  s.BeginLayer(0);
  s.Submit(std::vector<LayerPrediction>{
      Prediction(2, {{7, 0.9f}, {8, 0.8f}, {9, 0.7f}}),
      // Out of score order on purpose; 3 appears twice.
      Prediction(1, {{1, 0.1f}, {2, 0.5f}, {3, 0.3f}, {3, 0.3f}, {4, 0.05f}}),
  });
  EXPECT_EQ(s.stats().queued, 7u);
  s.Pump();
  const std::vector<Key> expected = {{1, 2}, {1, 3}, {2, 7}, {2, 8}};
  EXPECT_EQ(cache.reads, expected);
  // Over-budget items wait, and go stale when their layer starts.
  cache.CompleteOldest(4);
  s.Pump();
  EXPECT_EQ(cache.reads.size(), 4u);
  s.BeginLayer(2);
  EXPECT_EQ(s.stats().dropped_stale, 3u);
  EXPECT_EQ(s.queued_now(), 0u);

  // A new pass gets a fresh budget.
  s.BeginPass();
  s.BeginLayer(0);
  s.Submit(std::vector<LayerPrediction>{Prediction(1, {{5, 1.0f}, {6, 0.5f}, {0, 0.2f}})});
  s.Pump();
  EXPECT_EQ(cache.reads.size(), 6u);
  EXPECT_EQ(cache.reads[4], Key(1, 5));
  EXPECT_EQ(cache.reads[5], Key(1, 6));
}

// Decode scores are probabilities: below min_score nothing is queued,
// wherever it stands in the list; prefill's counts (>= 1) always pass.
TEST(PrefetchSchedulerTest, PredictionsBelowTheMinimumScoreAreNotQueued) {
  FakeCache cache;
  PrefetchSchedulerOptions options;
  options.max_in_flight = 100;
  options.fixed_budget_per_layer = 8;
  options.min_score = 0.25f;
  PrefetchScheduler s(
      options, [&cache](int layer, int expert) { return cache.Issue(layer, expert); },
      [&cache] { return static_cast<int>(cache.loading.size()); });
  s.BeginPass();
  s.BeginLayer(0);
  s.Submit(std::vector<LayerPrediction>{Prediction(1, {{1, 0.1f}, {2, 0.5f}, {3, 0.25f}, {4, 0.2f}}),
                                        Prediction(2, {{5, 3.0f}, {6, 1.0f}})});
  EXPECT_EQ(s.stats().queued, 4u);
  EXPECT_EQ(s.stats().below_min_score, 2u);
  s.Pump();
  const std::vector<Key> expected = {{1, 2}, {1, 3}, {2, 5}, {2, 6}};
  EXPECT_EQ(cache.reads, expected);
}

TEST(PrefetchSchedulerTest, BeginLayerDropsStaleQueuedItems) {
  FakeCache cache;
  PrefetchScheduler s = MakeScheduler(&cache, /*max_in_flight=*/1, 10);
  s.BeginPass();
  s.BeginLayer(0);
  s.Submit(std::vector<LayerPrediction>{Prediction(1, {{0, 0.9f}, {1, 0.5f}, {2, 0.4f}}),
                                        Prediction(2, {{3, 0.9f}, {4, 0.8f}})});
  s.Pump();
  ASSERT_EQ(cache.reads.size(), 1u);
  EXPECT_EQ(cache.reads[0], Key(1, 0));
  s.BeginLayer(1);
  EXPECT_EQ(s.stats().dropped_stale, 2u);
  EXPECT_EQ(s.queued_now(), 2u);
  // Predictions for a layer already running are ignored.
  s.Submit(std::vector<LayerPrediction>{Prediction(1, {{5, 1.0f}})});
  EXPECT_EQ(s.queued_now(), 2u);
  cache.CompleteOldest(1);
  s.Pump();
  ASSERT_EQ(cache.reads.size(), 2u);
  EXPECT_EQ(cache.reads[1], Key(2, 3));
  s.BeginPass();
  EXPECT_EQ(s.stats().dropped_stale, 3u);
}

TEST(PrefetchSchedulerTest, ResidentOrLoadingIssuesNoReadAndUsesNoBudget) {
  FakeCache cache;
  cache.resident.insert({1, 5});
  cache.loading.push_back({1, 6});  // a demand load already running
  PrefetchScheduler s = MakeScheduler(&cache, 10, /*fixed_budget=*/1);
  s.BeginPass();
  s.BeginLayer(0);
  s.Submit(std::vector<LayerPrediction>{Prediction(1, {{5, 0.9f}, {6, 0.8f}, {7, 0.1f}})});
  s.Pump();
  EXPECT_EQ(s.stats().skipped_resident, 2u);
  EXPECT_EQ(s.stats().issued, 1u);
  ASSERT_EQ(cache.reads.size(), 1u);
  EXPECT_EQ(cache.reads[0], Key(1, 7));
  // Already tried this pass: not queued again.
  s.Submit(std::vector<LayerPrediction>{Prediction(1, {{5, 0.9f}, {7, 0.5f}})});
  EXPECT_EQ(s.queued_now(), 0u);
}

TEST(PrefetchSchedulerTest, NewerPredictionReplacesQueuedOnes) {
  FakeCache cache;
  PrefetchScheduler s = MakeScheduler(&cache, /*max_in_flight=*/0, 4);  // nothing issues
  s.BeginPass();
  s.BeginLayer(0);
  s.Submit(std::vector<LayerPrediction>{Prediction(2, {{1, 0.9f}, {2, 0.8f}})});
  s.BeginLayer(1);
  s.Submit(std::vector<LayerPrediction>{Prediction(2, {{3, 0.9f}})});
  EXPECT_EQ(s.stats().replaced, 2u);
  EXPECT_EQ(s.queued_now(), 1u);
  s.Pump();
  EXPECT_TRUE(cache.reads.empty());
}

// The budget is the loads the file delivers during one layer: layer time x
// throughput with loads overlapping / expert bytes.
TEST(PrefetchSchedulerTest, BudgetFromMeasurements) {
  FakeCache cache;
  PrefetchSchedulerOptions options;
  options.num_experts = 8;
  options.expert_bytes = 1'000'000;
  PrefetchScheduler s(options, [&cache](int l, int e) { return cache.Issue(l, e); }, [] { return 0; });
  EXPECT_EQ(s.per_layer_budget(), 1);  // before any measurement
  s.RecordLayerCompute(0.010);
  EXPECT_EQ(s.per_layer_budget(), 1);  // no throughput yet
  s.RecordLoadThroughput(250e6);       // an expert every 4 ms
  EXPECT_EQ(s.per_layer_budget(), 2);  // floor(10 ms / 4 ms)
  s.RecordLoadThroughput(250e6);
  EXPECT_EQ(s.per_layer_budget(), 2);
  s.RecordLayerCompute(0.050);  // average moves to 20 ms with weight 0.25
  EXPECT_EQ(s.per_layer_budget(), 5);
  EXPECT_FALSE(s.budget_is_fixed());
  EXPECT_DOUBLE_EQ(s.mean_load_bytes_per_second(), 250e6);

  PrefetchScheduler slow_io(options, [](int, int) { return true; }, [] { return 0; });
  slow_io.RecordLayerCompute(0.001);
  slow_io.RecordLoadThroughput(250e6);
  EXPECT_EQ(slow_io.per_layer_budget(), 1);
  PrefetchScheduler fast_io(options, [](int, int) { return true; }, [] { return 0; });
  fast_io.RecordLayerCompute(1.0);
  fast_io.RecordLoadThroughput(1e9);
  EXPECT_EQ(fast_io.per_layer_budget(), 8);  // clamped to num_experts

  options.fixed_budget_per_layer = 3;
  PrefetchScheduler fixed(options, [](int, int) { return true; }, [] { return 0; });
  fixed.RecordLayerCompute(1.0);
  fixed.RecordLoadThroughput(1e9);
  EXPECT_EQ(fixed.per_layer_budget(), 3);
  EXPECT_TRUE(fixed.budget_is_fixed());
}

// Eight loads of 4 ms each in flight together for 5 ms: one load's latency
// (4 ms) says one per 10 ms layer fits twice, but the file delivered eight in
// 5 ms: sixteen per layer, clamped to the layer's experts.
TEST(PrefetchSchedulerTest, OverlappingLoadsRaiseTheBudgetBeyondLatency) {
  PrefetchSchedulerOptions options;
  options.num_experts = 64;
  options.expert_bytes = 1'000'000;
  PrefetchScheduler s(options, [](int, int) { return true; }, [] { return 0; });
  s.RecordLayerCompute(0.010);
  s.RecordLoadThroughput(8 * 1e6 / 0.005);
  EXPECT_EQ(s.per_layer_budget(), 16);
  // A cache with room for 6 reads beside the running layer caps it there.
  options.max_budget_per_layer = 6;
  PrefetchScheduler small_cache(options, [](int, int) { return true; }, [] { return 0; });
  small_cache.RecordLayerCompute(0.010);
  small_cache.RecordLoadThroughput(8 * 1e6 / 0.005);
  EXPECT_EQ(small_cache.per_layer_budget(), 6);
  // A fixed budget is the operator's: not capped.
  options.fixed_budget_per_layer = 9;
  EXPECT_EQ(PrefetchScheduler(options, [](int, int) { return true; }, [] { return 0; }).per_layer_budget(), 9);
}

}  // namespace
}  // namespace expertd::predictor
