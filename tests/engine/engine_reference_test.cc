// The engine's forward pass against the plain-loop reference, for every
// architecture and weight dtype, plus KV-cache and dial-k properties.

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "engine/forward.h"
#include "model/model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/reference/reference_model.h"
#include "tests/testing/test_models.h"

namespace expertd::engine {
namespace {

using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;

tools::MakeModelOptions OptionsFor(const std::string& arch, const std::string& dtype) {
  tools::MakeModelOptions o;
  o.arch = arch.rfind("deepseek_v2", 0) == 0 ? "deepseek_v2" : arch;
  o.dtype = dtype;
  o.layers = 3;
  o.hidden = 64;
  o.experts = 8;
  o.top_k = 2;
  o.ffn = 48;
  o.heads = 4;
  o.kv_heads = 2;
  o.vocab = 320;
  o.seed = 7;
  if (arch == "olmoe") {
    o.norm_topk_prob = false;  // the real OLMoE does not renormalise
    o.kv_heads = 4;
  }
  if (arch == "qwen2_moe") o.dense_layers = {1};  // exercise a dense MLP layer
  if (arch == "qwen3_moe") o.head_dim = 32;        // head_dim != hidden / heads
  if (arch == "mixtral") o.tie_embeddings = true;
  // DeepSeek-V2-Lite's shape (a plain q_proj, greedy, YaRN) and V2's (a
  // low-rank query, group-limited routing, a routed scaling factor and
  // renormalised top-k); both with a dense first layer and shared experts.
  if (arch == "deepseek_v2") {
    o.yarn_factor = 4.0f;
    o.shared_experts = 2;
  }
  // gpt-oss: sliding (window 4, shorter than kTokens) and full layers,
  // sinks, biases everywhere, the clamped SwiGLU, YaRN x32, top-4.
  if (arch == "gpt_oss") {
    o.top_k = 4;
    o.head_dim = 16;
  }
  if (arch == "deepseek_v2_grouped") {
    o.q_lora_rank = 24;
    o.n_group = 4;
    o.topk_group = 2;
    o.top_k = 3;
    o.routed_scaling_factor = 1.5f;
  }
  return o;
}

// Largest |a - b| relative to the largest |b|: logits are O(1..10), so this is
// a relative error of the whole row set.
double RelativeError(const std::vector<float>& engine, const std::vector<std::vector<double>>& reference,
                     size_t first_row = 0) {
  double max_diff = 0.0;
  double max_ref = 1e-9;
  const size_t vocab = reference[0].size();
  for (size_t r = 0; r < engine.size() / vocab; ++r) {
    for (size_t i = 0; i < vocab; ++i) {
      max_diff = std::max(max_diff, std::abs(engine[r * vocab + i] - reference[first_row + r][i]));
      max_ref = std::max(max_ref, std::abs(reference[first_row + r][i]));
    }
  }
  return max_diff / max_ref;
}

const std::vector<int32_t> kTokens = {5, 17, 260, 99, 3, 42, 42, 1, 300, 77, 128, 64, 250, 11};

class EngineVsReference : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  void SetUp() override {
    const auto& [arch, dtype] = GetParam();
    model_dir_ = MakeTestModel(dir_, arch + "_" + dtype, OptionsFor(arch, dtype));
    auto model = model::Model::Load(model_dir_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
  }

  std::vector<float> EngineLogits(const std::vector<int32_t>& tokens, int k, kernels::ThreadPool* pool) {
    ForwardPass forward(*model_, pool);
    KvCache kv(model_->config(), 256);
    ForwardOptions options;
    options.experts_per_token = k;
    options.all_logits = true;
    std::vector<float> logits;
    absl::Status status = forward.Run(tokens, kv, options, &logits);
    EXPECT_TRUE(status.ok()) << status;
    EXPECT_EQ(kv.length(), static_cast<int>(tokens.size()));
    return logits;
  }

  ScopedTempDir dir_{"engine_ref"};
  std::string model_dir_;
  std::unique_ptr<model::Model> model_;
};

TEST_P(EngineVsReference, PrefillLogitsMatchReference) {
  kernels::ThreadPool pool(2);
  const std::vector<float> logits = EngineLogits(kTokens, 0, &pool);
  auto reference = reference::ReferenceLogits(model_dir_, kTokens);
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ(logits.size(), kTokens.size() * model_->config().vocab_size);
  EXPECT_LT(RelativeError(logits, *reference), 1e-4);
}

TEST_P(EngineVsReference, EveryKRunsAndMatchesReference) {
  for (int k = 1; k <= model_->config().num_experts; ++k) {
    SCOPED_TRACE(k);
    const std::vector<int32_t> tokens(kTokens.begin(), kTokens.begin() + 6);
    const std::vector<float> logits = EngineLogits(tokens, k, nullptr);
    auto reference = reference::ReferenceLogits(model_dir_, tokens, k);
    ASSERT_TRUE(reference.ok()) << reference.status();
    EXPECT_LT(RelativeError(logits, *reference), 1e-4);
  }
}

TEST_P(EngineVsReference, NativeKIsTheDefault) {
  const std::vector<float> by_default = EngineLogits(kTokens, 0, nullptr);
  const std::vector<float> native = EngineLogits(kTokens, model_->config().experts_per_token, nullptr);
  EXPECT_EQ(by_default, native);
  const std::vector<float> other = EngineLogits(kTokens, model_->config().experts_per_token + 1, nullptr);
  EXPECT_NE(by_default, other);
}

TEST_P(EngineVsReference, CachedDecodeEqualsFullRecompute) {
  kernels::ThreadPool pool(2);
  const std::vector<float> full = EngineLogits(kTokens, 0, &pool);
  const size_t vocab = model_->config().vocab_size;

  ForwardPass forward(*model_, &pool);
  KvCache kv(model_->config(), 256);
  std::vector<float> logits;
  const size_t prefix = 5;
  ASSERT_TRUE(forward.Run(absl::MakeConstSpan(kTokens.data(), prefix), kv, {}, &logits).ok());
  for (size_t t = prefix; t < kTokens.size(); ++t) {
    ASSERT_TRUE(forward.Run(absl::MakeConstSpan(&kTokens[t], 1), kv, {}, &logits).ok());
    ASSERT_EQ(logits.size(), vocab);
    double max_diff = 0.0;
    for (size_t i = 0; i < vocab; ++i) max_diff = std::max(max_diff, double(std::abs(logits[i] - full[t * vocab + i])));
    EXPECT_LT(max_diff, 1e-4) << "position " << t;
  }
}

TEST_P(EngineVsReference, ThreadCountDoesNotChangeResults) {
  kernels::ThreadPool two(2);
  kernels::ThreadPool three(3);
  EXPECT_EQ(EngineLogits(kTokens, 0, nullptr), EngineLogits(kTokens, 0, &two));
  EXPECT_EQ(EngineLogits(kTokens, 0, nullptr), EngineLogits(kTokens, 0, &three));
}

TEST_P(EngineVsReference, TraceRecordsEveryTokenAndLayer) {
  ForwardPass forward(*model_, nullptr);
  KvCache kv(model_->config(), 256);
  std::vector<float> logits;
  RoutingTrace trace;
  ASSERT_TRUE(forward.Run(kTokens, kv, {}, &logits, &trace).ok());
  int moe_layers = 0;
  for (bool is_moe : model_->config().layer_is_moe) moe_layers += is_moe;
  ASSERT_EQ(trace.records.size(), kTokens.size() * moe_layers);
  for (const RoutingRecord& record : trace.records) {
    ASSERT_EQ(record.experts.size(), static_cast<size_t>(model_->config().experts_per_token));
    for (size_t j = 1; j < record.weights.size(); ++j) EXPECT_GE(record.weights[j - 1], record.weights[j]);
    EXPECT_NE(record.experts[0], record.experts[1]);
  }
}

INSTANTIATE_TEST_SUITE_P(AllArchitecturesAndDtypes, EngineVsReference,
                         ::testing::Combine(::testing::Values("olmoe", "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2",
                                                              "deepseek_v2_grouped", "gpt_oss"),
                                            ::testing::Values("f32", "bf16", "f16")),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param);
                         });

}  // namespace
}  // namespace expertd::engine
