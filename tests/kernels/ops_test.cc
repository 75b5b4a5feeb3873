#include "kernels/cpu/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "hwy/targets.h"

namespace expertd::kernels {
namespace {

std::vector<float> RandomVector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

class OpsTest : public ::testing::TestWithParam<int64_t> {
 protected:
  int64_t n() const { return GetParam(); }
  size_t size() const { return static_cast<size_t>(GetParam()); }
};

TEST_P(OpsTest, DotMatchesReference) {
  const auto a = RandomVector(size(), 1);
  const auto b = RandomVector(size(), 2);
  double expected = 0.0, abs_sum = 0.0;
  for (size_t i = 0; i < size(); ++i) {
    expected += static_cast<double>(a[i]) * b[i];
    abs_sum += std::fabs(static_cast<double>(a[i]) * b[i]);
  }
  EXPECT_NEAR(Dot(a.data(), b.data(), n()), expected, 1e-5 * abs_sum + 1e-30);
}

TEST_P(OpsTest, AxpyMatchesReference) {
  const auto x = RandomVector(size(), 3);
  auto y = RandomVector(size(), 4);
  const auto y0 = y;
  const float a = -0.75f;
  Axpy(a, x.data(), n(), y.data());
  for (size_t i = 0; i < size(); ++i) {
    const double expected = y0[i] + static_cast<double>(a) * x[i];
    EXPECT_NEAR(y[i], expected, 1e-6 * (std::fabs(y0[i]) + std::fabs(a * x[i])) + 1e-30) << i;
  }
}

TEST_P(OpsTest, RmsNormMatchesReferenceAndMayAlias) {
  const auto x = RandomVector(size(), 5, -3.0f, 3.0f);
  const auto weight = RandomVector(size(), 6, 0.5f, 1.5f);
  const float eps = 1e-5f;
  double mean_square = 0.0;
  for (const float v : x) mean_square += static_cast<double>(v) * v;
  mean_square /= static_cast<double>(n());
  const double inv = 1.0 / std::sqrt(mean_square + eps);

  std::vector<float> out(size(), NAN);
  RmsNorm(x.data(), weight.data(), n(), eps, out.data());
  for (size_t i = 0; i < size(); ++i) {
    const double expected = x[i] * inv * weight[i];
    EXPECT_NEAR(out[i], expected, 1e-5 * std::fabs(expected) + 1e-7) << i;
  }
  auto in_place = x;
  RmsNorm(in_place.data(), weight.data(), n(), eps, in_place.data());
  EXPECT_EQ(in_place, out);
}

TEST_P(OpsTest, SoftmaxMatchesReference) {
  auto x = RandomVector(size(), 7, -20.0f, 20.0f);
  const auto x0 = x;
  double max_value = x0[0];
  for (const float v : x0) max_value = std::max<double>(max_value, v);
  double sum = 0.0;
  for (const float v : x0) sum += std::exp(v - max_value);
  Softmax(x.data(), n());
  double total = 0.0;
  for (size_t i = 0; i < size(); ++i) {
    const double expected = std::exp(x0[i] - max_value) / sum;
    EXPECT_NEAR(x[i], expected, 1e-5 * expected + 1e-12) << i;
    total += x[i];
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
}

TEST_P(OpsTest, SoftmaxIsStableForLargeInputs) {
  std::vector<float> x(size());
  for (size_t i = 0; i < size(); ++i) x[i] = 1000.0f + static_cast<float>(i % 3);
  Softmax(x.data(), n());
  double total = 0.0;
  for (const float v : x) {
    ASSERT_TRUE(std::isfinite(v));
    total += v;
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
}

TEST_P(OpsTest, SiluMulMatchesReferenceAndMayAlias) {
  const auto gate = RandomVector(size(), 8, -12.0f, 12.0f);
  const auto up = RandomVector(size(), 9, -2.0f, 2.0f);
  std::vector<float> out(size(), NAN);
  SiluMul(gate.data(), up.data(), n(), out.data());
  for (size_t i = 0; i < size(); ++i) {
    const double g = gate[i];
    const double expected = g / (1.0 + std::exp(-g)) * up[i];
    EXPECT_NEAR(out[i], expected, 1e-5 * std::fabs(expected) + 1e-7) << "g=" << g;
  }
  auto aliased = gate;
  SiluMul(aliased.data(), up.data(), n(), aliased.data());
  EXPECT_EQ(aliased, out);
}

INSTANTIATE_TEST_SUITE_P(Sizes, OpsTest,
                         ::testing::Values(int64_t{1}, int64_t{7}, int64_t{33}, int64_t{1000},
                                           int64_t{4099}));

TEST(OpsEdgeTest, SiluOfExtremeGates) {
  const std::vector<float> gate = {-200.0f, -90.0f, 0.0f, 90.0f, 200.0f};
  const std::vector<float> up(gate.size(), 1.0f);
  std::vector<float> out(gate.size());
  SiluMul(gate.data(), up.data(), static_cast<int64_t>(gate.size()), out.data());
  EXPECT_NEAR(out[0], 0.0f, 1e-30);
  EXPECT_NEAR(out[1], 0.0f, 1e-30);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_FLOAT_EQ(out[3], 90.0f);
  EXPECT_FLOAT_EQ(out[4], 200.0f);
}

TEST(OpsEdgeTest, SoftmaxOfOneValueIsOne) {
  float x = -3.5f;
  Softmax(&x, 1);
  EXPECT_EQ(x, 1.0f);
}

TEST(OpsEdgeTest, ApplyRopeRotatesHalfPairs) {
  constexpr int kHeads = 3;
  for (const int head_dim : {2, 8, 64, 128}) {
    const int half = head_dim / 2;
    const auto x0 = RandomVector(static_cast<size_t>(kHeads * head_dim), 10);
    // Angles as a RoPE table would hold them for position 5, theta 10000.
    std::vector<float> cos_sin(static_cast<size_t>(head_dim));
    for (int i = 0; i < half; ++i) {
      const double angle = 5.0 * std::pow(10000.0, -2.0 * i / head_dim);
      cos_sin[static_cast<size_t>(i)] = static_cast<float>(std::cos(angle));
      cos_sin[static_cast<size_t>(half + i)] = static_cast<float>(std::sin(angle));
    }
    auto x = x0;
    ApplyRope(x.data(), kHeads, head_dim, cos_sin.data());
    for (int h = 0; h < kHeads; ++h) {
      for (int i = 0; i < half; ++i) {
        const size_t lo = static_cast<size_t>(h * head_dim + i);
        const size_t hi = lo + static_cast<size_t>(half);
        const double c = cos_sin[static_cast<size_t>(i)];
        const double s = cos_sin[static_cast<size_t>(half + i)];
        EXPECT_NEAR(x[lo], x0[lo] * c - x0[hi] * s, 1e-6) << "head " << h << " i " << i;
        EXPECT_NEAR(x[hi], x0[hi] * c + x0[lo] * s, 1e-6) << "head " << h << " i " << i;
      }
    }
  }
}

// Each runtime-dispatched target (AVX-512, AVX2, SSE4, ...) the CPU supports
// must compute the same functions, within tolerance.
TEST(OpsTargetsTest, EveryTargetMatchesReference) {
  constexpr size_t kN = 1001;
  const auto a = RandomVector(kN, 11, -3.0f, 3.0f);
  const auto b = RandomVector(kN, 12, -3.0f, 3.0f);
  const auto weight = RandomVector(kN, 13, 0.5f, 1.5f);
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    double dot = 0.0, abs_dot = 0.0, mean_square = 0.0, max_a = a[0], exp_sum = 0.0;
    for (size_t i = 0; i < kN; ++i) {
      dot += static_cast<double>(a[i]) * b[i];
      abs_dot += std::fabs(static_cast<double>(a[i]) * b[i]);
      mean_square += static_cast<double>(a[i]) * a[i] / kN;
      max_a = std::max<double>(max_a, a[i]);
    }
    for (size_t i = 0; i < kN; ++i) exp_sum += std::exp(a[i] - max_a);
    EXPECT_NEAR(Dot(a.data(), b.data(), kN), dot, 1e-5 * abs_dot);

    std::vector<float> out(kN);
    RmsNorm(a.data(), weight.data(), kN, 1e-6f, out.data());
    std::vector<float> softmax = a;
    Softmax(softmax.data(), kN);
    std::vector<float> silu(kN);
    SiluMul(a.data(), b.data(), kN, silu.data());
    std::vector<float> axpy = b;
    Axpy(0.5f, a.data(), kN, axpy.data());
    for (size_t i = 0; i < kN; ++i) {
      const double norm = a[i] / std::sqrt(mean_square + 1e-6) * weight[i];
      ASSERT_NEAR(out[i], norm, 1e-5 * std::fabs(norm) + 1e-7) << i;
      const double p = std::exp(a[i] - max_a) / exp_sum;
      ASSERT_NEAR(softmax[i], p, 1e-5 * p + 1e-12) << i;
      const double s = a[i] / (1.0 + std::exp(-static_cast<double>(a[i]))) * b[i];
      ASSERT_NEAR(silu[i], s, 1e-5 * std::fabs(s) + 1e-7) << i;
      ASSERT_NEAR(axpy[i], b[i] + 0.5 * a[i], 1e-6) << i;
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace expertd::kernels
