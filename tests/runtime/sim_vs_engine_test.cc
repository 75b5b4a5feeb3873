// The cache simulator against the engine (issue 16, "make the simulator
// honest"): the bundled model runs a workload with a DRAM budget and step
// tracing on; the recorded trace (v2: steps, the prefetcher's predictions,
// layer times, the run's read figures) is replayed through the simulator
// with the same capacity, policy and prefetch, and the true hit rates
// (ready when asked: hit + hidden) must agree.
//
// They can differ by timing only: the replay gives every load the run's mean
// figures (throughput with loads overlapping, mean load time), where real
// reads vary one to the next (the device, the reaper thread, scheduling on a
// loaded machine), so a prefetch that landed just in time in one is just
// late in the other, and the cache then holds different experts for a
// while. Measured on a loaded 2-core machine (bench/README): hit rates agree
// within about a point, miss rates within 0.3-5 points either way, and the
// engine moves by ~5 points between identical runs. The access count
// depends on routing alone and must match exactly.

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "cache/sim/engine_replay.h"
#include "cache/sim/trace_file.h"
#include "engine/kv_cache.h"
#include "gtest/gtest.h"
#include "runtime/runtime.h"
#include "tests/testing/test_models.h"

namespace expertd::runtime {
namespace {

struct Measured {
  cache::TierStats engine;
  cache::ReplayResult replay;
};

// A prompt of `prompt_tokens` (one prefill step), then `decode_tokens`
// greedy decode steps, with `slots` DRAM slots of the bundled model.
Measured RunAndReplay(int slots, int prompt_tokens, int decode_tokens, const std::string& policy) {
  testing::ScopedTempDir dir("sim_vs_engine");
  EngineOptions options;
  options.model_dir = EXPERTD_MODEL_DIR;
  options.reader.path = dir.Sub("model.experts");
  options.threads = 1;
  options.device.gpu = GpuMode::kOff;
  options.cache.policy = policy;
  options.prefetch.next_token_layers = 1;
  // The slot size is known once the file is packed: load once to pack it.
  uint64_t slot_bytes = 0;
  {
    EngineOptions probe;
    probe.model_dir = options.model_dir;
    probe.reader.path = options.reader.path;
    probe.threads = 1;
    probe.device.gpu = GpuMode::kOff;
    probe.cache.dram_budget_bytes = uint64_t{1} << 30;
    absl::StatusOr<std::unique_ptr<Runtime>> packer = Runtime::Load(probe);
    EXPECT_TRUE(packer.ok()) << packer.status();
    if (!packer.ok()) return {};
    slot_bytes = (*packer)->cache()->slot_bytes();
  }
  options.cache.dram_budget_bytes = slots * slot_bytes;
  absl::StatusOr<std::unique_ptr<Runtime>> loaded = Runtime::Load(options);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  if (!loaded.ok()) return {};
  Runtime& engine = **loaded;
  const model::ModelConfig& config = engine.model().config();

  // The workload: the held-out text's first tokens, then greedy decode.
  std::vector<int32_t> tokens = engine.model().tokenizer().Encode(
      "In the beginning God created the heaven and the earth. And the earth was without form, and void; and "
      "darkness was upon the face of the deep.");
  EXPECT_GE(static_cast<int>(tokens.size()), prompt_tokens);
  tokens.resize(prompt_tokens);
  engine.StartStepTrace();
  engine::KvCache kv(config, prompt_tokens + decode_tokens + 1, &engine.forward().kv_memory());
  std::vector<float> logits;
  absl::Status status = engine.forward().Run(tokens, kv, engine::ForwardOptions(), &logits);
  for (int t = 0; t < decode_tokens && status.ok(); ++t) {
    const float* last = logits.data() + logits.size() - config.vocab_size;
    const int32_t next = static_cast<int32_t>(std::max_element(last, last + config.vocab_size) - last);
    status = engine.forward().Run(absl::MakeConstSpan(&next, 1), kv, engine::ForwardOptions(), &logits);
  }
  EXPECT_TRUE(status.ok()) << status;
  const std::vector<cache::TraceStep> steps = engine.TakeStepTrace();
  EXPECT_EQ(static_cast<int>(steps.size()), 1 + decode_tokens);
  // The recorder saw the prefill as one step of all its rows, every layer's
  // compute, and the prefetcher's predictions (within steps and, at the
  // last layer of decode steps, for the next).
  int predictions = 0, next_step_predictions = 0;
  for (const cache::TraceStep& step : steps) {
    EXPECT_EQ(step.compute.size(), static_cast<size_t>(config.num_layers));
    for (const cache::TracePrediction& p : step.predictions) ++(p.next_step ? next_step_predictions : predictions);
  }
  if (!steps.empty()) {
    EXPECT_EQ(steps[0].rows, prompt_tokens);
  }
  EXPECT_GT(predictions, 0);
  EXPECT_GT(next_step_predictions, 0);

  // Through the file, as `expertd run --trace` and bench-cache do.
  const std::string path = dir.Sub("run.trace");
  EXPECT_TRUE(cache::WriteStepTraceFile(path, config.num_layers, config.num_experts, config.experts_per_token,
                                        engine.TraceIo(), steps)
                  .ok());
  absl::StatusOr<cache::LoadedTrace> trace = cache::ReadTraceFile(path);
  EXPECT_TRUE(trace.ok()) << trace.status();
  if (!trace.ok()) return {};

  cache::ReplayOptions replay;
  replay.capacity_slots = engine.cache()->stats().dram.slots;
  replay.io = cache::MeasuredLoadModel(trace->io, engine.reader()->queue_depth());
  replay.max_prefetch_in_flight = options.prefetch.scheduler.max_in_flight;
  absl::StatusOr<cache::ReplayResult> result = cache::ReplayEngineTrace(*trace, policy, replay);
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return {};
  return {engine.cache()->stats().dram, *result};
}

// Whether this build is instrumented by a sanitizer: it then computes several
// times slower while reads take as long as ever, so which prefetches land in
// time is not what an uninstrumented run sees.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

TEST(SimVsEngineTest, ReplayedTrueHitRateMatchesTheEngine) {
  // 8 percentage points: differences measured up to 5 (see the top), with
  // room for a slower, noisier machine. The split of the rest between hidden
  // and miss depends on timing; under a sanitizer it was 10 points apart
  // (CI, ASan: the engine's prefetches landed more often than the replay's
  // model of the same run said), so only the timing-free figures are held
  // there.
  constexpr double kPoints = 0.08;
  // layer-distance ranks by the router's scores, which the trace records as
  // the engine gave them. (On this 4-layer model its hits agree within a
  // point even without them; engine_replay_test checks they reach the
  // policy.)
  for (const char* policy : {"least-stale", "layer-distance"})
  for (int slots : {16, 32}) {  // 25% and 50% of the bundled model's 64 experts
    SCOPED_TRACE(policy);
    const Measured m = RunAndReplay(slots, /*prompt_tokens=*/16, /*decode_tokens=*/48, policy);
    const cache::TierStats& e = m.engine;
    const cache::ReplayResult& r = m.replay;
    const double engine_ready = e.hit_rate() + e.hidden_rate();
    const int tokens = 16 + 48;
    std::printf("%d slots: engine hit %.3f hidden %.3f miss %.3f, stall %.0f us/token (%llu accesses); replay hit "
                "%.3f hidden %.3f miss %.3f, stall %.0f us/token (%lld accesses)\n",
                slots, e.hit_rate(), e.hidden_rate(), e.miss_rate(), e.wait_ns / 1e3 / tokens,
                static_cast<unsigned long long>(e.accesses()), r.hit_rate(), r.hidden_rate(), r.miss_rate(),
                r.stall_us_per_token(), static_cast<long long>(r.accesses));
    std::printf("  prefetch reads: engine %llu (%llu late), replay %lld (%lld late, %lld dropped)\n",
                static_cast<unsigned long long>(e.prefetches), static_cast<unsigned long long>(e.late_prefetches),
                static_cast<long long>(r.prefetch_loads), static_cast<long long>(r.late_prefetches),
                static_cast<long long>(r.prefetch_dropped));
    EXPECT_EQ(static_cast<int64_t>(e.accesses()), r.accesses) << slots << " slots: the same distinct experts per layer";
    EXPECT_NEAR(r.hit_rate(), e.hit_rate(), 0.03) << slots << " slots: hits do not depend on timing";
    if (kSanitized) continue;
    EXPECT_NEAR(r.ready_rate(), engine_ready, kPoints) << slots << " slots";
    EXPECT_NEAR(r.miss_rate(), e.miss_rate(), kPoints) << slots << " slots";
  }
}

}  // namespace
}  // namespace expertd::runtime
