// Roster of Experts building blocks: options, per-layer temperatures, the
// Gumbel draws, perturbed routing and probability averaging.

#include "engine/roster.h"

#include <cmath>
#include <numeric>
#include <vector>

#include "engine/routing.h"
#include "gtest/gtest.h"

namespace expertd::engine {
namespace {

model::ModelConfig SixLayerConfig() {
  model::ModelConfig config;
  config.num_layers = 6;
  config.num_experts = 8;
  config.experts_per_token = 2;
  config.layer_is_moe = {true, true, false, true, true, true};  // 5 MoE layers
  return config;
}

TEST(RosterOptionsTest, ValidationNamesTheField) {
  const model::ModelConfig config = SixLayerConfig();
  EXPECT_TRUE(ValidateRosterOptions({}, config, 32).ok());
  RosterOptions o;
  o.samples = 0;
  EXPECT_NE(ValidateRosterOptions(o, config, 32).message().find("roster.size"), std::string::npos);
  o.samples = 33;
  EXPECT_NE(ValidateRosterOptions(o, config, 32).message().find("at most 32"), std::string::npos);
  EXPECT_TRUE(ValidateRosterOptions(o, config, 0).ok());  // no limit
  o = {};
  o.temperature = -0.1f;
  EXPECT_NE(ValidateRosterOptions(o, config, 32).message().find("roster.temperature"), std::string::npos);
  o.temperature = NAN;
  EXPECT_FALSE(ValidateRosterOptions(o, config, 32).ok());
  o = {};
  o.skip_layers = -1;
  EXPECT_NE(ValidateRosterOptions(o, config, 32).message().find("roster.skip_layers"), std::string::npos);
  o = {};
  o.layer_temperatures = {0.1f, 0.2f};
  EXPECT_NE(ValidateRosterOptions(o, config, 32).message().find("one value per MoE layer (5)"), std::string::npos);
  o.layer_temperatures = {0, 0.1f, 0.2f, -1, 0};
  EXPECT_FALSE(ValidateRosterOptions(o, config, 32).ok());
  o = {};
  o.resident_bonus = -1;
  EXPECT_NE(ValidateRosterOptions(o, config, 32).message().find("roster.resident_bonus"), std::string::npos);
}

TEST(RosterOptionsTest, FirstAndLastMoeLayersAreSkipped) {
  const model::ModelConfig config = SixLayerConfig();
  RosterOptions o;
  o.temperature = 0.3f;
  o.skip_layers = 1;
  // MoE layers are 0, 1, 3, 4, 5: the first (0) and last (5) get tau 0,
  // and the dense layer 2 has none.
  EXPECT_EQ(RosterLayerTemperatures(o, config), (std::vector<float>{0, 0.3f, 0, 0.3f, 0.3f, 0}));
  o.skip_layers = 3;  // more than half: nothing left
  EXPECT_EQ(RosterLayerTemperatures(o, config), std::vector<float>(6, 0.0f));
  o.layer_temperatures = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  EXPECT_EQ(RosterLayerTemperatures(o, config), (std::vector<float>{0.1f, 0.2f, 0, 0.3f, 0.4f, 0.5f}));
}

TEST(GumbelNoiseTest, DeterministicAndStandardGumbelDistributed) {
  EXPECT_EQ(GumbelNoise(1, 2, 3, 4, 5), GumbelNoise(1, 2, 3, 4, 5));
  EXPECT_NE(GumbelNoise(1, 2, 3, 4, 5), GumbelNoise(2, 2, 3, 4, 5));
  EXPECT_NE(GumbelNoise(1, 2, 3, 4, 5), GumbelNoise(1, 3, 3, 4, 5));
  EXPECT_NE(GumbelNoise(1, 2, 3, 4, 5), GumbelNoise(1, 2, 4, 4, 5));
  EXPECT_NE(GumbelNoise(1, 2, 3, 4, 5), GumbelNoise(1, 2, 3, 5, 5));
  EXPECT_NE(GumbelNoise(1, 2, 3, 4, 5), GumbelNoise(1, 2, 3, 4, 6));
  // Gumbel(0, 1): mean = Euler's gamma, variance = pi^2 / 6.
  const int n = 200000;
  double sum = 0, sum_sq = 0;
  for (int i = 0; i < n; ++i) {
    const double g = GumbelNoise(99, i, i % 7, i % 3, i % 11);
    ASSERT_TRUE(std::isfinite(g));
    sum += g;
    sum_sq += g * g;
  }
  const double mean = sum / n;
  const double variance = sum_sq / n - mean * mean;
  const double kVariance = M_PI * M_PI / 6;
  EXPECT_NEAR(mean, 0.5772156649, 5 * std::sqrt(kVariance / n));
  EXPECT_NEAR(variance, kVariance, 0.03);
}

TEST(RoutePerturbedTest, ZeroPerturbationIsOrdinaryRouting) {
  const std::vector<float> logits = {0.3f, -1.0f, 2.0f, 0.9f, 0.0f, 1.7f};
  const std::vector<float> zero(logits.size(), 0.0f);
  for (bool normalize : {false, true}) {
    for (int k = 1; k <= 6; ++k) {
      std::vector<float> probs_a(6), probs_b(6), w_a(k), w_b(k);
      std::vector<int32_t> e_a(k), e_b(k);
      RouteToken(logits.data(), 6, k, normalize, probs_a.data(), e_a.data(), w_a.data());
      RoutePerturbed(logits.data(), zero.data(), 6, k, normalize, probs_b.data(), e_b.data(), w_b.data());
      EXPECT_EQ(e_a, e_b);
      EXPECT_EQ(w_a, w_b);
    }
  }
}

TEST(RoutePerturbedTest, WeightsAreTheRoutersProbabilitiesNotThePerturbedOnes) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  const std::vector<float> perturbation = {5.0f, 0.0f, 0.0f};  // forces expert 0 first
  std::vector<float> probs(3), weights(2);
  std::vector<int32_t> experts(2);
  RoutePerturbed(logits.data(), perturbation.data(), 3, 2, false, probs.data(), experts.data(), weights.data());
  EXPECT_EQ(experts, (std::vector<int32_t>{0, 2}));
  const double total = 1 + std::exp(1.0) + std::exp(2.0);
  EXPECT_NEAR(weights[0], 1 / total, 1e-6);
  EXPECT_NEAR(weights[1], std::exp(2.0) / total, 1e-6);
  RoutePerturbed(logits.data(), perturbation.data(), 3, 2, true, probs.data(), experts.data(), weights.data());
  EXPECT_NEAR(weights[0] + weights[1], 1.0, 1e-6);
  EXPECT_NEAR(weights[0], 1 / (1 + std::exp(2.0)), 1e-6);
}

// Top-k of logits + tau * Gumbel is sampling k experts without replacement
// from softmax(logits / tau) (Plackett-Luce). Checks the first choice's
// frequencies and each expert's inclusion frequency against the exact law.
TEST(RoutePerturbedTest, FrequenciesFollowTopKWithoutReplacementLaw) {
  const std::vector<float> logits = {1.2f, 0.4f, -0.3f, 0.9f, -1.5f};
  const int num_experts = static_cast<int>(logits.size());
  const int k = 2;
  for (float tau : {0.5f, 1.0f}) {
    SCOPED_TRACE(tau);
    std::vector<double> p(num_experts);
    double total = 0;
    for (int e = 0; e < num_experts; ++e) total += (p[e] = std::exp(logits[e] / tau));
    for (double& x : p) x /= total;
    std::vector<double> inclusion(num_experts);
    for (int e = 0; e < num_experts; ++e) {
      inclusion[e] = p[e];
      for (int f = 0; f < num_experts; ++f) {
        if (f != e) inclusion[e] += p[f] * p[e] / (1 - p[f]);
      }
    }
    const int draws = 40000;
    std::vector<int> first(num_experts), included(num_experts);
    std::vector<float> perturbation(num_experts), probs(num_experts), weights(k);
    std::vector<int32_t> experts(k);
    for (int i = 0; i < draws; ++i) {
      for (int e = 0; e < num_experts; ++e) perturbation[e] = tau * GumbelNoise(5, i, 3, 1, e);
      RoutePerturbed(logits.data(), perturbation.data(), num_experts, k, false, probs.data(), experts.data(),
                     weights.data());
      ++first[experts[0]];
      for (int32_t e : experts) ++included[e];
    }
    for (int e = 0; e < num_experts; ++e) {
      const double sigma_first = std::sqrt(p[e] * (1 - p[e]) / draws);
      const double sigma_in = std::sqrt(inclusion[e] * (1 - inclusion[e]) / draws);
      EXPECT_NEAR(static_cast<double>(first[e]) / draws, p[e], 5 * sigma_first) << "expert " << e;
      EXPECT_NEAR(static_cast<double>(included[e]) / draws, inclusion[e], 5 * sigma_in) << "expert " << e;
    }
  }
}

TEST(AverageSampleDistributionsTest, AveragesProbabilitiesNotLogits) {
  // Two samples over a vocabulary of 2: p = (0.9, 0.1) and (0.1, 0.9)
  // average to (0.5, 0.5); averaging logits would too, so add an
  // asymmetric third: (0.5, 0.5) -> the mean is (0.5, 0.5) as well, but
  // (0.99, 0.01) with (0.5, 0.5) averages to (0.745, 0.255).
  const std::vector<float> logits = {std::log(0.99f), std::log(0.01f), 0.0f, 0.0f};
  std::vector<float> out;
  AverageSampleDistributions(logits, 2, 2, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NEAR(std::exp(out[0]), 0.745, 1e-6);
  EXPECT_NEAR(std::exp(out[1]), 0.255, 1e-6);
}

}  // namespace
}  // namespace expertd::engine
