// The request engine's scheduler, without a daemon and without a model's
// arithmetic: a fake forward pass records every call (prefill chunks and
// decode steps) and can hold the engine inside one, so admission,
// cancellation and the order of chunked prefill are checked exactly.

#include "engine/request_engine.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_models.h"

namespace expertd::engine {
namespace {

using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;

// A forward pass whose next token after t is always t + 1 (mod vocab),
// which appends to KV caches like the real one, logs its calls and can be
// paused: a call then waits inside until Resume.
class FakeForward : public Forward {
 public:
  explicit FakeForward(int vocab) : vocab_(vocab) {}

  struct Call {
    bool prefill = false;  // Run (a prompt chunk) or Step (a decode step)
    int rows = 0;          // tokens of the chunk, or rows of the step
  };

  void SetObserver(LayerObserver*) override {}
  KvMemory& kv_memory() override { return HostKvMemory(); }

  absl::Status Run(absl::Span<const int32_t> tokens, KvCache& kv, const ForwardOptions& options,
                   std::vector<float>* logits, RoutingTrace*) override {
    Enter({true, static_cast<int>(tokens.size())});
    if (absl::Status s = kv.Reserve(static_cast<int>(tokens.size())); !s.ok()) return s;
    kv.Commit(static_cast<int>(tokens.size()));
    logits->clear();
    const size_t first = options.all_logits ? 0 : tokens.size() - 1;
    for (size_t i = first; i < tokens.size(); ++i) AppendRow(tokens[i], logits);
    return absl::OkStatus();
  }
  absl::Status Step(absl::Span<const StepRow> rows, std::vector<float>* logits) override {
    Enter({false, static_cast<int>(rows.size())});
    logits->clear();
    for (const StepRow& row : rows) {
      if (row.appends_kv) {
        if (absl::Status s = row.kv->Reserve(1); !s.ok()) return s;
        row.kv->Commit(1);
      }
      AppendRow(row.token, logits);
    }
    return absl::OkStatus();
  }

  void Pause() {
    std::lock_guard lock(mu_);
    paused_ = true;
  }
  void Resume() {
    std::lock_guard lock(mu_);
    paused_ = false;
    cv_.notify_all();
  }
  // Waits until a call is held inside the pass (after Pause).
  void AwaitHeld() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return held_; });
  }
  std::vector<Call> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  void Enter(Call call) {
    std::unique_lock lock(mu_);
    calls_.push_back(call);
    held_ = paused_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !paused_; });
    held_ = false;
  }
  void AppendRow(int32_t token, std::vector<float>* logits) {
    const size_t at = logits->size();
    logits->resize(at + vocab_, 0.0f);
    (*logits)[at + (token + 1) % vocab_] = 10.0f;
  }

  const int vocab_;
  std::mutex mu_;  // guards the three below
  std::condition_variable cv_;
  bool paused_ = false;
  bool held_ = false;
  std::vector<Call> calls_;
};

class RequestEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tools::MakeModelOptions o;
    auto model = model::Model::Load(MakeTestModel(dir_, "model", o));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    forward_ = std::make_unique<FakeForward>(model_->config().vocab_size);
  }

  std::shared_ptr<Request> MakeRequest(int prompt_tokens, int max_new_tokens) {
    auto request = std::make_shared<Request>();
    for (int i = 0; i < prompt_tokens; ++i) request->prompt.push_back(10 + i);
    request->options.max_new_tokens = max_new_tokens;
    request->options.sampling.temperature = 0.0f;
    request->options.stop_at_eos = false;
    return request;
  }
  // With the engine held inside the first request's prefill: one request
  // running (`tokens` to generate) and one queued behind it.
  struct HeldPair {
    std::shared_ptr<Request> running, queued;
  };
  HeldPair HoldOneRunningOneQueued(RequestEngine& engine, int tokens) {
    forward_->Pause();
    HeldPair pair{MakeRequest(2, tokens), MakeRequest(2, tokens)};
    EXPECT_TRUE(engine.Submit(pair.running).ok());
    forward_->AwaitHeld();
    EXPECT_TRUE(engine.Submit(pair.queued).ok());
    return pair;
  }
  static void AwaitDone(Request& request) {
    std::unique_lock lock(request.mu);
    request.cv.wait(lock, [&] { return request.done; });
  }
  static void AwaitTokens(Request& request, int tokens) {
    std::unique_lock lock(request.mu);
    request.cv.wait(lock, [&] { return request.done || request.completion_tokens >= tokens; });
  }

  ScopedTempDir dir_{"request_engine"};
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<FakeForward> forward_;
};

TEST_F(RequestEngineTest, GeneratesWhatTheModelPredictsAndCountsIt) {
  RequestEngine engine(*model_, *forward_, SchedulerOptions{});
  auto request = MakeRequest(3, 5);
  ASSERT_TRUE(engine.Submit(request).ok());
  AwaitDone(*request);
  ASSERT_TRUE(request->status.ok()) << request->status;
  // The fake model continues 10 11 12 with 13 14 15 16 17.
  EXPECT_EQ(request->text, model_->tokenizer().Decode({13, 14, 15, 16, 17}, /*skip_special=*/true));
  EXPECT_EQ(request->completion_tokens, 5);
  EXPECT_EQ(request->finish_reason, "length");
  const SchedulerCounters counters = engine.Counters();
  EXPECT_EQ(counters.requests_completed, 1u);
  EXPECT_EQ(counters.completion_tokens, 5u);
  EXPECT_EQ(counters.kv_reserved_bytes, 0u);
}

TEST_F(RequestEngineTest, ALongPromptRunsInChunksWithDecodeStepsBetweenThem) {
  SchedulerOptions options;
  options.prefill_chunk_tokens = 4;
  RequestEngine engine(*model_, *forward_, options);
  auto running = MakeRequest(2, 4000);
  ASSERT_TRUE(engine.Submit(running).ok());
  AwaitTokens(*running, 3);
  // Hold the engine inside a decode step while the long prompt arrives, so
  // the running request is still far from its end.
  forward_->Pause();
  forward_->AwaitHeld();
  const size_t calls_before = forward_->calls().size();
  auto long_prompt = MakeRequest(18, 2);
  ASSERT_TRUE(engine.Submit(long_prompt).ok());
  forward_->Resume();
  AwaitDone(*long_prompt);
  engine.Cancel(running);
  AwaitDone(*running);
  ASSERT_TRUE(long_prompt->status.ok()) << long_prompt->status;

  const std::vector<FakeForward::Call> calls = forward_->calls();
  std::vector<int> chunks;
  for (size_t i = calls_before; i < calls.size(); ++i) {
    if (!calls[i].prefill) continue;
    chunks.push_back(calls[i].rows);
    // Each chunk follows a decode step of the running request.
    ASSERT_GT(i, 0u);
    EXPECT_FALSE(calls[i - 1].prefill) << "chunk " << chunks.size() << " right after another chunk";
  }
  EXPECT_EQ(chunks, (std::vector<int>{4, 4, 4, 4, 2}));
  EXPECT_EQ(engine.Counters().prefill_chunks, 6u) << "the running request's own prompt, then 5 chunks";
}

// Scoring (perplexity, eval): every prompt position's distribution, and no
// token generated. The fake model puts all its mass on token t + 1 after t.
int ArgMax(absl::Span<const float> row) {
  return static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
}

TEST_F(RequestEngineTest, ScoringReturnsThePrefillLogitsOfEveryPosition) {
  RequestEngine engine(*model_, *forward_, SchedulerOptions{});
  auto request = MakeRequest(5, 0);
  request->score_prompt = true;
  ASSERT_TRUE(RunRequest(engine, request).ok()) << request->status;
  const int vocab = model_->config().vocab_size;
  ASSERT_EQ(request->prompt_scores.size(), 5u * vocab);
  for (int t = 0; t < 5; ++t) {
    EXPECT_EQ(ArgMax(absl::MakeConstSpan(request->prompt_scores).subspan(t * vocab, vocab)), request->prompt[t] + 1);
  }
  EXPECT_EQ(request->completion_tokens, 0);
  const std::vector<FakeForward::Call> calls = forward_->calls();
  ASSERT_EQ(calls.size(), 1u) << "one prefill, no decode step";
  EXPECT_TRUE(calls[0].prefill);
  EXPECT_EQ(calls[0].rows, 5);
}

TEST_F(RequestEngineTest, ScoringWithARosterFeedsThePromptAsDecodeSteps) {
  RequestEngine engine(*model_, *forward_, SchedulerOptions{});
  auto request = MakeRequest(5, 0);
  request->score_prompt = true;
  request->options.roster.samples = 3;
  ASSERT_TRUE(RunRequest(engine, request).ok()) << request->status;
  const int vocab = model_->config().vocab_size;
  ASSERT_EQ(request->prompt_scores.size(), 5u * vocab);
  for (int t = 0; t < 5; ++t) {
    EXPECT_EQ(ArgMax(absl::MakeConstSpan(request->prompt_scores).subspan(t * vocab, vocab)), request->prompt[t] + 1);
  }
  // Teacher forcing: after the first token, every prompt position is one
  // decode step of the roster's 3 rows, as generation would run it.
  const std::vector<FakeForward::Call> calls = forward_->calls();
  int steps = 0;
  for (const FakeForward::Call& call : calls) {
    if (call.prefill) continue;
    EXPECT_EQ(call.rows, 3);
    ++steps;
  }
  EXPECT_GE(steps, 4);
  EXPECT_LE(steps, 5) << "the first token's roster step may be the prefill's own";
  EXPECT_EQ(request->completion_tokens, 0);
}

TEST_F(RequestEngineTest, AScoringRequestThatAsksToGenerateIsRefused) {
  RequestEngine engine(*model_, *forward_, SchedulerOptions{});
  auto request = MakeRequest(3, 2);
  request->score_prompt = true;
  const absl::Status status = RunRequest(engine, request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), ::testing::HasSubstr("max_new_tokens must be 0"));
  EXPECT_TRUE(request->prompt_scores.empty());
}

TEST_F(RequestEngineTest, RequestsWaitForKvMemoryAndOneThatCanNeverFitIsRefused) {
  SchedulerOptions options;
  options.kv_budget_bytes = KvCache::BytesFor(model_->config(), 30);
  RequestEngine engine(*model_, *forward_, options);
  // 40 positions can never fit a budget of 30.
  const absl::Status too_large = engine.Submit(MakeRequest(10, 30));
  EXPECT_TRUE(absl::IsInvalidArgument(too_large)) << too_large;
  EXPECT_THAT(std::string(too_large.message()), ::testing::HasSubstr("kv_budget"));
  // Two of 23 positions fit one at a time.
  forward_->Pause();
  auto first = MakeRequest(3, 20), second = MakeRequest(3, 20);
  ASSERT_TRUE(engine.Submit(first).ok());
  forward_->AwaitHeld();
  ASSERT_TRUE(engine.Submit(second).ok());
  EXPECT_EQ(engine.Counters().running, 1u);
  EXPECT_EQ(engine.Counters().queued, 1u) << "the second waits for memory, not for max_batch";
  EXPECT_EQ(engine.Counters().kv_reserved_bytes, KvCache::BytesFor(model_->config(), 23));
  forward_->Resume();
  AwaitDone(*first);
  AwaitDone(*second);
  EXPECT_TRUE(first->status.ok());
  EXPECT_TRUE(second->status.ok());
  const SchedulerCounters counters = engine.Counters();
  EXPECT_EQ(counters.largest_batch, 1u);
  EXPECT_EQ(counters.requests_rejected, 1u);
  EXPECT_EQ(counters.kv_reserved_bytes, 0u);
}

TEST_F(RequestEngineTest, AFullQueueIsBackPressure) {
  SchedulerOptions options;
  options.max_batch = 1;
  options.max_queued_requests = 1;
  RequestEngine engine(*model_, *forward_, options);
  auto [running, queued] = HoldOneRunningOneQueued(engine, 4);
  EXPECT_TRUE(absl::IsUnavailable(engine.Submit(MakeRequest(2, 4))));
  forward_->Resume();
  AwaitDone(*queued);
  EXPECT_TRUE(queued->status.ok());
}

TEST_F(RequestEngineTest, CancelledRequestsEndWhereverTheyAre) {
  SchedulerOptions options;
  options.max_batch = 1;
  RequestEngine engine(*model_, *forward_, options);
  auto [running, queued] = HoldOneRunningOneQueued(engine, 100);
  // A queued request ends at once, without running.
  engine.Cancel(queued);
  {
    std::lock_guard lock(queued->mu);
    EXPECT_TRUE(queued->done);
    EXPECT_TRUE(absl::IsCancelled(queued->status)) << queued->status;
  }
  EXPECT_EQ(engine.Counters().queued, 0u);
  // A running one ends at the engine's next step.
  engine.Cancel(running);
  forward_->Resume();
  AwaitDone(*running);
  EXPECT_TRUE(absl::IsCancelled(running->status)) << running->status;
  EXPECT_LT(running->completion_tokens, 3);
  const SchedulerCounters counters = engine.Counters();
  EXPECT_EQ(counters.requests_cancelled, 2u);
  EXPECT_EQ(counters.requests_completed, 0u);
  EXPECT_EQ(counters.running, 0u);
}

TEST_F(RequestEngineTest, DrainFinishesInTimeAndCancelsTheRest) {
  SchedulerOptions options;
  options.max_batch = 1;
  RequestEngine engine(*model_, *forward_, options);
  auto [running, queued] = HoldOneRunningOneQueued(engine, 100);
  std::thread resume([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    forward_->Resume();
  });
  engine.Drain(std::chrono::milliseconds(50));
  resume.join();
  AwaitDone(*running);
  AwaitDone(*queued);
  EXPECT_TRUE(absl::IsCancelled(queued->status));
  EXPECT_TRUE(absl::IsCancelled(running->status));
  EXPECT_TRUE(absl::IsUnavailable(engine.Submit(MakeRequest(2, 4)))) << "a draining engine takes no new work";
}

}  // namespace
}  // namespace expertd::engine
