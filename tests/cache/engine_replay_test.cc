// The engine replay (cache/sim/engine_replay.h): recorded predictions under
// the recorded budget, loads that take time, hit / hidden / miss counted as
// the engine's cache counts them.

#include "cache/sim/engine_replay.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cache/sim/synthetic_trace.h"
#include "cache/sim/trace_file.h"
#include "gtest/gtest.h"

namespace expertd::cache {
namespace {

constexpr uint64_t kExpertBytes = 1000;

TracePrediction Predict(int32_t at, int32_t for_layer, int32_t budget, std::vector<int32_t> experts,
                        std::vector<float> scores = {}) {
  TracePrediction p;
  p.at_layer = at;
  p.for_layer = for_layer;
  p.budget = budget;
  p.experts = std::move(experts);
  p.scores = std::move(scores);
  return p;
}

// A decode step of one row routing layer 0 to `first` and layer 1 to
// `second`, with the given predictions and compute times.
TraceStep DecodeStep(std::vector<int32_t> first, std::vector<int32_t> second,
                     std::vector<TracePrediction> predictions = {}) {
  TraceStep step;
  step.rows = 1;
  step.records = {{0, 0, std::move(first), {}}, {0, 1, std::move(second), {}}};
  step.predictions = std::move(predictions);
  return step;
}

LoadedTrace Load(const std::vector<TraceStep>& steps, int layers = 2, int experts = 8, int k = 2) {
  TraceIoFigures io;
  io.expert_bytes = kExpertBytes;
  absl::StatusOr<std::string> text = FormatStepTrace(layers, experts, k, io, steps);
  EXPECT_TRUE(text.ok()) << text.status();
  absl::StatusOr<LoadedTrace> loaded = ParseTrace(*text, "test");
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return *loaded;
}

// Loads of 100 us latency and 1000 bytes at 1e8 B/s (10 us): 110 us each
// when alone.
ReplayOptions SlowLoads(double compute_us) {
  ReplayOptions options;
  options.capacity_slots = 16;
  options.io.latency_us = 100;
  options.io.bytes_per_second = 1e8;
  options.io.queue_depth = 4;
  options.compute_us_per_layer = compute_us;
  return options;
}

TEST(EngineReplayTest, APrefetchThatLandsLateIsAMissThatStallsForTheRest) {
  // Step 0 loads layer 0's experts; step 1 hits them, and at layer 0 the
  // predictor names expert 5 of layer 1 (correct), read from the start of
  // step 1 (T1): it lands at T1 + 110.
  const LoadedTrace trace = Load({DecodeStep({0, 1}, {2, 3}),
                                  DecodeStep({0, 1}, {5, 6}, {Predict(0, 1, 1, {5}, {0.9f})})});
  // 200 us of layer compute: layer 1 of step 1 starts at T1 + 200, after
  // the prefetch landed.
  absl::StatusOr<ReplayResult> in_time = ReplayEngineTrace(trace, "lru", SlowLoads(200));
  ASSERT_TRUE(in_time.ok()) << in_time.status();
  EXPECT_EQ(in_time->accesses, 8);
  EXPECT_EQ(in_time->hits, 2);
  EXPECT_EQ(in_time->hidden, 1);
  EXPECT_EQ(in_time->misses, 5);
  EXPECT_EQ(in_time->late_prefetches, 0);
  EXPECT_EQ(in_time->prefetch_loads, 1);

  // 20 us: layer 1 starts at T1 + 20, before the prefetch lands: a late
  // prefetch is a miss.
  absl::StatusOr<ReplayResult> late = ReplayEngineTrace(trace, "lru", SlowLoads(20));
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->hits, 2);
  EXPECT_EQ(late->hidden, 0);
  EXPECT_EQ(late->misses, 6);
  EXPECT_EQ(late->late_prefetches, 1);
  // Stalls. Step 0: layer 0's two loads share the bandwidth and land
  // together at 100 + 20 = 120 (one stall of 120), layer 1's likewise (120).
  // Step 1: the late prefetch stalls for its remaining 110 - 20 = 90 us;
  // expert 6, asked for at T1 + 20, lands at T1 + 130, 10 us after compute
  // reaches it.
  EXPECT_NEAR(late->stall_us, 120 + 120 + 90 + 10, 1e-6);
  EXPECT_NEAR(late->stall_us_per_token(), late->stall_us / 2, 1e-6);
}

// Two loads issued together: sharing the bandwidth they land together
// (100 + 20 us); one transfer at a time, the first lands at 110 and the
// second at 120. Compute reaches the second expert 1 us after the first
// lands, so the stalls tell the landing times apart.
TEST(EngineReplayTest, ParallelTransfersDecideWhetherLoadsLandTogetherOrInTurn) {
  const LoadedTrace trace = Load({DecodeStep({0, 1}, {2, 3})});
  ReplayOptions options = SlowLoads(2);  // 1 us per expert
  options.io.parallel_transfers = 0;
  absl::StatusOr<ReplayResult> shared = ReplayEngineTrace(trace, "lru", options);
  ASSERT_TRUE(shared.ok()) << shared.status();
  // Layer 0: waits 120, then 0; layer 1 (from 122): 120, then 0.
  EXPECT_NEAR(shared->stall_us, 120 + 120, 1e-6);
  options.io.parallel_transfers = 1;
  absl::StatusOr<ReplayResult> in_turn = ReplayEngineTrace(trace, "lru", options);
  ASSERT_TRUE(in_turn.ok()) << in_turn.status();
  // Layer 0: waits 110, then 120 - 111 = 9; layer 1 (from 121) likewise.
  EXPECT_NEAR(in_turn->stall_us, 110 + 9 + 110 + 9, 1e-6);
}

TEST(EngineReplayTest, PrefetchesStayWithinTheRecordedBudgetUnlessOverridden) {
  std::vector<TraceStep> steps;
  for (int i = 0; i < 4; ++i) {
    steps.push_back(DecodeStep({0, 1}, {4 + i % 2, 6},
                               {Predict(0, 1, 1, {4, 5, 6, 7}, {0.4f, 0.3f, 0.2f, 0.1f})}));
  }
  const LoadedTrace trace = Load(steps);
  ReplayOptions options = SlowLoads(1000);  // every prefetch lands in time
  absl::StatusOr<ReplayResult> one = ReplayEngineTrace(trace, "lru", options);
  ASSERT_TRUE(one.ok()) << one.status();
  // Budget 1: step 0 reads expert 4; later steps find it resident (no
  // budget spent) and read the next candidate: 5, then 7 (6 was loaded on
  // demand at step 0).
  EXPECT_EQ(one->prefetch_loads, 3);
  options.budget_per_layer = 4;
  absl::StatusOr<ReplayResult> four = ReplayEngineTrace(trace, "lru", options);
  ASSERT_TRUE(four.ok()) << four.status();
  EXPECT_EQ(four->prefetch_loads, 4) << "all four candidates at the first step, none after";
  EXPECT_GT(four->hidden, one->hidden);
  options.prefetch = false;
  absl::StatusOr<ReplayResult> none = ReplayEngineTrace(trace, "lru", options);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->prefetch_loads, 0);
  EXPECT_EQ(none->hidden, 0);
}

// The next step's first layer, predicted at the last layer: its read lands
// during the recorded gap between the steps, or, with no gap, is late.
TEST(EngineReplayTest, TheNextStepsPrefetchUsesTheRecordedGap) {
  TracePrediction next = Predict(1, 0, 2, {4, 5});
  next.next_step = true;
  // Step 1 hits everywhere, so its layers end right after the prediction.
  std::vector<TraceStep> steps = {DecodeStep({0, 1}, {2, 3}), DecodeStep({0, 1}, {2, 3}, {next}),
                                  DecodeStep({4, 5}, {2, 3})};
  steps[2].gap_us = 500;  // more than the reads' 120 us
  const LoadedTrace trace = Load(steps);
  absl::StatusOr<ReplayResult> recorded = ReplayEngineTrace(trace, "lru", SlowLoads(2));
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  EXPECT_EQ(recorded->prefetch_loads, 2);
  EXPECT_EQ(recorded->hidden, 2);
  EXPECT_EQ(recorded->late_prefetches, 0);
  ReplayOptions no_gap = SlowLoads(2);
  no_gap.step_gap_us = 0;
  absl::StatusOr<ReplayResult> without = ReplayEngineTrace(trace, "lru", no_gap);
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_EQ(without->hidden, 0);
  EXPECT_EQ(without->late_prefetches, 2);
}

TEST(EngineReplayTest, AStepOfSeveralRowsAsksForEachExpertOnce) {
  TraceStep prefill;
  prefill.rows = 3;
  prefill.records = {{0, 0, {0, 1}, {}}, {1, 0, {1, 2}, {}}, {2, 0, {2, 0}, {}}, {0, 1, {3, 4}, {}},
                     {1, 1, {3, 4}, {}}, {2, 1, {3, 5}, {}}};
  const LoadedTrace trace = Load({prefill, DecodeStep({0, 1}, {3, 4})});
  absl::StatusOr<ReplayResult> result = ReplayEngineTrace(trace, "lru", SlowLoads(10));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->steps, 2);
  EXPECT_EQ(result->rows, 4);
  EXPECT_EQ(result->accesses, 3 + 3 + 2 + 2);
  EXPECT_EQ(result->misses, 6);
  EXPECT_EQ(result->hits, 4) << "the decode step finds the prefill's experts";
}

TEST(EngineReplayTest, CapacityBelowOneLayerStepIsRefusedAndBytesAreNeeded) {
  const LoadedTrace trace = Load({DecodeStep({0, 1}, {3, 4})});
  ReplayOptions options = SlowLoads(10);
  options.capacity_slots = 1;
  absl::StatusOr<ReplayResult> small = ReplayEngineTrace(trace, "lru", options);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("fewer than the 2"), std::string::npos) << small.status();
  LoadedTrace without_bytes = trace;
  without_bytes.io.expert_bytes = 0;
  absl::StatusOr<ReplayResult> no_bytes = ReplayEngineTrace(without_bytes, "lru", SlowLoads(10));
  ASSERT_FALSE(no_bytes.ok());
  EXPECT_NE(no_bytes.status().message().find("expert-bytes"), std::string::npos) << no_bytes.status();
}

// A synthetic trace with an imperfect predictor recorded in it: every
// policy's accesses split exactly into hit + hidden + miss, and Belady with
// the same prefetches is the bound.
TEST(EngineReplayTest, BeladyWithTheSamePrefetchesBoundsEveryPolicy) {
  SyntheticTraceOptions synth;
  synth.num_layers = 4;
  synth.num_experts = 16;
  synth.k = 4;
  synth.tokens = 300;
  synth.zipf_exponent = 0.8;
  synth.reuse_probability = 0.3;
  const AccessTrace access = MakeSyntheticTrace(synth);
  std::vector<TraceStep> steps;
  for (size_t p = 0; p < access.passes.size(); ++p) {
    TraceStep step;
    step.rows = 1;
    for (size_t i = 0; i < access.passes[p].size(); i += synth.k) {
      TraceRecord record{0, access.passes[p][i].layer, {}, {}};
      for (int j = 0; j < synth.k; ++j) record.experts.push_back(access.passes[p][i + j].expert);
      step.records.push_back(record);
    }
    // "Predict" each next layer as its true first two experts plus a wrong
    // one, budget 2.
    for (size_t r = 0; r + 1 < step.records.size(); ++r) {
      const TraceRecord& next = step.records[r + 1];
      int32_t wrong = 0;
      while (std::find(next.experts.begin(), next.experts.end(), wrong) != next.experts.end()) ++wrong;
      step.predictions.push_back(
          Predict(step.records[r].layer, next.layer, 2, {wrong, next.experts[0], next.experts[1]}));
    }
    steps.push_back(std::move(step));
  }
  const LoadedTrace trace = Load(steps, 4, 16, 4);
  ReplayOptions options = SlowLoads(200);
  options.capacity_slots = 16;  // 25%
  absl::StatusOr<ReplayResult> belady = ReplayEngineTrace(trace, "belady", options);
  ASSERT_TRUE(belady.ok()) << belady.status();
  for (const char* policy : {"lru", "lru-hint", "least-stale", "layer-distance"}) {
    absl::StatusOr<ReplayResult> r = ReplayEngineTrace(trace, policy, options);
    ASSERT_TRUE(r.ok()) << policy << ": " << r.status();
    EXPECT_EQ(r->hits + r->hidden + r->misses, r->accesses) << policy;
    EXPECT_EQ(r->accesses, 300 * 4 * 4) << policy;
    EXPECT_GT(r->hidden, 0) << policy;
    // Belady's MIN is optimal for demand paging; with prefetches and load
    // times it is the bound in practice, not in theory: a small slack.
    EXPECT_LE(r->ready_rate(), belady->ready_rate() + 0.02) << policy;
  }
}

// A step's recorded router scores (every expert of the layer, as the
// engine gave them to its policies) survive the file and reach the policy
// at their layer, before the layer's accesses; --ignore-scores
// (router_scores false) keeps them from it.
class ScoreRecordingPolicy : public EvictionPolicy {
 public:
  absl::string_view name() const override { return "score-recording"; }
  void OnAccess(const ExpertKey& key) override { log.push_back(absl::StrCat("access ", key.layer, "/", key.expert)); }
  void OnRouterScores(int layer, absl::Span<const float> scores) override {
    std::string line = absl::StrCat("scores ", layer);
    for (float score : scores) absl::StrAppend(&line, " ", score);
    log.push_back(line);
  }
  void OnHit(const ExpertKey&) override {}
  void OnInsert(const ExpertKey& key, bool) override { resident.push_back(key); }
  void OnRemove(const ExpertKey& key) override { std::erase(resident, key); }
  std::optional<ExpertKey> PickVictim(const std::function<bool(const ExpertKey&)>& evictable) override {
    for (const ExpertKey& key : resident) {
      if (evictable(key)) return key;
    }
    return std::nullopt;
  }
  std::vector<std::string> log;
  std::vector<ExpertKey> resident;
};

TEST(EngineReplayTest, RecordedRouterScoresReachThePolicyAtTheirLayer) {
  TraceStep step = DecodeStep({3, 1}, {0, 2});
  step.router_scores = {{.layer = 0, .scores = {0.0625f, 0.25f, 0, 0.5f}},
                        {.layer = 1, .scores = {0.5f, 0, 0.375f, 0.125f}}};
  const LoadedTrace trace = Load({step}, 2, 4, 2);
  ASSERT_EQ(trace.steps.size(), 1u);
  ASSERT_EQ(trace.steps[0].router_scores.size(), 2u);
  EXPECT_EQ(trace.steps[0].router_scores[1].scores, (std::vector<float>{0.5f, 0, 0.375f, 0.125f}));
  for (bool use : {true, false}) {
    ScoreRecordingPolicy policy;
    ReplayOptions options = SlowLoads(10);
    options.router_scores = use;
    ASSERT_TRUE(ReplayEngineTrace(trace, policy, options).ok());
    if (use) {
      EXPECT_EQ(policy.log, (std::vector<std::string>{"scores 0 0.0625 0.25 0 0.5", "access 0/1", "access 0/3",
                                                       "scores 1 0.5 0 0.375 0.125", "access 1/0", "access 1/2"}));
    } else {
      EXPECT_EQ(policy.log, (std::vector<std::string>{"access 0/1", "access 0/3", "access 1/0", "access 1/2"}));
    }
  }
}

TEST(EngineReplayTest, RouterScoresOfTheWrongShapeAreRefused) {
  TraceStep step = DecodeStep({3, 1}, {0, 2});
  TraceIoFigures io;
  step.router_scores = {{.layer = 0, .scores = {0.5f, 0.5f}}};
  absl::StatusOr<std::string> text = FormatStepTrace(2, 4, 2, io, {step});
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("have 2 values; the trace's layers have 4 experts"), absl::string_view::npos)
      << text.status();
  step.router_scores = {{.layer = 0, .scores = {0.5f, -1, 0, 0}}};
  EXPECT_FALSE(FormatStepTrace(2, 4, 2, io, {step}).ok());
  const std::string bad = "expertd-trace v2 layers=2 experts=4 k=2\nstep rows=1\n0 0 3 1\nscores 0 0.5 x 0 0\n";
  absl::StatusOr<LoadedTrace> loaded = ParseTrace(bad, "t");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("t:4: router score \"x\" is not a number"), absl::string_view::npos)
      << loaded.status();
}

// SpecMD's collision miss: a miss on an expert evicted earlier in the same
// step. Two rows route layer 1 to four experts through a 3-slot cache, so
// the prefetch of layer 2's expert 5 (landed during layer 0) is evicted
// before layer 2 asks for it: one collision. Without the prefetch, no
// expert is asked for twice in a step and none collides.
TEST(EngineReplayTest, CountsMissesOnExpertsEvictedInTheSameStep) {
  TraceStep step;
  step.rows = 2;
  step.records = {{0, 0, {0, 1}, {}}, {1, 0, {0, 1}, {}}, {0, 1, {2, 3}, {}},
                  {1, 1, {4, 6}, {}}, {0, 2, {5, 7}, {}}, {1, 2, {5, 7}, {}}};
  step.predictions = {Predict(0, 2, 1, {5})};
  const LoadedTrace trace = Load({step}, 3, 8, 2);
  for (bool prefetch : {true, false}) {
    ReplayOptions options = SlowLoads(1000);  // the prefetch lands during layer 0
    options.capacity_slots = 3;
    options.prefetch = prefetch;
    absl::StatusOr<ReplayResult> r = ReplayEngineTrace(trace, "lru", options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->prefetch_loads, prefetch ? 1 : 0);
    EXPECT_EQ(r->collision_misses, prefetch ? 1 : 0) << "prefetch " << prefetch;
    EXPECT_EQ(r->misses, 8);  // every distinct expert of the step, 5 included
  }
}

// Layer 0 always routes to {0,1}; layer 1 cycles through {2,3}, {4,5},
// {6,7}; 9 slots hold those 8 and one guess. Each step the predictor names
// a different wrong expert (8 + step) for layer 1. The policy alone (LRU)
// keeps each wrong guess as recently used and evicts the layer-1 pair due
// next, so the cycle misses on; recycling a wrong guess once layer 1 has
// run without it leaves the cycle cached after the first lap (its 8 loads).
TEST(EngineReplayTest, RecyclingWrongGuessesFirstKeepsTheWorkingSet) {
  std::vector<TraceStep> steps;
  for (int i = 0; i < 12; ++i) {
    const int32_t pair = 2 + 2 * (i % 3);
    steps.push_back(DecodeStep({0, 1}, {pair, pair + 1}, {Predict(0, 1, 1, {8 + i}, {0.9f})}));
  }
  const LoadedTrace trace = Load(steps, 2, 32, 2);
  ReplayResult result[2];
  for (bool first : {false, true}) {
    ReplayOptions options = SlowLoads(1000);
    options.capacity_slots = 9;
    options.wrong_guesses_first = first;
    absl::StatusOr<ReplayResult> r = ReplayEngineTrace(trace, "lru", options);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->prefetch_loads, 12);
    EXPECT_EQ(r->hidden, 0) << "every guess is wrong";
    result[first] = *r;
  }
  EXPECT_EQ(result[true].misses, 8);
  EXPECT_EQ(result[true].hits, 48 - 8);
  EXPECT_GT(result[false].misses, 16) << "LRU misses on every lap";  // 26 when written
}

}  // namespace
}  // namespace expertd::cache
