#include "kernels/cpu/matmul.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "hwy/targets.h"
#include "kernels/cpu/dtype.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::kernels {
namespace {

// A weight matrix in its storage format plus the exact f32 value of every
// element (what the kernel must multiply with).
struct TestMatrix {
  DType dtype;
  int64_t rows;
  int64_t cols;
  // One spare element in front so the data starts at an address that is not
  // vector-aligned, as it can inside a checkpoint.
  std::vector<uint16_t> storage16;
  std::vector<float> storage32;
  std::vector<float> values;

  WeightMatrix view() const {
    WeightMatrix w;
    w.dtype = dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = dtype == DType::kF32 ? static_cast<const void*>(storage32.data() + 1)
                                  : static_cast<const void*>(storage16.data() + 1);
    return w;
  }
};

TestMatrix MakeMatrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  TestMatrix m{dtype, rows, cols, {}, {}, {}};
  const auto n = static_cast<size_t>(rows * cols);
  m.values.resize(n);
  if (dtype == DType::kF32) {
    m.storage32.resize(n + 1);
    for (size_t i = 0; i < n; ++i) m.storage32[i + 1] = m.values[i] = dist(rng);
  } else {
    m.storage16.resize(n + 1);
    for (size_t i = 0; i < n; ++i) {
      const float f = dist(rng);
      if (dtype == DType::kBF16) {
        m.storage16[i + 1] = F32ToBF16(f);
        m.values[i] = BF16ToF32(m.storage16[i + 1]);
      } else {
        m.storage16[i + 1] = F32ToF16(f);
        m.values[i] = F16ToF32(m.storage16[i + 1]);
      }
    }
  }
  return m;
}

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

// Double-precision reference; also returns sum |w x| per row, the scale of
// the rounding error an f32 accumulation may make.
void ReferenceMatVec(const TestMatrix& m, const float* x, std::vector<double>* y,
                     std::vector<double>* abs_sum) {
  y->assign(static_cast<size_t>(m.rows), 0.0);
  abs_sum->assign(static_cast<size_t>(m.rows), 0.0);
  for (int64_t r = 0; r < m.rows; ++r) {
    double sum = 0.0;
    double abs = 0.0;
    for (int64_t c = 0; c < m.cols; ++c) {
      const double p = static_cast<double>(m.values[static_cast<size_t>(r * m.cols + c)]) * x[c];
      sum += p;
      abs += std::fabs(p);
    }
    (*y)[static_cast<size_t>(r)] = sum;
    (*abs_sum)[static_cast<size_t>(r)] = abs;
  }
}

// f32 accumulation over at most a few thousand terms in several chains:
// error well under 1e-5 of sum |w x|, while dropping or repeating a single
// term (~1/cols of it, cols <= 4099) would be far larger.
constexpr double kRelativeTolerance = 1e-5;

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

using Params = std::tuple<DType, int64_t /*rows*/, int64_t /*cols*/>;

class MatMulTest : public ::testing::TestWithParam<Params> {};

TEST_P(MatMulTest, MatVecMatchesReference) {
  const auto [dtype, rows, cols] = GetParam();
  const TestMatrix m = MakeMatrix(dtype, rows, cols, 42);
  const std::vector<float> x = RandomVector(static_cast<size_t>(cols), 43);
  std::vector<double> expected, abs_sum;
  ReferenceMatVec(m, x.data(), &expected, &abs_sum);

  std::vector<float> y(static_cast<size_t>(rows), NAN);
  MatVec(m.view(), x.data(), y.data(), nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    const auto i = static_cast<size_t>(r);
    EXPECT_NEAR(y[i], expected[i], kRelativeTolerance * abs_sum[i] + 1e-30) << "row " << r;
  }
}

TEST_P(MatMulTest, MatVecIsIndependentOfThreadCount) {
  const auto [dtype, rows, cols] = GetParam();
  const TestMatrix m = MakeMatrix(dtype, rows, cols, 44);
  const std::vector<float> x = RandomVector(static_cast<size_t>(cols), 45);
  std::vector<float> single(static_cast<size_t>(rows), NAN);
  MatVec(m.view(), x.data(), single.data(), nullptr);
  for (const int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    std::vector<float> y(static_cast<size_t>(rows), NAN);
    MatVec(m.view(), x.data(), y.data(), &pool);
    EXPECT_TRUE(SameBits(y, single)) << threads << " threads";
  }
}

TEST_P(MatMulTest, MatMulRowsAreBitIdenticalToMatVec) {
  const auto [dtype, rows, cols] = GetParam();
  const TestMatrix m = MakeMatrix(dtype, rows, cols, 46);
  ThreadPool pool(3);
  for (int64_t batch = 1; batch <= 9; ++batch) {
    const std::vector<float> x = RandomVector(static_cast<size_t>(batch * cols), 47 + batch);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
      std::vector<float> y(static_cast<size_t>(batch * rows), NAN);
      MatMul(m.view(), x.data(), batch, y.data(), p);
      for (int64_t b = 0; b < batch; ++b) {
        std::vector<float> single(static_cast<size_t>(rows), NAN);
        MatVec(m.view(), x.data() + b * cols, single.data(), nullptr);
        const std::vector<float> row(y.begin() + b * rows, y.begin() + (b + 1) * rows);
        ASSERT_TRUE(SameBits(row, single))
            << "batch " << batch << " row " << b << (p ? " pooled" : " serial");
      }
    }
  }
}

// A MoE layer's experts run as one job of row ranges across matrices: any
// split into ranges must give MatMul's values bit for bit.
TEST_P(MatMulTest, RowRangesAreBitIdenticalToMatMul) {
  const auto [dtype, rows, cols] = GetParam();
  const TestMatrix m = MakeMatrix(dtype, rows, cols, 52);
  for (int64_t batch : {1, 3, 8}) {
    const std::vector<float> x = RandomVector(static_cast<size_t>(batch * cols), 53 + batch);
    std::vector<float> whole(static_cast<size_t>(batch * rows), NAN);
    MatMul(m.view(), x.data(), batch, whole.data(), nullptr);
    for (int64_t piece : {int64_t{1}, int64_t{3}, int64_t{5}, rows}) {
      std::vector<float> ranged(static_cast<size_t>(batch * rows), NAN);
      for (int64_t begin = 0; begin < rows; begin += piece) {
        MatMulRowRange(m.view(), x.data(), batch, ranged.data(), begin, std::min(rows, begin + piece));
      }
      ASSERT_TRUE(SameBits(ranged, whole)) << "batch " << batch << ", ranges of " << piece << " rows";
    }
  }
}

TEST_P(MatMulTest, MatMulMatchesReference) {
  const auto [dtype, rows, cols] = GetParam();
  const TestMatrix m = MakeMatrix(dtype, rows, cols, 48);
  constexpr int64_t kBatch = 6;
  const std::vector<float> x = RandomVector(static_cast<size_t>(kBatch * cols), 49);
  std::vector<float> y(static_cast<size_t>(kBatch * rows), NAN);
  ThreadPool pool(2);
  MatMul(m.view(), x.data(), kBatch, y.data(), &pool);
  for (int64_t b = 0; b < kBatch; ++b) {
    std::vector<double> expected, abs_sum;
    ReferenceMatVec(m, x.data() + b * cols, &expected, &abs_sum);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_NEAR(y[static_cast<size_t>(b * rows + r)], expected[static_cast<size_t>(r)],
                  kRelativeTolerance * abs_sum[static_cast<size_t>(r)] + 1e-30)
          << "batch row " << b << " row " << r;
    }
  }
}

std::string ParamName(const ::testing::TestParamInfo<Params>& info) {
  const auto [dtype, rows, cols] = info.param;
  return std::string(DTypeName(dtype)) + "_rows" + std::to_string(rows) + "_cols" +
         std::to_string(cols);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MatMulTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16,
                                                              DType::kF16),
                                            ::testing::Values(int64_t{1}, int64_t{3},
                                                              int64_t{257}),
                                            ::testing::Values(int64_t{1}, int64_t{7},
                                                              int64_t{33}, int64_t{1000},
                                                              int64_t{4099})),
                         ParamName);

TEST(MatMulEdgeTest, ZeroColumnsGivesZero) {
  const TestMatrix m = MakeMatrix(DType::kBF16, 5, 0, 1);
  std::vector<float> y(5, NAN);
  MatVec(m.view(), nullptr, y.data(), nullptr);
  for (const float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(MatMulEdgeTest, LargeMatrixSplitAcrossThreads) {
  // Enough rows that the pool really splits the work into many chunks.
  const TestMatrix m = MakeMatrix(DType::kBF16, 4099, 515, 2);
  const std::vector<float> x = RandomVector(515, 3);
  std::vector<double> expected, abs_sum;
  ReferenceMatVec(m, x.data(), &expected, &abs_sum);
  ThreadPool pool(3);
  std::vector<float> y(4099, NAN);
  MatVec(m.view(), x.data(), y.data(), &pool);
  for (size_t r = 0; r < y.size(); ++r) {
    ASSERT_NEAR(y[r], expected[r], kRelativeTolerance * abs_sum[r] + 1e-30) << "row " << r;
  }
}

// The binary dispatches at run time, so machines without AVX-512 (or without
// AVX2) run other code paths; force each compiled target the CPU supports.
TEST(MatMulTargetsTest, EveryTargetMatchesReferenceAndIsBitIdentical) {
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    for (const DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (const int64_t cols : {int64_t{7}, int64_t{33}, int64_t{1000}}) {
        constexpr int64_t kRows = 257;
        const TestMatrix m = MakeMatrix(dtype, kRows, cols, 50);
        constexpr int64_t kBatch = 5;
        const std::vector<float> x = RandomVector(static_cast<size_t>(kBatch * cols), 51);
        std::vector<float> y(static_cast<size_t>(kBatch * kRows), NAN);
        MatMul(m.view(), x.data(), kBatch, y.data(), nullptr);
        for (int64_t b = 0; b < kBatch; ++b) {
          std::vector<double> expected, abs_sum;
          ReferenceMatVec(m, x.data() + b * cols, &expected, &abs_sum);
          std::vector<float> single(static_cast<size_t>(kRows), NAN);
          MatVec(m.view(), x.data() + b * cols, single.data(), nullptr);
          const std::vector<float> row(y.begin() + b * kRows, y.begin() + (b + 1) * kRows);
          ASSERT_TRUE(SameBits(row, single)) << DTypeName(dtype) << " cols " << cols;
          for (int64_t r = 0; r < kRows; ++r) {
            const auto i = static_cast<size_t>(r);
            ASSERT_NEAR(single[i], expected[i], kRelativeTolerance * abs_sum[i] + 1e-30)
                << DTypeName(dtype) << " cols " << cols << " row " << r;
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace expertd::kernels
