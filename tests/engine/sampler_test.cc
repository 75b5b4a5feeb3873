#include "engine/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace expertd::engine {
namespace {

const std::vector<float> kLogits = {0.5f, 2.0f, -1.0f, 1.5f, 0.0f};

SamplingOptions Opts(float temperature, int top_k, float top_p, uint64_t seed) {
  return SamplingOptions{.temperature = temperature, .top_k = top_k, .top_p = top_p, .seed = seed};
}

TEST(Sampler, GreedyIsArgmax) {
  Sampler sampler({});
  EXPECT_EQ(sampler.Sample(kLogits), 1);
}

TEST(Sampler, SameSeedSameChoices) {
  Sampler a(Opts(1.0f, 0, 1.0f, 42));
  Sampler b(Opts(1.0f, 0, 1.0f, 42));
  Sampler c(Opts(1.0f, 0, 1.0f, 43));
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
  Sampler top_k(Opts(1.0f, 1, 1.0f, 3));
  Sampler top_p(Opts(1.0f, 0, 0.01f, 3));
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
  EXPECT_FALSE(ValidateSamplingOptions(Opts(-1.0f, 0, 1.0f, 0)).ok());
  EXPECT_FALSE(ValidateSamplingOptions(Opts(1.0f, -1, 1.0f, 0)).ok());
  EXPECT_FALSE(ValidateSamplingOptions(Opts(1.0f, 0, 0.0f, 0)).ok());
  EXPECT_FALSE(ValidateSamplingOptions(Opts(1.0f, 0, 1.5f, 0)).ok());
  EXPECT_FALSE(ValidateSamplingOptions(Opts(NAN, 0, 1.0f, 0)).ok());
  EXPECT_TRUE(ValidateSamplingOptions(Opts(0.7f, 40, 0.9f, 0)).ok());
}

TEST(Sampler, LogitBiasBansAndForcesTokens) {
  SamplingOptions ban = Opts(0.0f, 0, 1.0f, 0);
  ban.logit_bias = {{1, -100.0f}};  // the argmax, banned: the next best wins
  EXPECT_EQ(Sampler(ban).Sample(kLogits), 3);
  SamplingOptions force = Opts(1.0f, 0, 1.0f, 5);
  force.logit_bias = {{2, 100.0f}};  // the least likely, forced at temperature 1
  Sampler forced(force);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(forced.Sample(kLogits), 2);
}

TEST(Sampler, PenaltiesCountTheSamplersOwnChoices) {
  // Greedy with a presence penalty of 2: token 1 (2.0) is chosen, then pays
  // 2 (0.0 < 1.5), so token 3 comes next, then pays too (-0.5 < 0.5): 0.
  SamplingOptions presence = Opts(0.0f, 0, 1.0f, 0);
  presence.presence_penalty = 2.0f;
  Sampler by_presence(presence);
  EXPECT_EQ(by_presence.Sample(kLogits), 1);
  EXPECT_EQ(by_presence.Sample(kLogits), 3);
  EXPECT_EQ(by_presence.Sample(kLogits), 0);
  // A frequency penalty of 0.3 grows per choice: token 1 stays ahead of 3
  // (2.0 - 0.3 n > 1.5) for n = 0 and 1, and falls behind at n = 2.
  SamplingOptions frequency = Opts(0.0f, 0, 1.0f, 0);
  frequency.frequency_penalty = 0.3f;
  Sampler by_frequency(frequency);
  EXPECT_EQ(by_frequency.Sample(kLogits), 1);
  EXPECT_EQ(by_frequency.Sample(kLogits), 1);
  EXPECT_EQ(by_frequency.Sample(kLogits), 3);
  // No penalty: greedy stays on token 1.
  Sampler plain(Opts(0.0f, 0, 1.0f, 0));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(plain.Sample(kLogits), 1);
}

TEST(Sampler, PenaltyAndBiasValidation) {
  SamplingOptions options = Opts(1.0f, 0, 1.0f, 0);
  options.presence_penalty = 2.5f;
  EXPECT_FALSE(ValidateSamplingOptions(options).ok());
  options.presence_penalty = -2.0f;
  options.frequency_penalty = 2.0f;
  EXPECT_TRUE(ValidateSamplingOptions(options).ok());
  options.logit_bias = {{4, 100.0f}};
  EXPECT_TRUE(ValidateSamplingOptions(options, 5).ok());
  options.logit_bias = {{5, 1.0f}};
  EXPECT_FALSE(ValidateSamplingOptions(options, 5).ok());
  options.logit_bias = {{0, 100.5f}};
  EXPECT_FALSE(ValidateSamplingOptions(options, 5).ok());
}

TEST(Sampler, LogProbabilityIsNormalised) {
  double total = 0.0;
  for (size_t id = 0; id < kLogits.size(); ++id) total += std::exp(LogProbability(kLogits, id));
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_NEAR(LogProbability(kLogits, 1) - LogProbability(kLogits, 2), 3.0, 1e-6);
}

}  // namespace
}  // namespace expertd::engine
