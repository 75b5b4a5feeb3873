#include "predictor/expert_predictor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::predictor {
namespace {

// Router matrices owned by the test, plus each element's exact f32 value.
struct Routers {
  std::vector<std::vector<float>> f32;      // [layer] storage when dtype is f32
  std::vector<std::vector<uint16_t>> b16;   // [layer] storage when dtype is bf16/f16
  std::vector<std::vector<float>> values;   // [layer] exact values
  ModelShape shape;
};

// Every MoE layer's router comes from `seed_of(layer)`: equal seeds give
// identical routers.
Routers MakeRouters(DType dtype, int num_layers, int num_experts, int hidden, std::vector<bool> is_moe,
                    const std::function<uint32_t(int)>& seed_of) {
  Routers r;
  r.shape.num_layers = num_layers;
  r.shape.num_experts = num_experts;
  r.shape.hidden_size = hidden;
  r.shape.layer_is_moe = std::move(is_moe);
  r.f32.resize(num_layers);
  r.b16.resize(num_layers);
  r.values.resize(num_layers);
  r.shape.routers.resize(num_layers);
  const auto n = static_cast<size_t>(num_experts * hidden);
  for (int l = 0; l < num_layers; ++l) {
    if (!r.shape.layer_is_moe[l]) continue;
    std::mt19937 rng(seed_of(l));
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    r.values[l].resize(n);
    if (dtype == DType::kF32) {
      r.f32[l].resize(n);
      for (size_t i = 0; i < n; ++i) r.f32[l][i] = r.values[l][i] = dist(rng);
    } else {
      r.b16[l].resize(n);
      for (size_t i = 0; i < n; ++i) {
        r.b16[l][i] = kernels::F32ToBF16(dist(rng));
        r.values[l][i] = kernels::BF16ToF32(r.b16[l][i]);
      }
    }
    kernels::WeightMatrix& w = r.shape.routers[l];
    w.dtype = dtype;
    w.rows = num_experts;
    w.cols = hidden;
    w.data = dtype == DType::kF32 ? static_cast<const void*>(r.f32[l].data())
                                  : static_cast<const void*>(r.b16[l].data());
  }
  return r;
}

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The true top-k of router·x, computed in double from the exact weights.
std::vector<int32_t> ReferenceTopK(const Routers& r, int layer, const float* x, int k) {
  const int e_count = r.shape.num_experts;
  const int hidden = r.shape.hidden_size;
  std::vector<double> logits(e_count);
  for (int e = 0; e < e_count; ++e) {
    double sum = 0;
    for (int c = 0; c < hidden; ++c) sum += double{r.values[layer][e * hidden + c]} * x[c];
    logits[e] = sum;
  }
  std::vector<int32_t> order(e_count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  order.resize(k);
  return order;
}

std::vector<int32_t> ExpertsOf(const LayerPrediction& p) {
  std::vector<int32_t> out;
  for (const auto& [e, score] : p.experts) out.push_back(e);
  return out;
}

std::unique_ptr<ExpertPredictor> Make(const std::string& kind, const ModelShape& shape, int lookahead,
                                      int per_layer = 0, kernels::ThreadPool* pool = nullptr) {
  PredictorOptions options;
  options.kind = kind;
  options.lookahead = lookahead;
  options.per_layer = per_layer;
  auto p = MakePredictor(options, shape, pool);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

class CrossLayerExactTest : public ::testing::TestWithParam<DType> {};

// With identical consecutive routers and an unchanged gate input, the
// cross-layer gate's prediction for layer l+1 is layer l+1's true routing.
TEST_P(CrossLayerExactTest, PredictsTrueTopKOfNextRouter) {
  constexpr int kLayers = 4, kExperts = 32, kHidden = 96, kTopK = 4;
  const Routers r = MakeRouters(GetParam(), kLayers, kExperts, kHidden, std::vector<bool>(kLayers, true),
                                [](int) { return 7u; });
  auto predictor = Make("cross-layer", r.shape, /*lookahead=*/1, /*per_layer=*/kTopK);
  ASSERT_NE(predictor, nullptr);
  std::vector<LayerPrediction> predictions;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    const std::vector<float> x = RandomVector(kHidden, seed);
    for (int l = 0; l + 1 < kLayers; ++l) {
      predictor->Predict(l, x, /*n_tokens=*/1, kTopK, &predictions);
      ASSERT_EQ(predictions.size(), 1u);
      EXPECT_EQ(predictions[0].layer, l + 1);
      EXPECT_EQ(predictions[0].distance, 1);
      EXPECT_EQ(ExpertsOf(predictions[0]), ReferenceTopK(r, l + 1, x.data(), kTopK)) << "seed " << seed;
      float previous = 1.0f;
      for (const auto& [e, p] : predictions[0].experts) {
        EXPECT_GT(p, 0.0f);
        EXPECT_LE(p, previous);  // probabilities, descending
        previous = p;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CrossLayerExactTest, ::testing::Values(DType::kF32, DType::kBF16));

// A router bias (gpt-oss) counts: a large bias on two experts puts them
// first whatever the input, and the rest follow the biased logits.
TEST(CrossLayerPredictorTest, AddsTheRouterBias) {
  constexpr int kExperts = 8, kHidden = 16;
  Routers r = MakeRouters(DType::kF32, 2, kExperts, kHidden, {true, true}, [](int l) { return 20u + l; });
  std::vector<float> bias(kExperts, 0.0f);
  bias[5] = 100.0f;
  bias[2] = 90.0f;
  bias[7] = 0.5f;
  r.shape.router_biases = {nullptr, bias.data()};
  auto predictor = Make("cross-layer", r.shape, 1, /*per_layer=*/4);
  ASSERT_NE(predictor, nullptr);
  std::vector<LayerPrediction> predictions;
  for (uint32_t seed = 1; seed <= 5; ++seed) {
    const std::vector<float> x = RandomVector(kHidden, seed);
    predictor->Predict(0, x, 1, /*k=*/4, &predictions);
    ASSERT_EQ(predictions.size(), 1u);
    std::vector<std::pair<float, int32_t>> biased;
    for (int e = 0; e < kExperts; ++e) {
      double logit = bias[e];
      for (int i = 0; i < kHidden; ++i) logit += r.values[1][e * kHidden + i] * x[i];
      biased.push_back({static_cast<float>(-logit), e});
    }
    std::sort(biased.begin(), biased.end());
    const std::vector<int32_t> expected = {biased[0].second, biased[1].second, biased[2].second, biased[3].second};
    EXPECT_EQ(expected[0], 5);
    EXPECT_EQ(expected[1], 2);
    EXPECT_EQ(ExpertsOf(predictions[0]), expected) << "seed " << seed;
  }
}

TEST(CrossLayerPredictorTest, DecodeDefaultsToTwiceKAndProbabilitiesSumBelowOne) {
  const Routers r = MakeRouters(DType::kF32, 2, 16, 32, {true, true}, [](int l) { return 10u + l; });
  auto predictor = Make("cross-layer", r.shape, 1);
  std::vector<LayerPrediction> predictions;
  const std::vector<float> x = RandomVector(32, 3);
  predictor->Predict(0, x, 1, /*k=*/3, &predictions);
  ASSERT_EQ(predictions.size(), 1u);
  ASSERT_EQ(predictions[0].experts.size(), 6u);
  EXPECT_EQ(ExpertsOf(predictions[0]), ReferenceTopK(r, 1, x.data(), 6));
  float sum = 0;
  for (const auto& [e, p] : predictions[0].experts) sum += p;
  EXPECT_LE(sum, 1.0001f);
}

TEST(CrossLayerPredictorTest, LookaheadGivesDistancesAndStopsAtLastLayer) {
  constexpr int kLayers = 5;
  const Routers r = MakeRouters(DType::kF32, kLayers, 8, 16, std::vector<bool>(kLayers, true),
                                [](int l) { return 100u + l; });
  auto predictor = Make("cross-layer", r.shape, /*lookahead=*/3, /*per_layer=*/2);
  std::vector<LayerPrediction> predictions;
  const std::vector<float> x = RandomVector(16, 5);
  predictor->Predict(0, x, 1, 2, &predictions);
  ASSERT_EQ(predictions.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(predictions[i].layer, i + 1);
    EXPECT_EQ(predictions[i].distance, i + 1);
    // Lookahead applies layer j's own router to the same x.
    EXPECT_EQ(ExpertsOf(predictions[i]), ReferenceTopK(r, i + 1, x.data(), 2));
  }
  predictor->Predict(3, x, 1, 2, &predictions);
  ASSERT_EQ(predictions.size(), 1u);
  EXPECT_EQ(predictions[0].layer, 4);
  EXPECT_EQ(predictions[0].distance, 1);
  predictor->Predict(4, x, 1, 2, &predictions);
  EXPECT_TRUE(predictions.empty());
}

TEST(CrossLayerPredictorTest, SkipsDenseLayers) {
  const Routers r = MakeRouters(DType::kF32, 5, 8, 16, {false, true, false, true, true},
                                [](int l) { return 200u + l; });
  auto predictor = Make("cross-layer", r.shape, /*lookahead=*/2, 2);
  std::vector<LayerPrediction> predictions;
  const std::vector<float> x = RandomVector(16, 6);
  predictor->Predict(1, x, 1, 2, &predictions);
  ASSERT_EQ(predictions.size(), 1u);
  EXPECT_EQ(predictions[0].layer, 3);
  EXPECT_EQ(predictions[0].distance, 2);
  predictor->Predict(0, x, 1, 2, &predictions);  // dense layer 0 still predicts ahead
  ASSERT_EQ(predictions.size(), 1u);
  EXPECT_EQ(predictions[0].layer, 1);
}

// Router = identity, so each token's logits are its gate input.
TEST(CrossLayerPredictorTest, PrefillCountsEveryTokensTopK) {
  std::vector<float> identity(16, 0.0f);
  for (int i = 0; i < 4; ++i) identity[i * 4 + i] = 1.0f;
  ModelShape shape;
  shape.num_layers = 2;
  shape.num_experts = 4;
  shape.hidden_size = 4;
  shape.layer_is_moe = {true, true};
  shape.routers.resize(2);
  for (auto& w : shape.routers) w = kernels::WeightMatrix{DType::kF32, identity.data(), 4, 4};
  auto predictor = Make("cross-layer", shape, 1, /*per_layer=*/1);  // prefill ignores per_layer
  const std::vector<float> x = {
      4, 3, 1, 0,  // top-2 {0, 1}
      0, 3, 4, 1,  // {2, 1}
      0, 5, 1, 2,  // {1, 3}
  };
  std::vector<LayerPrediction> predictions;
  predictor->Predict(0, x, /*n_tokens=*/3, /*k=*/2, &predictions);
  ASSERT_EQ(predictions.size(), 1u);
  const std::vector<std::pair<int32_t, float>> expected = {{1, 3.0f}, {0, 1.0f}, {2, 1.0f}, {3, 1.0f}};
  EXPECT_EQ(predictions[0].experts, expected);
}

TEST(CrossLayerPredictorTest, ThreadPoolGivesTheSameResult) {
  const Routers r = MakeRouters(DType::kBF16, 3, 64, 256, {true, true, true}, [](int l) { return 300u + l; });
  kernels::ThreadPool pool(4);
  auto serial = Make("cross-layer", r.shape, 2);
  auto parallel = Make("cross-layer", r.shape, 2, 0, &pool);
  const std::vector<float> x = RandomVector(256 * 5, 9);
  std::vector<LayerPrediction> a, b;
  for (int n_tokens : {1, 5}) {
    serial->Predict(0, x, n_tokens, 4, &a);
    parallel->Predict(0, x, n_tokens, 4, &b);
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(b.size(), 2u);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].experts, b[i].experts);
  }
}

TEST(PreviousTokenPredictorTest, PredictsThePreviousPassExperts) {
  ModelShape shape;
  shape.num_layers = 4;
  shape.num_experts = 8;
  shape.layer_is_moe = {true, true, false, true};
  auto predictor = Make("previous-token", shape, /*lookahead=*/3);
  std::vector<LayerPrediction> predictions;
  const std::vector<float> x(4, 0.0f);
  predictor->BeginPass();
  predictor->Predict(0, x, 1, 2, &predictions);
  EXPECT_TRUE(predictions.empty());  // nothing observed yet
  const std::vector<int32_t> chosen0 = {3, 1}, chosen1 = {6, 2, 2, 7}, chosen3 = {5, 0};
  predictor->Observe(0, chosen0, 1, 2);
  predictor->Observe(1, chosen1, 2, 2);
  predictor->Observe(3, chosen3, 1, 2);

  predictor->BeginPass();
  predictor->Predict(0, x, 1, 2, &predictions);
  ASSERT_EQ(predictions.size(), 2u);  // layer 2 is dense
  EXPECT_EQ(predictions[0].layer, 1);
  EXPECT_EQ(predictions[0].distance, 1);
  EXPECT_EQ(ExpertsOf(predictions[0]), (std::vector<int32_t>{2, 6, 7}));
  for (const auto& [e, s] : predictions[0].experts) EXPECT_EQ(s, 1.0f);
  EXPECT_EQ(predictions[1].layer, 3);
  EXPECT_EQ(predictions[1].distance, 3);
  EXPECT_EQ(ExpertsOf(predictions[1]), (std::vector<int32_t>{0, 5}));

  // Layer 1 of this pass routes elsewhere: the next pass predicts that.
  const std::vector<int32_t> new1 = {4, 0};
  predictor->Observe(1, new1, 1, 2);
  predictor->BeginPass();
  predictor->Predict(0, x, 1, 2, &predictions);
  ASSERT_FALSE(predictions.empty());
  EXPECT_EQ(ExpertsOf(predictions[0]), (std::vector<int32_t>{0, 4}));
}

TEST(NonePredictorTest, PredictsNothing) {
  ModelShape shape;
  auto predictor = Make("none", shape, 2);
  std::vector<LayerPrediction> predictions(3);
  predictor->Predict(0, {}, 1, 2, &predictions);
  EXPECT_TRUE(predictions.empty());
  EXPECT_EQ(predictor->name(), "none");
}

TEST(MakePredictorTest, RejectsBadOptionsAndShapes) {
  const Routers r = MakeRouters(DType::kF32, 2, 8, 16, {true, true}, [](int) { return 1u; });
  PredictorOptions options;
  options.kind = "oracle";
  auto bad_kind = MakePredictor(options, r.shape, nullptr);
  ASSERT_FALSE(bad_kind.ok());
  EXPECT_EQ(bad_kind.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_kind.status().message().find("cross-layer"), absl::string_view::npos);
  EXPECT_NE(bad_kind.status().message().find("previous-token"), absl::string_view::npos);

  options.kind = "cross-layer";
  options.lookahead = 0;
  EXPECT_FALSE(MakePredictor(options, r.shape, nullptr).ok());

  options.lookahead = 1;
  ModelShape wrong = r.shape;
  wrong.routers[1].rows = 7;
  auto bad_router = MakePredictor(options, wrong, nullptr);
  ASSERT_FALSE(bad_router.ok());
  EXPECT_NE(bad_router.status().message().find("layer 1"), absl::string_view::npos);
  EXPECT_TRUE(MakePredictor(options, r.shape, nullptr).ok());
}

}  // namespace
}  // namespace expertd::predictor
