// The layer cycle every backend shares: the order in which the listeners
// hear of a pass, the backend's steps run and experts are acquired, and
// what happens on an error.

#include "engine/moe_layer_runner.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "cache/readiness.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace expertd::engine {
namespace {

using ::testing::ElementsAre;

using Log = std::vector<std::string>;

// Experts 3 and 6 ready, 1 with a host copy, the rest loaded on demand.
class FakeExperts : public ExpertSource {
 public:
  explicit FakeExperts(Log& log) : log_(log) {}
  absl::StatusOr<ExpertHandle> Acquire(int layer, int expert) override {
    log_.push_back(absl::StrCat("acquire ", expert));
    return ExpertHandle();
  }
  std::optional<ExpertHandle> TryAcquire(int layer, int expert) override {
    if (expert != 3 && expert != 6) return std::nullopt;
    return ExpertHandle();
  }
  std::optional<ExpertHandle> TryAcquireHostCopy(int layer, int expert) override {
    if (expert != 1) return std::nullopt;
    return ExpertHandle();
  }
  bool HasHostCopy(int layer, int expert) const override { return expert == 1; }
  void StartLoad(int layer, int expert) override { log_.push_back(absl::StrCat("load ", expert)); }
  void BeginPass() override { log_.push_back("experts: pass"); }
  void BeginLayer(int layer) override { log_.push_back(absl::StrCat("experts: layer ", layer)); }

 private:
  Log& log_;
};

class RecordingObserver : public LayerObserver {
 public:
  explicit RecordingObserver(Log& log) : log_(log) {}
  void BeginPass() override { log_.push_back("observer: pass"); }
  void BeginLayer(int layer) override { log_.push_back(absl::StrCat("observer: layer ", layer)); }
  // The experts some row's router wanted (above 0.1), with their scores.
  void OnRouterScores(int layer, absl::Span<const float> scores) override {
    std::string line = absl::StrCat("observer: scores ", layer);
    for (size_t e = 0; e < scores.size(); ++e) {
      if (scores[e] > 0.1f) absl::StrAppend(&line, " ", e, "=", absl::StrFormat("%.2f", scores[e]));
    }
    log_.push_back(line);
  }
  void OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen, int n_tokens,
                int k) override {
    log_.push_back(absl::StrCat("observer: routed ", layer, " rows ", n_tokens, " k ", k));
  }
  void OnLayerDone(int layer, double compute_seconds) override {
    log_.push_back(absl::StrCat("observer: done ", layer));
  }

 private:
  Log& log_;
};

class FakeCompute : public MoeLayerCompute {
 public:
  FakeCompute(Log& log, const std::vector<float>& logits, int hidden)
      : log_(log), logits_(logits), gate_inputs_(2 * hidden) {}
  absl::Status Attention(int layer) override {
    log_.push_back(absl::StrCat("attention ", layer));
    return absl::OkStatus();
  }
  absl::Status DenseFeedForward(int layer) override {
    log_.push_back(absl::StrCat("dense ", layer));
    return absl::OkStatus();
  }
  absl::StatusOr<RouterOutput> Router(int layer) override {
    log_.push_back(absl::StrCat("router ", layer));
    return RouterOutput{.logits = logits_.data(), .gate_inputs = gate_inputs_.data()};
  }
  absl::Status Dispatched(int layer, const MoeDispatch& dispatch) override {
    log_.push_back(absl::StrCat("dispatched ", layer, " slots ", dispatch.num_slots()));
    return absl::OkStatus();
  }
  absl::Status RunExpert(const MoeDispatch& dispatch, int expert, const model::FeedForwardWeights& weights,
                         ExpertOrigin origin) override {
    const char* from = origin == ExpertOrigin::kReady ? "ready" : origin == ExpertOrigin::kHostCopy ? "host" : "loaded";
    log_.push_back(absl::StrCat("run ", expert, " ", from, " rows ", dispatch.SlotsOf(expert).size()));
    if (expert == fail_expert) return absl::InternalError("kernel failed");
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    log_.push_back("sync");
    return absl::OkStatus();
  }
  absl::Status Combine(int layer, const MoeDispatch& dispatch) override {
    log_.push_back(absl::StrCat("combine ", layer));
    return absl::OkStatus();
  }
  int fail_expert = -1;

 private:
  Log& log_;
  const std::vector<float>& logits_;
  std::vector<float> gate_inputs_;
};

class MoeLayerRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.num_layers = 2;
    config_.hidden_size = 4;
    config_.num_experts = 8;
    config_.experts_per_token = 2;
    config_.layer_is_moe = {false, true};
    // Two rows: row 0 picks experts 1 and 3, row 1 picks 5 and 6.
    rows_ = {RowPlan{.position = 0, .kv = nullptr, .appends_kv = true, .k = 2, .first_slot = 0},
             RowPlan{.position = 0, .kv = nullptr, .appends_kv = true, .k = 2, .first_slot = 2}};
    logits_ = {0, 5, 0, 4, 0, 0, 0, 0,   //
               0, 0, 0, 0, 0, 5, 4, 0};
  }

  model::ModelConfig config_;
  std::vector<RowPlan> rows_;
  std::vector<float> logits_;
  Log log_;
};

TEST_F(MoeLayerRunnerTest, OneLayerCycleInOrder) {
  FakeExperts experts(log_);
  RecordingObserver observer(log_);
  FakeCompute compute(log_, logits_, config_.hidden_size);
  PlacementOptions options;
  options.h2d_bytes_per_second = 1e6;          // 1 s per copy
  options.cpu_weight_bytes_per_second = 1e12;  // 1 us per expert
  ExecutionPlacement placement(options);

  MoeLayerRunner runner(config_, experts);
  runner.SetObserver(&observer);
  runner.SetPlacement(&placement, 1'000'000);
  runner.BeginPass(rows_);
  EXPECT_EQ(runner.dispatch().num_slots(), 4);
  ASSERT_TRUE(runner.RunLayers(compute).ok());
  EXPECT_THAT(log_, ElementsAre("experts: pass", "observer: pass",  //
                                "attention 0", "dense 0",           // a dense layer: no layer cycle events
                                "attention 1", "experts: layer 1", "observer: layer 1", "router 1",
                                // Each expert's highest probability over the two rows.
                                "observer: scores 1 1=0.71 3=0.26 5=0.71 6=0.26",  //
                                "dispatched 1 slots 4", "load 5",  // the plan: 3, 6 ready, 1 on the CPU
                                "observer: routed 1 rows 2 k 2",   //
                                "run 3 ready rows 1", "run 6 ready rows 1", "run 1 host rows 1",
                                "sync",  // before the pins of what ran go
                                "acquire 5", "run 5 loaded rows 1", "sync", "combine 1", "observer: done 1"));
}

TEST_F(MoeLayerRunnerTest, WithoutPlacementHostCopiesAreLoadedAndTheObserverCanGo) {
  FakeExperts experts(log_);
  RecordingObserver observer(log_);
  FakeCompute compute(log_, logits_, config_.hidden_size);
  MoeLayerRunner runner(config_, experts);
  runner.SetObserver(&observer);
  runner.SetObserver(nullptr);
  runner.BeginPass(rows_);
  ASSERT_TRUE(runner.RunLayers(compute).ok());
  EXPECT_THAT(log_, ElementsAre("experts: pass", "attention 0", "dense 0", "attention 1", "experts: layer 1",
                                "router 1", "dispatched 1 slots 4", "load 1", "load 5", "run 3 ready rows 1",
                                "run 6 ready rows 1", "sync", "acquire 1", "run 1 loaded rows 1", "sync",
                                "acquire 5", "run 5 loaded rows 1", "sync", "combine 1"));
}

TEST_F(MoeLayerRunnerTest, AFailedExpertWaitsForQueuedWorkAndStopsThePass) {
  FakeExperts experts(log_);
  FakeCompute compute(log_, logits_, config_.hidden_size);
  compute.fail_expert = 5;
  MoeLayerRunner runner(config_, experts);
  runner.BeginPass(rows_);
  const absl::Status status = runner.RunLayers(compute);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(log_, ElementsAre("experts: pass", "attention 0", "dense 0", "attention 1", "experts: layer 1",
                                "router 1", "dispatched 1 slots 4", "load 1", "load 5", "run 3 ready rows 1",
                                "run 6 ready rows 1", "sync", "acquire 1", "run 1 loaded rows 1", "sync",
                                "acquire 5", "run 5 loaded rows 1",
                                "sync",    // the failed expert's pin waits for the stream
                                "sync"));  // and the pass's error path waits again before dropping the plan
}

// A copy into the expert's slot that lands only when someone waits for it,
// so a run that did not wait would find it not ready.
class LoggedFence : public cache::Readiness::Fence {
 public:
  LoggedFence(Log& log, int expert) : log_(log), expert_(expert) {}
  bool IsReady() const override { return done_; }
  absl::Status Wait() const override {
    log_.push_back(absl::StrCat("wait ", expert_));
    done_ = true;
    return absl::OkStatus();
  }
  bool done() const { return done_; }

 private:
  Log& log_;
  const int expert_;
  mutable bool done_ = false;
};

// FakeExperts whose ready (3, 6) and loaded (5) experts still have their
// copies in flight; the host copy (1) is ready at once.
class InFlightExperts : public FakeExperts {
 public:
  explicit InFlightExperts(Log& log) : FakeExperts(log), log_(log) {}
  absl::StatusOr<ExpertHandle> Acquire(int layer, int expert) override {
    ASSIGN_OR_RETURN(ExpertHandle handle, FakeExperts::Acquire(layer, expert));
    return InFlight(std::move(handle), expert);
  }
  std::optional<ExpertHandle> TryAcquire(int layer, int expert) override {
    std::optional<ExpertHandle> handle = FakeExperts::TryAcquire(layer, expert);
    if (!handle) return handle;
    return InFlight(std::move(*handle), expert);
  }
  std::vector<std::shared_ptr<LoggedFence>> fences;

 private:
  ExpertHandle InFlight(ExpertHandle handle, int expert) {
    fences.push_back(std::make_shared<LoggedFence>(log_, expert));
    handle.ready = cache::Readiness(fences.back());
    return handle;
  }
  Log& log_;
};

// A backend that waits on its stream logs the readiness it was handed.
class StreamCompute : public FakeCompute {
 public:
  using FakeCompute::FakeCompute;
  absl::Status AwaitExpert(const cache::Readiness& ready) override {
    awaited.push_back(ready.IsReady());
    return absl::OkStatus();
  }
  std::vector<bool> awaited;
};

TEST_F(MoeLayerRunnerTest, EveryExpertIsAwaitedBeforeItRuns) {
  InFlightExperts experts(log_);
  FakeCompute compute(log_, logits_, config_.hidden_size);
  MoeLayerRunner runner(config_, experts);
  runner.BeginPass(rows_);
  ASSERT_TRUE(runner.RunLayers(compute).ok());
  // The default (a CPU backend) waits on the host right before each run.
  EXPECT_THAT(log_, ElementsAre("experts: pass", "attention 0", "dense 0", "attention 1", "experts: layer 1",
                                "router 1", "dispatched 1 slots 4", "load 1", "load 5", "wait 3",
                                "run 3 ready rows 1", "wait 6", "run 6 ready rows 1", "sync", "acquire 1",
                                "wait 1", "run 1 loaded rows 1", "sync", "acquire 5", "wait 5",
                                "run 5 loaded rows 1", "sync", "combine 1"));
}

TEST_F(MoeLayerRunnerTest, ADeviceBackendIsHandedTheReadinessInsteadOfAHostWait) {
  InFlightExperts experts(log_);
  StreamCompute compute(log_, logits_, config_.hidden_size);
  MoeLayerRunner runner(config_, experts);
  runner.BeginPass(rows_);
  ASSERT_TRUE(runner.RunLayers(compute).ok());
  EXPECT_THAT(compute.awaited, ElementsAre(false, false, false, false)) << "each copy still in flight when handed over";
  for (const auto& fence : experts.fences) EXPECT_FALSE(fence->done()) << "the host never waited";
  EXPECT_EQ(std::count_if(log_.begin(), log_.end(), [](const std::string& line) { return line.rfind("wait", 0) == 0; }),
            0);
}

}  // namespace
}  // namespace expertd::engine
