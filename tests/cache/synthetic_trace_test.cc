#include "cache/sim/synthetic_trace.h"

#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

#include "cache/sim/policy_simulator.h"
#include "gtest/gtest.h"

namespace expertd::cache {
namespace {

SyntheticTraceOptions Small() {
  SyntheticTraceOptions options;
  options.num_layers = 4;
  options.num_experts = 16;
  options.k = 4;
  options.tokens = 400;
  options.seed = 3;
  return options;
}

// Share of a layer's routings that go to its most frequent expert,
// averaged over layers.
double TopExpertShare(const AccessTrace& trace) {
  double total = 0;
  for (int l = 0; l < trace.num_layers; ++l) {
    std::vector<int64_t> counts(trace.num_experts, 0);
    int64_t all = 0;
    for (const auto& pass : trace.passes) {
      for (const ExpertKey& key : pass) {
        if (key.layer == l) {
          ++counts[key.expert];
          ++all;
        }
      }
    }
    total += static_cast<double>(*std::max_element(counts.begin(), counts.end())) / all;
  }
  return total / trace.num_layers;
}

// Share of routings to an expert the same layer routed to for the previous
// token.
double RepeatRate(const AccessTrace& trace) {
  int64_t repeats = 0, all = 0;
  for (size_t p = 1; p < trace.passes.size(); ++p) {
    const std::set<ExpertKey> previous(trace.passes[p - 1].begin(), trace.passes[p - 1].end());
    for (const ExpertKey& key : trace.passes[p]) {
      repeats += previous.contains(key);
      ++all;
    }
  }
  return static_cast<double>(repeats) / all;
}

TEST(SyntheticTraceTest, SameSeedSameTrace) {
  SyntheticTraceOptions options = Small();
  options.zipf_exponent = 0.9;
  options.reuse_probability = 0.3;
  options.cross_layer_probability = 0.3;
  const AccessTrace a = MakeSyntheticTrace(options);
  EXPECT_EQ(a.passes, MakeSyntheticTrace(options).passes);
  options.seed = 4;
  EXPECT_NE(a.passes, MakeSyntheticTrace(options).passes);
}

TEST(SyntheticTraceTest, RoutesEachLayerToKDistinctExperts) {
  SyntheticTraceOptions options = Small();
  options.k = 15;  // Near the expert count: forces the fallback path.
  options.zipf_exponent = 2.0;
  options.reuse_probability = 0.5;
  options.cross_layer_probability = 0.5;
  const AccessTrace trace = MakeSyntheticTrace(options);
  EXPECT_TRUE(ValidateAccessTrace(trace).ok());
  ASSERT_EQ(trace.passes.size(), 400u);
  for (const auto& pass : trace.passes) {
    ASSERT_EQ(pass.size(), static_cast<size_t>(options.num_layers * options.k));
    for (int l = 0; l < options.num_layers; ++l) {
      std::set<int32_t> experts;
      for (int i = 0; i < options.k; ++i) {
        const ExpertKey& key = pass[l * options.k + i];
        EXPECT_EQ(key.layer, l);
        experts.insert(key.expert);
      }
      EXPECT_EQ(experts.size(), static_cast<size_t>(options.k));
    }
  }
}

TEST(SyntheticTraceTest, SkewRaisesTheTopExpertsShare) {
  SyntheticTraceOptions options = Small();
  const double uniform = TopExpertShare(MakeSyntheticTrace(options));
  options.zipf_exponent = 1.2;
  const double skewed = TopExpertShare(MakeSyntheticTrace(options));
  EXPECT_NEAR(uniform, 1.0 / 16, 0.02);
  EXPECT_GT(skewed, uniform + 0.05);
}

TEST(SyntheticTraceTest, ReuseRaisesTheRepeatRate) {
  SyntheticTraceOptions options = Small();
  const double base = RepeatRate(MakeSyntheticTrace(options));
  options.reuse_probability = 0.6;
  const double reused = RepeatRate(MakeSyntheticTrace(options));
  EXPECT_NEAR(base, 4.0 / 16, 0.03);  // k of E by chance.
  EXPECT_GT(reused, 0.6);
}

TEST(SyntheticTraceTest, CrossLayerCorrelationMakesLayersFollowEachOther) {
  // How often layer 1's expert in a slot is the same function of layer 0's:
  // the share of the most common (layer 0 expert -> layer 1 expert) pair per
  // layer 0 expert.
  auto follow_share = [](const AccessTrace& trace, int k) {
    std::vector<std::vector<int64_t>> pairs(trace.num_experts, std::vector<int64_t>(trace.num_experts, 0));
    for (const auto& pass : trace.passes) {
      for (int slot = 0; slot < k; ++slot) ++pairs[pass[slot].expert][pass[k + slot].expert];
    }
    int64_t top = 0, all = 0;
    for (const auto& row : pairs) {
      top += *std::max_element(row.begin(), row.end());
      for (int64_t n : row) all += n;
    }
    return static_cast<double>(top) / all;
  };
  SyntheticTraceOptions options = Small();
  const double independent = follow_share(MakeSyntheticTrace(options), options.k);
  options.cross_layer_probability = 0.7;
  const double correlated = follow_share(MakeSyntheticTrace(options), options.k);
  EXPECT_GT(correlated, independent + 0.3);
}

TEST(SyntheticTraceTest, RejectsBadKnobs) {
  SyntheticTraceOptions options = Small();
  EXPECT_TRUE(ValidateSyntheticTraceOptions(options).ok());
  options.k = 17;
  EXPECT_FALSE(ValidateSyntheticTraceOptions(options).ok());
  EXPECT_TRUE(MakeSyntheticTrace(options).passes.empty());
  options = Small();
  options.reuse_probability = 1.5;
  EXPECT_FALSE(ValidateSyntheticTraceOptions(options).ok());
  options = Small();
  options.zipf_exponent = -1;
  EXPECT_FALSE(ValidateSyntheticTraceOptions(options).ok());
}

}  // namespace
}  // namespace expertd::cache
