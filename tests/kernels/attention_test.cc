#include "kernels/cpu/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/thread_pool.h"

namespace expertd::kernels {
namespace {

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

// Straightforward double-precision causal attention: a sliding window keeps
// the last s.window positions, a sink is one more softmax column without a
// value.
std::vector<double> ReferenceAttention(const AttentionShape& s, const std::vector<float>& q,
                                       int num_queries, int first_position,
                                       const std::vector<float>& k, const std::vector<float>& v) {
  const int group = s.num_heads / s.num_kv_heads;
  const size_t q_stride = static_cast<size_t>(s.num_heads * s.head_dim);
  const size_t kv_stride = static_cast<size_t>(s.num_kv_heads * s.head_dim);
  std::vector<double> out(static_cast<size_t>(num_queries) * q_stride, 0.0);
  for (int t = 0; t < num_queries; ++t) {
    const int last = first_position + t;
    for (int h = 0; h < s.num_heads; ++h) {
      const int kvh = h / group;
      const float* qh = &q[t * q_stride + static_cast<size_t>(h * s.head_dim)];
      std::vector<double> scores(static_cast<size_t>(last + 1));
      double max_score = s.sinks != nullptr ? s.sinks[h] : -INFINITY;
      const int first = s.window > 0 ? std::max(0, last - s.window + 1) : 0;
      for (int j = first; j <= last; ++j) {
        const float* kj = &k[j * kv_stride + static_cast<size_t>(kvh * s.head_dim)];
        double dot = 0.0;
        for (int d = 0; d < s.head_dim; ++d) dot += static_cast<double>(qh[d]) * kj[d];
        scores[static_cast<size_t>(j)] = dot / std::sqrt(static_cast<double>(s.head_dim));
        max_score = std::max(max_score, scores[static_cast<size_t>(j)]);
      }
      double sum = s.sinks != nullptr ? std::exp(s.sinks[h] - max_score) : 0.0;
      for (int j = first; j <= last; ++j) sum += (scores[j] = std::exp(scores[j] - max_score));
      double* oh = &out[t * q_stride + static_cast<size_t>(h * s.head_dim)];
      for (int j = first; j <= last; ++j) {
        const float* vj = &v[j * kv_stride + static_cast<size_t>(kvh * s.head_dim)];
        for (int d = 0; d < s.head_dim; ++d) oh[d] += scores[static_cast<size_t>(j)] / sum * vj[d];
      }
    }
  }
  return out;
}

struct Case {
  AttentionShape shape;
  int num_queries;
  int first_position;
};

class AttentionTest : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionTest, MatchesReferenceForEveryThreadCount) {
  const Case c = GetParam();
  const AttentionShape& s = c.shape;
  const int history = c.first_position + c.num_queries;
  const size_t q_size = static_cast<size_t>(c.num_queries * s.num_heads * s.head_dim);
  const size_t kv_size = static_cast<size_t>(history * s.num_kv_heads * s.head_dim);
  const auto q = RandomVector(q_size, 1);
  const auto k = RandomVector(kv_size, 2);
  const auto v = RandomVector(kv_size, 3);
  const auto expected = ReferenceAttention(s, q, c.num_queries, c.first_position, k, v);

  std::vector<float> serial(q_size, NAN);
  CausalAttention(s, q.data(), c.num_queries, c.first_position, k.data(), v.data(),
                  serial.data(), nullptr);
  for (size_t i = 0; i < q_size; ++i) {
    // Outputs are convex combinations of values in [-2, 2].
    ASSERT_NEAR(serial[i], expected[i], 2e-5) << "element " << i;
  }
  for (const int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    std::vector<float> out(q_size, NAN);
    CausalAttention(s, q.data(), c.num_queries, c.first_position, k.data(), v.data(), out.data(),
                    &pool);
    EXPECT_EQ(std::memcmp(out.data(), serial.data(), q_size * sizeof(float)), 0)
        << threads << " threads";
  }
}

TEST_P(AttentionTest, IgnoresFuturePositions) {
  const Case c = GetParam();
  const AttentionShape& s = c.shape;
  const int history = c.first_position + c.num_queries;
  const size_t q_size = static_cast<size_t>(c.num_queries * s.num_heads * s.head_dim);
  const size_t row = static_cast<size_t>(s.num_kv_heads * s.head_dim);
  const auto q = RandomVector(q_size, 4);
  const auto k = RandomVector(static_cast<size_t>(history) * row, 5);
  const auto v = RandomVector(static_cast<size_t>(history) * row, 6);
  std::vector<float> base(q_size);
  CausalAttention(s, q.data(), c.num_queries, c.first_position, k.data(), v.data(), base.data(),
                  nullptr);
  // Changing the newest cached position may only change the last query.
  auto k2 = k;
  auto v2 = v;
  for (size_t i = (history - 1) * row; i < history * row; ++i) {
    k2[i] += 1.0f;
    v2[i] -= 1.0f;
  }
  std::vector<float> changed(q_size);
  CausalAttention(s, q.data(), c.num_queries, c.first_position, k2.data(), v2.data(),
                  changed.data(), nullptr);
  const size_t q_row = static_cast<size_t>(s.num_heads * s.head_dim);
  for (size_t i = 0; i < (c.num_queries - 1) * q_row; ++i) ASSERT_EQ(changed[i], base[i]) << i;
  bool last_changed = false;
  for (size_t i = (c.num_queries - 1) * q_row; i < q_size; ++i) {
    last_changed |= changed[i] != base[i];
  }
  EXPECT_TRUE(last_changed);
}

// A query attending to the cache's first `position` rows plus a key and
// value of its own equals CausalAttention over a cache that holds them at
// `position`, bit for bit, and never reads the cache's row `position`.
TEST_P(AttentionTest, OwnKeyEqualsTheKeyWrittenToTheCache) {
  const Case c = GetParam();
  const AttentionShape& s = c.shape;
  const int position = c.first_position;
  const size_t row = static_cast<size_t>(s.num_kv_heads * s.head_dim);
  const size_t q_row = static_cast<size_t>(s.num_heads * s.head_dim);
  const auto q = RandomVector(q_row, 7);
  auto k = RandomVector(static_cast<size_t>(position + 1) * row, 8);
  auto v = RandomVector(static_cast<size_t>(position + 1) * row, 9);
  const std::vector<float> own_k(k.begin() + position * row, k.end());
  const std::vector<float> own_v(v.begin() + position * row, v.end());
  ThreadPool pool(2);
  std::vector<float> in_cache(q_row), own(q_row);
  CausalAttention(s, q.data(), 1, position, k.data(), v.data(), in_cache.data(), &pool);
  // Garbage where the own key would have gone: it must not be read.
  for (size_t i = position * row; i < (position + 1) * row; ++i) k[i] = v[i] = 1e30f;
  AttentionWithOwnKey(s, q.data(), position, k.data(), v.data(), own_k.data(), own_v.data(), own.data(), &pool);
  EXPECT_EQ(own, in_cache);
}

// gpt-oss's attention sinks: logits about as large as the scores, so the
// sink takes a real share.
constexpr float kSinks[8] = {0.5f, -1.0f, 2.0f, 0.0f, 1.5f, -0.25f, 3.0f, -2.0f};

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(Case{{1, 1, 1}, 1, 0}, Case{{4, 2, 8}, 1, 0}, Case{{4, 2, 8}, 5, 0},
                      Case{{4, 2, 8}, 3, 17}, Case{{6, 1, 33}, 4, 9},
                      Case{{8, 8, 64}, 2, 100}, Case{{32, 8, 128}, 1, 300},
                      Case{{16, 4, 128}, 7, 40},
                      // Sliding windows (gpt-oss), shorter and longer than the history, with and without sinks.
                      Case{{4, 2, 8, 4}, 6, 3}, Case{{4, 2, 8, 4, kSinks}, 6, 3}, Case{{8, 8, 64, 3, kSinks}, 2, 100},
                      Case{{4, 1, 16, 64}, 5, 10}, Case{{4, 2, 8, 0, kSinks}, 5, 0}, Case{{6, 1, 33, 1}, 4, 9}));

}  // namespace
}  // namespace expertd::kernels
