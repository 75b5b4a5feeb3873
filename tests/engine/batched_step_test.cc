// ForwardPass::Step: several sequences (continuous batching) or several
// Roster of Experts samples of one sequence as one batch.

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/batch_decoder.h"
#include "engine/forward.h"
#include "model/model.h"
#include "engine/roster.h"
#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/reference/reference_model.h"
#include "tests/testing/test_models.h"

namespace expertd::engine {
namespace {

using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;

std::vector<float> RowOf(const std::vector<float>& logits, int row, int vocab) {
  return std::vector<float>(logits.begin() + static_cast<size_t>(row) * vocab,
                            logits.begin() + static_cast<size_t>(row + 1) * vocab);
}

class BatchedStepTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tools::MakeModelOptions o;
    o.arch = GetParam();
    o.layers = 4;
    o.hidden = 64;
    o.experts = 8;
    o.top_k = 2;
    o.ffn = 48;
    o.heads = 4;
    o.kv_heads = 2;
    o.vocab = 320;
    o.seed = 11;
    if (o.arch == "olmoe") o.norm_topk_prob = false;
    if (o.arch == "qwen2_moe") o.dense_layers = {1};
    model_dir_ = MakeTestModel(dir_, o.arch, o);
    auto model = model::Model::Load(model_dir_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    vocab_ = model_->config().vocab_size;
  }

  // Logits of `tokens`' last position computed alone: prefill all but the
  // last token, then a one-token Run.
  std::vector<float> AloneLastLogits(const std::vector<int32_t>& tokens, int k) {
    ForwardPass forward(*model_, nullptr);
    KvCache kv(model_->config(), 64);
    ForwardOptions options;
    options.experts_per_token = k;
    std::vector<float> logits;
    if (tokens.size() > 1) {
      EXPECT_TRUE(forward.Run(absl::MakeConstSpan(tokens.data(), tokens.size() - 1), kv, options, &logits).ok());
    }
    EXPECT_TRUE(forward.Run(absl::MakeConstSpan(&tokens.back(), 1), kv, options, &logits).ok());
    return logits;
  }

  ScopedTempDir dir_{"batched_step"};
  std::string model_dir_;
  std::unique_ptr<model::Model> model_;
  int vocab_ = 0;
};

TEST_P(BatchedStepTest, RowsOfDifferentSequencesEqualEachSequenceAlone) {
  kernels::ThreadPool pool(2);
  ForwardPass forward(*model_, &pool);
  // Three sequences of different lengths and different dial-k.
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 260, 99}, {3}, {42, 42, 1, 300, 77, 128, 64}};
  const std::vector<int> ks = {0, 1, 3};
  std::vector<KvCache> kvs;
  std::vector<std::vector<int32_t>> sequences = prompts;
  std::vector<float> logits;
  for (size_t i = 0; i < prompts.size(); ++i) {
    kvs.emplace_back(model_->config(), 64);
    ForwardOptions options;
    options.experts_per_token = ks[i];
    ASSERT_TRUE(forward.Run(prompts[i], kvs[i], options, &logits).ok());
  }
  // Several batched steps, each feeding every sequence a new token.
  for (int step = 0; step < 3; ++step) {
    std::vector<StepRow> rows(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      const int32_t token = static_cast<int32_t>((31 * step + 7 * i + 11) % vocab_);
      sequences[i].push_back(token);
      rows[i] = StepRow{.token = token, .kv = &kvs[i], .experts_per_token = ks[i]};
    }
    ASSERT_TRUE(forward.Step(rows, &logits).ok());
    ASSERT_EQ(logits.size(), prompts.size() * vocab_);
    for (size_t i = 0; i < prompts.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "step " << step << " sequence " << i);
      EXPECT_EQ(kvs[i].length(), static_cast<int>(sequences[i].size()));
      // Bit-identical: batching must not change a single logit.
      EXPECT_EQ(RowOf(logits, static_cast<int>(i), vocab_), AloneLastLogits(sequences[i], ks[i]));
    }
  }
}

TEST_P(BatchedStepTest, InvalidRowsAreErrorsAndChangeNoCache) {
  ForwardPass forward(*model_, nullptr);
  KvCache a(model_->config(), 8), b(model_->config(), 8);
  std::vector<float> logits;
  ASSERT_TRUE(forward.Run(std::vector<int32_t>{1, 2}, a, {}, &logits).ok());
  auto expect_error = [&](std::vector<StepRow> rows, absl::StatusCode code) {
    const absl::Status status = forward.Step(rows, &logits);
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_EQ(a.length(), 2);
    EXPECT_EQ(b.length(), 0);
  };
  expect_error({}, absl::StatusCode::kInvalidArgument);
  expect_error({{.token = 1, .kv = &a}, {.token = vocab_, .kv = &b}}, absl::StatusCode::kInvalidArgument);
  expect_error({{.token = 1, .kv = &a}, {.token = 1, .kv = &b, .experts_per_token = 9}},
               absl::StatusCode::kInvalidArgument);
  expect_error({{.token = 1, .kv = &a}, {.token = 2, .kv = &a}}, absl::StatusCode::kInvalidArgument);
  expect_error({{.token = 1, .kv = nullptr}}, absl::StatusCode::kInvalidArgument);
  KvCache full(model_->config(), 2);
  ASSERT_TRUE(forward.Run(std::vector<int32_t>{1, 2}, full, {}, &logits).ok());
  expect_error({{.token = 1, .kv = &a}, {.token = 1, .kv = &full}}, absl::StatusCode::kOutOfRange);
  // And the pass still works after the errors.
  ASSERT_TRUE(forward.Step({{.token = 1, .kv = &a}, {.token = 2, .kv = &b}}, &logits).ok());
  EXPECT_EQ(a.length(), 3);
  EXPECT_EQ(b.length(), 1);
}

// The roster of a sequence: row 0 deterministic and appending, rows 1.. with
// noise, attending to the shared history plus their own key and value.
std::vector<StepRow> RosterRows(int32_t token, KvCache* kv, const std::vector<RowNoise>& noises) {
  std::vector<StepRow> rows;
  for (size_t s = 0; s < noises.size(); ++s) {
    rows.push_back(StepRow{.token = token, .kv = kv, .appends_kv = s == 0, .noise = s == 0 ? nullptr : &noises[s]});
  }
  return rows;
}

std::vector<RowNoise> Noises(const std::vector<float>& tau, int samples, uint64_t seed) {
  std::vector<RowNoise> noises(samples);
  for (int s = 0; s < samples; ++s) noises[s] = RowNoise{.layer_temperatures = tau.data(), .seed = seed, .sample = s};
  return noises;
}

TEST_P(BatchedStepTest, RosterWithZeroTemperatureIsTheDeterministicModel) {
  ForwardPass forward(*model_, nullptr);
  const std::vector<int32_t> prompt = {5, 17, 260, 99};
  KvCache kv(model_->config(), 64);
  std::vector<float> logits;
  ASSERT_TRUE(forward.Run(absl::MakeConstSpan(prompt.data(), 3), kv, {}, &logits).ok());
  const std::vector<float> tau(model_->config().num_layers, 0.0f);
  const std::vector<RowNoise> noises = Noises(tau, 4, 1);
  ASSERT_TRUE(forward.Step(RosterRows(prompt[3], &kv, noises), &logits).ok());
  const std::vector<float> alone = AloneLastLogits(prompt, 0);
  for (int s = 0; s < 4; ++s) EXPECT_EQ(RowOf(logits, s, vocab_), alone) << "sample " << s;
  EXPECT_EQ(kv.length(), 4);  // the clean cache: one position per step, whatever n is
  std::vector<float> averaged;
  AverageSampleDistributions(logits, 4, vocab_, &averaged);
  std::vector<float> single;
  AverageSampleDistributions(alone, 1, vocab_, &single);
  EXPECT_EQ(averaged, single);
}

TEST_P(BatchedStepTest, RosterSamplesMatchTheReferenceAndSeparateSteps) {
  kernels::ThreadPool pool(2);
  ForwardPass forward(*model_, &pool);
  const std::vector<int32_t> tokens = {5, 17, 260, 99, 3, 42};
  const int samples = 6;
  const uint64_t seed = 1234;
  std::vector<float> tau(model_->config().num_layers, 0.0f);
  for (int layer = 0; layer < model_->config().num_layers; ++layer) {
    if (model_->config().layer_is_moe[layer]) tau[layer] = 1.5f;  // large, so samples really differ
  }
  const std::vector<RowNoise> noises = Noises(tau, samples, seed);

  KvCache kv(model_->config(), 64);
  std::vector<float> logits;
  ASSERT_TRUE(forward.Run(absl::MakeConstSpan(tokens.data(), tokens.size() - 1), kv, {}, &logits).ok());
  const KvCache history = kv;  // before the step
  std::vector<float> batched;
  RoutingTrace trace0, trace1;
  std::vector<StepRow> rows = RosterRows(tokens.back(), &kv, noises);
  rows[0].trace = &trace0;
  rows[1].trace = &trace1;
  ASSERT_TRUE(forward.Step(rows, &batched).ok());
  EXPECT_EQ(kv.length(), static_cast<int>(tokens.size()));

  reference::ReferenceNoise ref_noise;
  ref_noise.seed = seed;
  ref_noise.layer_temperatures.assign(tau.begin(), tau.end());
  std::vector<double> reference_average(vocab_, 0.0);
  int differing_samples = 0;
  for (int s = 0; s < samples; ++s) {
    SCOPED_TRACE(::testing::Message() << "sample " << s);
    const std::vector<float> row = RowOf(batched, s, vocab_);
    // Separately: sample s alone in a step over a copy of the history.
    KvCache copy = history;
    std::vector<float> alone;
    ASSERT_TRUE(forward.Step({{.token = tokens.back(), .kv = &copy, .appends_kv = s == 0,
                               .noise = s == 0 ? nullptr : &noises[s]}},
                             &alone)
                    .ok());
    EXPECT_EQ(row, alone);
    // The plain-loop reference, with the same Gumbel draws.
    ref_noise.sample = s;
    auto reference = reference::ReferenceLogits(model_dir_, tokens, 0, s == 0 ? nullptr : &ref_noise);
    ASSERT_TRUE(reference.ok()) << reference.status();
    const std::vector<double>& ref_row = reference->back();
    double max_diff = 0, max_ref = 1e-9;
    for (int i = 0; i < vocab_; ++i) {
      max_diff = std::max(max_diff, std::abs(row[i] - ref_row[i]));
      max_ref = std::max(max_ref, std::abs(ref_row[i]));
    }
    EXPECT_LT(max_diff / max_ref, 1e-4);
    if (row != RowOf(batched, 0, vocab_)) ++differing_samples;
    // Probability averaging, by hand, in double.
    const double top = *std::max_element(ref_row.begin(), ref_row.end());
    double total = 0;
    for (double x : ref_row) total += std::exp(x - top);
    for (int i = 0; i < vocab_; ++i) reference_average[i] += std::exp(ref_row[i] - top) / total / samples;
  }
  EXPECT_GE(differing_samples, samples / 2) << "tau = 1.5 should change most samples' experts";
  EXPECT_NE(trace0.records.size(), 0u);
  EXPECT_EQ(trace0.records.size(), trace1.records.size());

  std::vector<float> averaged;
  AverageSampleDistributions(batched, samples, vocab_, &averaged);
  for (int i = 0; i < vocab_; ++i) {
    EXPECT_NEAR(std::exp(averaged[i]), reference_average[i], 1e-4) << "token " << i;
  }
  // The KV cache holds exactly sample 0's keys: equal to a deterministic run.
  KvCache deterministic(model_->config(), 64);
  ASSERT_TRUE(forward.Run(tokens, deterministic, {}, &logits).ok());
  for (int layer = 0; layer < model_->config().num_layers; ++layer) {
    const size_t count = tokens.size() * static_cast<size_t>(kv.kv_size());
    EXPECT_TRUE(std::equal(kv.Keys(layer), kv.Keys(layer) + count, deterministic.Keys(layer)));
    if (model_->config().kv_has_values()) {  // latent attention keeps its cache in the key rows
      EXPECT_TRUE(std::equal(kv.Values(layer), kv.Values(layer) + count, deterministic.Values(layer)));
    }
  }
  EXPECT_EQ(kv.memory_bytes(), deterministic.memory_bytes());
}

TEST_P(BatchedStepTest, SameSeedSameRoutingDifferentSeedDifferentRouting) {
  ForwardPass forward(*model_, nullptr);
  std::vector<float> tau(model_->config().num_layers, 1.0f);
  auto routing = [&](uint64_t seed) {
    KvCache kv(model_->config(), 64);
    std::vector<float> logits;
    EXPECT_TRUE(forward.Run(std::vector<int32_t>{5, 17, 260}, kv, {}, &logits).ok());
    const std::vector<RowNoise> noises = Noises(tau, 8, seed);
    std::vector<StepRow> rows = RosterRows(99, &kv, noises);
    std::vector<RoutingTrace> traces(rows.size());
    for (size_t s = 0; s < rows.size(); ++s) rows[s].trace = &traces[s];
    EXPECT_TRUE(forward.Step(rows, &logits).ok());
    std::vector<int32_t> experts;
    for (const RoutingTrace& trace : traces) {
      for (const RoutingRecord& r : trace.records) experts.insert(experts.end(), r.experts.begin(), r.experts.end());
    }
    return experts;
  };
  EXPECT_EQ(routing(7), routing(7));
  EXPECT_NE(routing(7), routing(8));
}

// Chunked prefill (the daemon's scheduler puts decode steps between the
// chunks): every chunk size gives the prompt logits and next-token
// distribution of one whole prefill, bit for bit, with and without a
// roster, and the cache ends holding the whole prompt.
TEST_P(BatchedStepTest, ChunkedPrefillEqualsOneWholePrefill) {
  kernels::ThreadPool pool(2);
  ForwardPass forward(*model_, &pool);
  BatchDecoder decoder(*model_, forward);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 23; ++i) prompt.push_back(static_cast<int32_t>((i * 53 + 7) % vocab_));
  RosterOptions plain;
  RosterOptions roster;
  roster.samples = 3;
  roster.temperature = 0.5f;
  roster.seed = 4;
  for (const RosterOptions& options : {plain, roster}) {
    DecodingSequence whole(*model_, 64, 0, options);
    std::vector<float> whole_next, whole_prompt;
    ASSERT_TRUE(decoder.Prefill(whole, prompt, &whole_next, &whole_prompt).ok());
    ASSERT_EQ(whole_prompt.size(), prompt.size() * vocab_);
    for (int chunk : {1, 4, 7, 22, 23, 100}) {
      SCOPED_TRACE(::testing::Message() << "chunks of " << chunk << ", roster " << options.samples);
      DecodingSequence sequence(*model_, 64, 0, options);
      std::vector<float> next, prompt_logits;
      int calls = 0;
      while (true) {
        absl::StatusOr<bool> done = decoder.PrefillChunk(sequence, prompt, chunk, &next, &prompt_logits);
        ASSERT_TRUE(done.ok()) << done.status();
        ++calls;
        if (*done) break;
        ASSERT_LT(calls, 100);
      }
      const int head = options.samples > 1 ? 22 : 23;  // a roster's last position is a step of its own
      EXPECT_EQ(calls, (head + chunk - 1) / chunk + (options.samples > 1 ? 1 : 0));
      EXPECT_EQ(sequence.length(), 23);
      EXPECT_EQ(next, whole_next);
      EXPECT_EQ(prompt_logits, whole_prompt);
      EXPECT_EQ(sequence.costs().prompt_rows, 23);
      // A finished prompt takes no more chunks.
      EXPECT_EQ(decoder.PrefillChunk(sequence, prompt, chunk, &next).status().code(),
                absl::StatusCode::kFailedPrecondition);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, BatchedStepTest,
                         ::testing::Values("olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "gpt_oss"));

}  // namespace
}  // namespace expertd::engine
