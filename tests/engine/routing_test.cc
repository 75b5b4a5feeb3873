#include "engine/routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace expertd::engine {
namespace {

// Brute force: the k-subset of largest probabilities, sorted descending.
TEST(Routing, MatchesSortedSoftmaxForEveryK) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int experts = 16;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> logits(experts);
    for (float& l : logits) l = normal(rng);
    std::vector<double> probs(experts);
    double sum = 0.0;
    for (int e = 0; e < experts; ++e) sum += (probs[e] = std::exp(double(logits[e])));
    for (double& p : probs) p /= sum;
    std::vector<int> order(experts);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return probs[a] > probs[b]; });
    for (int k = 1; k <= experts; ++k) {
      for (bool normalize : {false, true}) {
        std::vector<float> scratch(experts), weights(k);
        std::vector<int32_t> chosen(k);
        RouteToken(logits.data(), experts, k, normalize, scratch.data(), chosen.data(), weights.data());
        double chosen_sum = 0.0;
        for (int j = 0; j < k; ++j) chosen_sum += probs[order[j]];
        for (int j = 0; j < k; ++j) {
          EXPECT_EQ(chosen[j], order[j]);
          const double expected = normalize ? probs[order[j]] / chosen_sum : probs[order[j]];
          EXPECT_NEAR(weights[j], expected, 1e-6);
        }
      }
    }
  }
}

TEST(Routing, TiesGoToTheLowerIndex) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 0.0f};
  std::vector<float> scratch(4), weights(2);
  std::vector<int32_t> chosen(2);
  RouteToken(logits.data(), 4, 2, true, scratch.data(), chosen.data(), weights.data());
  EXPECT_EQ(chosen, (std::vector<int32_t>{1, 2}));
  EXPECT_FLOAT_EQ(weights[0], 0.5f);
}

}  // namespace
}  // namespace expertd::engine
