// WeightMatrix::bf16_activations: bf16 weights times activations rounded to
// bf16 (kernels/cpu/bf16_dot.h). Checked against a plain double-precision
// loop over the rounded activations, for bit-identity across batches, row
// splits and thread counts, and for being ignored where it does not apply.
#include "kernels/cpu/bf16_dot.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cpu/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::kernels {
namespace {

struct Bf16Case {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint16_t> w{};  // [rows][cols] bf16, one spare element in front (unaligned start)
  std::vector<float> x{};     // [batch][cols]

  WeightMatrix view() const {
    WeightMatrix m{DType::kBF16, w.data() + 1, rows, cols};
    m.bf16_activations = true;
    return m;
  }
};

Bf16Case MakeCase(int64_t rows, int64_t cols, int64_t batch, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Bf16Case c{rows, cols};
  c.w.resize(static_cast<size_t>(rows * cols + 1));
  for (uint16_t& v : c.w) v = F32ToBF16(normal(rng) * 0.05f);
  c.x.resize(static_cast<size_t>(batch * cols));
  for (float& v : c.x) v = normal(rng);
  return c;
}

#define SKIP_WITHOUT_BF16_DOT()                                                            \
  if (!internal::HaveBf16Dot()) GTEST_SKIP() << "this CPU has no AVX-512 BF16: the flag is ignored here"

TEST(Bf16DotTest, RoundingMatchesScalarRoundToNearestEven) {
  SKIP_WITHOUT_BF16_DOT();
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int64_t n : {1, 15, 16, 17, 31, 32, 33, 100}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) {
      // Random normal numbers of every exponent and sign (and exact ties),
      // not denormals (the instruction flushes those) nor NaN.
      do {
        v = std::bit_cast<float>(bits(rng) & (rng() % 4 == 0 ? 0xFFFF8000u : 0xFFFFFFFFu));
      } while (!std::isnormal(v));
    }
    std::vector<uint16_t> out(static_cast<size_t>(n) + 1, 0xABCD);
    internal::RoundToBf16(x.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[static_cast<size_t>(i)], F32ToBF16(x[static_cast<size_t>(i)])) << i;
    EXPECT_EQ(out[static_cast<size_t>(n)], 0xABCD) << "wrote past the end";
  }
}

// Each dot is the exact dot of the weights with the rounded activations, up
// to f32 accumulation: per lane cols/32 steps of two roundings, then four
// levels of the horizontal sum, each at most 2^-24 of the magnitudes summed.
TEST(Bf16DotTest, MatchesDoubleDotOfRoundedActivations) {
  SKIP_WITHOUT_BF16_DOT();
  for (int64_t cols : {1, 31, 32, 33, 100, 1000}) {
    for (int64_t batch : {1, 3, 4, 9}) {
      const int64_t rows = 13;
      const Bf16Case c = MakeCase(rows, cols, batch, static_cast<uint32_t>(cols * 16 + batch));
      std::vector<float> y(static_cast<size_t>(batch * rows));
      MatMul(c.view(), c.x.data(), batch, y.data(), nullptr);
      const double roundings = 2.0 * static_cast<double>((cols + 31) / 32) + 4.0;
      for (int64_t m = 0; m < batch; ++m) {
        for (int64_t r = 0; r < rows; ++r) {
          double exact = 0;
          double magnitude = 0;
          for (int64_t k = 0; k < cols; ++k) {
            const double w = BF16ToF32(c.w[static_cast<size_t>(1 + r * cols + k)]);
            const double x = BF16ToF32(F32ToBF16(c.x[static_cast<size_t>(m * cols + k)]));
            exact += w * x;
            magnitude += std::abs(w * x);
          }
          EXPECT_NEAR(y[static_cast<size_t>(m * rows + r)], exact, roundings * std::ldexp(magnitude, -24) + 1e-30)
              << "cols " << cols << " batch " << batch << " row " << r << " x " << m;
        }
      }
    }
  }
}

TEST(Bf16DotTest, BatchesRowSplitsAndThreadsNeverChangeABit) {
  SKIP_WITHOUT_BF16_DOT();
  const int64_t rows = 67, cols = 300, batch = 7;
  const Bf16Case c = MakeCase(rows, cols, batch, 3);
  const WeightMatrix w = c.view();
  std::vector<float> batched(static_cast<size_t>(batch * rows));
  MatMul(w, c.x.data(), batch, batched.data(), nullptr);
  for (int64_t m = 0; m < batch; ++m) {
    std::vector<float> single(static_cast<size_t>(rows));
    MatVec(w, c.x.data() + m * cols, single.data(), nullptr);
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_EQ(single[static_cast<size_t>(r)], batched[static_cast<size_t>(m * rows + r)]) << "x " << m << " row " << r;
    }
  }
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    std::vector<float> y(batched.size());
    MatMul(w, c.x.data(), batch, y.data(), &pool);
    EXPECT_EQ(y, batched) << threads << " threads";
  }
  std::vector<float> split(batched.size());
  // Ranges that cut 4-row tiles and leave single rows.
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 5}, {5, 6}, {6, 30}, {30, 61}, {61, rows}}) {
    MatMulRowRange(w, c.x.data(), batch, split.data(), begin, end);
  }
  EXPECT_EQ(split, batched);
}

TEST(Bf16DotTest, DiffersFromF32ActivationsOnlyByTheRounding) {
  SKIP_WITHOUT_BF16_DOT();
  const int64_t rows = 9, cols = 512, batch = 2;
  const Bf16Case c = MakeCase(rows, cols, batch, 11);
  WeightMatrix exact_x = c.view();
  exact_x.bf16_activations = false;
  std::vector<float> rounded(static_cast<size_t>(batch * rows)), exact(rounded.size());
  MatMul(c.view(), c.x.data(), batch, rounded.data(), nullptr);
  MatMul(exact_x, c.x.data(), batch, exact.data(), nullptr);
  bool any_differs = false;
  for (size_t i = 0; i < exact.size(); ++i) {
    double magnitude = 0;
    const int64_t m = static_cast<int64_t>(i) / rows, r = static_cast<int64_t>(i) % rows;
    for (int64_t k = 0; k < cols; ++k) {
      magnitude += std::abs(BF16ToF32(c.w[static_cast<size_t>(1 + r * cols + k)]) * c.x[static_cast<size_t>(m * cols + k)]);
    }
    // Rounding x to 8 bits of mantissa moves each product by at most 2^-9.
    EXPECT_NEAR(rounded[i], exact[i], std::ldexp(magnitude, -9) * 1.01);
    any_differs |= rounded[i] != exact[i];
  }
  EXPECT_TRUE(any_differs) << "the flag had no effect: the bf16 path did not run";
}

TEST(Bf16DotTest, IgnoredForOtherDtypes) {
  const int64_t rows = 5, cols = 70;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> w(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(cols));
  for (float& v : w) v = normal(rng);
  for (float& v : x) v = normal(rng);
  WeightMatrix plain{DType::kF32, w.data(), rows, cols};
  WeightMatrix flagged = plain;
  flagged.bf16_activations = true;
  std::vector<float> a(static_cast<size_t>(rows)), b(a.size());
  MatVec(plain, x.data(), a.data(), nullptr);
  MatVec(flagged, x.data(), b.data(), nullptr);
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace expertd::kernels
