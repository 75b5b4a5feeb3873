#include "engine/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace expertd {
namespace {

const std::vector<float> kLogits = {0.5f, 2.0f, -1.0f, 1.5f, 0.0f};

TEST(Sampler, GreedyIsArgmax) {
  Sampler sampler({});
  EXPECT_EQ(sampler.Sample(kLogits), 1);
}

TEST(Sampler, SameSeedSameChoices) {
  Sampler a({1.0f, 0, 1.0f, 42});
  Sampler b({1.0f, 0, 1.0f, 42});
  Sampler c({1.0f, 0, 1.0f, 43});
  std::vector<int32_t> from_a, from_b, from_c;
  for (int i = 0; i < 64; ++i) {
    from_a.push_back(a.Sample(kLogits));
    from_b.push_back(b.Sample(kLogits));
    from_c.push_back(c.Sample(kLogits));
  }
  EXPECT_EQ(from_a, from_b);
  EXPECT_NE(from_a, from_c);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  Sampler top_k({1.0f, 1, 1.0f, 3});
  Sampler top_p({1.0f, 0, 0.01f, 3});
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(top_k.Sample(kLogits), 1);
    EXPECT_EQ(top_p.Sample(kLogits), 1);
  }
}

// Frequencies over many draws follow softmax(logits / T), restricted and
// renormalised by top-k / top-p, within five standard errors.
void ExpectDistribution(const SamplingOptions& options, const std::vector<double>& expected) {
  Sampler sampler(options);
  const int draws = 40000;
  std::vector<int> counts(kLogits.size());
  for (int i = 0; i < draws; ++i) ++counts[sampler.Sample(kLogits)];
  for (size_t id = 0; id < expected.size(); ++id) {
    const double p = expected[id];
    const double tolerance = 5.0 * std::sqrt(p * (1 - p) / draws) + 1e-9;
    EXPECT_NEAR(counts[id] / double(draws), p, tolerance) << "token " << id;
  }
}

std::vector<double> Softmax(const std::vector<int>& keep, double temperature) {
  std::vector<double> p(kLogits.size(), 0.0);
  double sum = 0.0;
  for (int id : keep) sum += (p[id] = std::exp(kLogits[id] / temperature));
  for (double& v : p) v /= sum;
  return p;
}

TEST(Sampler, TemperatureFollowsSoftmax) {
  ExpectDistribution({1.0f, 0, 1.0f, 7}, Softmax({0, 1, 2, 3, 4}, 1.0));
  ExpectDistribution({0.5f, 0, 1.0f, 8}, Softmax({0, 1, 2, 3, 4}, 0.5));
}

TEST(Sampler, TopKAndTopPRestrictTheSupport) {
  ExpectDistribution({1.0f, 2, 1.0f, 9}, Softmax({1, 3}, 1.0));
  // softmax at T=1: p(1)=.496, p(3)=.301, p(0)=.111: top-p 0.7 keeps {1, 3}
  // (cumulative .797), 0.85 adds 0 (cumulative .908).
  ExpectDistribution({1.0f, 0, 0.7f, 10}, Softmax({1, 3}, 1.0));
  ExpectDistribution({1.0f, 0, 0.85f, 11}, Softmax({1, 3, 0}, 1.0));
}

TEST(Sampler, Validation) {
  EXPECT_FALSE(ValidateSamplingOptions({-1.0f, 0, 1.0f, 0}).ok());
  EXPECT_FALSE(ValidateSamplingOptions({1.0f, -1, 1.0f, 0}).ok());
  EXPECT_FALSE(ValidateSamplingOptions({1.0f, 0, 0.0f, 0}).ok());
  EXPECT_FALSE(ValidateSamplingOptions({1.0f, 0, 1.5f, 0}).ok());
  EXPECT_FALSE(ValidateSamplingOptions({NAN, 0, 1.0f, 0}).ok());
  EXPECT_TRUE(ValidateSamplingOptions({0.7f, 40, 0.9f, 0}).ok());
}

TEST(Sampler, LogProbabilityIsNormalised) {
  double total = 0.0;
  for (size_t id = 0; id < kLogits.size(); ++id) total += std::exp(LogProbability(kLogits, id));
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_NEAR(LogProbability(kLogits, 1) - LogProbability(kLogits, 2), 3.0, 1e-6);
}

}  // namespace
}  // namespace expertd
