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
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cpu/quant_matmul.h"
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
  std::vector<uint16_t> storage16;  // also the quantised blocks' bytes
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

// A quantised matrix of random blocks: random code bytes (every code a file
// may hold, Q8_0's -128 included) and random finite f16 scales of either
// sign; values are their dequantisation (exact, quant_blocks_test checks
// DequantizeRow). Random bytes rather than QuantizeRow keep the test fast
// under sanitizers.
TestMatrix MakeQuantMatrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> scale(-0.02f, 0.02f);
  TestMatrix m{dtype, rows, cols, {}, {}, {}};
  const int64_t row_bytes = DTypeBytes(dtype, cols);
  // Whole uint16s for the bytes (MXFP4's 17-byte blocks make odd totals) plus the one skipped below.
  m.storage16.resize(static_cast<size_t>((rows * row_bytes + 1) / 2 + 1));
  auto* bytes = reinterpret_cast<uint8_t*>(m.storage16.data() + 1);
  for (int64_t i = 0; i < rows * row_bytes; ++i) bytes[i] = static_cast<uint8_t>(rng());
  // Offsets of the f16 scales in a block (block_q6_K keeps d at its end).
  std::vector<int64_t> scale_offsets = {0};
  if (dtype == DType::kQ4_K || dtype == DType::kQ5_K) scale_offsets = {0, 2};
  if (dtype == DType::kQ6_K) scale_offsets = {208};
  if (dtype == DType::kMXFP4) scale_offsets = {};  // an E8M0 exponent, below
  for (int64_t block = 0; block < rows * row_bytes; block += DTypeBlockBytes(dtype)) {
    // Scales 2^-10 to 2^-6: weights up to 12 * 2^-6, like the others' 0.02 scales.
    if (dtype == DType::kMXFP4) bytes[block] = static_cast<uint8_t>(118 + rng() % 5);
    for (const int64_t offset : scale_offsets) {
      const uint16_t h = F32ToF16(scale(rng));
      std::memcpy(bytes + block + offset, &h, sizeof(h));
    }
  }
  m.values.resize(static_cast<size_t>(rows * cols));
  DequantizeRow(dtype, bytes, rows * cols, m.values.data());
  return m;
}

TestMatrix MakeMatrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  if (DTypeIsQuantized(dtype)) return MakeQuantMatrix(dtype, rows, cols, seed);
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

// f32 accumulation over at most a few thousand terms in several chains:
// error well under 1e-5 of sum |w x|, while dropping or repeating a single
// term (~1/cols of it, cols <= 4099) would be far larger.
constexpr double kRelativeTolerance = 1e-5;

// Double-precision reference with the dequantised weights and the f32 x;
// also returns each row's tolerance: kRelativeTolerance * sum |w x| for the
// f32 rounding, plus for quantised weights the activation rounding. Each
// x[c] becomes d * round(x[c] / d) with d = max |x| over its block / 127
// (32 elements for Q8_0/Q4_0, 256 for the K-quants), so it moves by at most
// d / 2 and row r's dot by at most sum_c |w[r][c]| * d(c) / 2; the bound is
// taken 1% wider for the f32 rounding of d and of x / d.
void ReferenceMatVec(const TestMatrix& m, const float* x, std::vector<double>* y,
                     std::vector<double>* tolerance) {
  y->assign(static_cast<size_t>(m.rows), 0.0);
  tolerance->assign(static_cast<size_t>(m.rows), 0.0);
  std::vector<double> half_step(static_cast<size_t>(m.cols), 0.0);
  if (DTypeIsQuantized(m.dtype)) {
    const int64_t block = DTypeBlockElements(m.dtype) == 32 ? 32 : 256;
    for (int64_t b = 0; b < m.cols; b += block) {
      double amax = 0;
      for (int64_t c = b; c < b + block; ++c) amax = std::max(amax, std::fabs(static_cast<double>(x[c])));
      for (int64_t c = b; c < b + block; ++c) half_step[static_cast<size_t>(c)] = amax / 127 / 2 * 1.01;
    }
  }
  for (int64_t r = 0; r < m.rows; ++r) {
    double sum = 0.0;
    double abs = 0.0;
    double quant = 0.0;
    for (int64_t c = 0; c < m.cols; ++c) {
      const double w = m.values[static_cast<size_t>(r * m.cols + c)];
      const double p = w * x[c];
      sum += p;
      abs += std::fabs(p);
      quant += std::fabs(w) * half_step[static_cast<size_t>(c)];
    }
    (*y)[static_cast<size_t>(r)] = sum;
    (*tolerance)[static_cast<size_t>(r)] = kRelativeTolerance * abs + quant + 1e-30;
  }
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

using Params = std::tuple<DType, int64_t /*rows*/, int64_t /*cols*/>;

class MatMulTest : public ::testing::TestWithParam<Params> {};

TEST_P(MatMulTest, MatVecMatchesReference) {
  const auto [dtype, rows, cols] = GetParam();
  const TestMatrix m = MakeMatrix(dtype, rows, cols, 42);
  const std::vector<float> x = RandomVector(static_cast<size_t>(cols), 43);
  std::vector<double> expected, tolerance;
  ReferenceMatVec(m, x.data(), &expected, &tolerance);

  std::vector<float> y(static_cast<size_t>(rows), NAN);
  MatVec(m.view(), x.data(), y.data(), nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    const auto i = static_cast<size_t>(r);
    EXPECT_NEAR(y[i], expected[i], tolerance[i]) << "row " << r;
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
    std::vector<double> expected, tolerance;
    ReferenceMatVec(m, x.data() + b * cols, &expected, &tolerance);
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_NEAR(y[static_cast<size_t>(b * rows + r)], expected[static_cast<size_t>(r)],
                  tolerance[static_cast<size_t>(r)])
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

// GGML block formats: rows are whole blocks (32 elements for Q8_0/Q4_0, 256
// for the K-quants), so these shapes replace the odd column counts.
INSTANTIATE_TEST_SUITE_P(QuantShapes, MatMulTest,
                         ::testing::Combine(::testing::Values(DType::kQ8_0, DType::kQ4_0, DType::kQ4_K,
                                                              DType::kQ5_K, DType::kQ6_K, DType::kMXFP4),
                                            ::testing::Values(int64_t{1}, int64_t{3}, int64_t{257}),
                                            ::testing::Values(int64_t{256}, int64_t{512})),
                         ParamName);
INSTANTIATE_TEST_SUITE_P(Quant32Shapes, MatMulTest,
                         ::testing::Combine(::testing::Values(DType::kQ8_0, DType::kQ4_0, DType::kMXFP4),
                                            ::testing::Values(int64_t{5}), ::testing::Values(int64_t{32}, int64_t{96})),
                         ParamName);

// The activation rows a thread last quantised are remembered (matmul.cc);
// a row changed in place, one element by one ulp, or a different dtype of
// the same size must be quantised afresh.
TEST(MatMulEdgeTest, QuantisedActivationsAreNeverStale) {
  // Q5_K: a K-quant whose kernels scale block sums in block order, so the
  // stale-row check can ask for the scalar dot's exact bits on every target.
  const TestMatrix q5k = MakeMatrix(DType::kQ5_K, 9, 512, 70);
  const TestMatrix q8 = MakeMatrix(DType::kQ8_0, 9, 512, 71);
  std::vector<float> x = RandomVector(512, 72);
  auto fresh = [&](const TestMatrix& m, const std::vector<float>& input) {
    std::vector<float> y(9), xq(static_cast<size_t>(ActivationRowBytes(m.dtype, 512)) / sizeof(float) + 1);
    QuantizeActivationRow(m.dtype, input.data(), 512, xq.data());
    const auto* w = static_cast<const uint8_t*>(m.view().data);
    for (int64_t r = 0; r < 9; ++r) y[static_cast<size_t>(r)] = DotQuantRowScalar(m.dtype, w + r * DTypeBytes(m.dtype, 512), xq.data(), 512);
    return y;
  };
  std::vector<float> y(9);
  for (int step = 0; step < 3; ++step) {
    for (const TestMatrix* m : {&q5k, &q8, &q5k}) {
      MatVec(m->view(), x.data(), y.data(), nullptr);
      const std::vector<float> want = fresh(*m, x);
      for (size_t r = 0; r < y.size(); ++r) {
        // K-quants equal the scalar dot exactly; Q8_0 up to f32 reordering.
        EXPECT_NEAR(y[r], want[r], m->dtype == DType::kQ5_K ? 0.0 : 1e-4 * (std::fabs(want[r]) + 1)) << "step " << step;
      }
    }
    x[static_cast<size_t>(17 * step)] = std::nextafter(x[static_cast<size_t>(17 * step)], 2.0f);  // in place
    x[100] *= 4;
  }
}

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
  std::vector<double> expected, tolerance;
  ReferenceMatVec(m, x.data(), &expected, &tolerance);
  ThreadPool pool(3);
  std::vector<float> y(4099, NAN);
  MatVec(m.view(), x.data(), y.data(), &pool);
  for (size_t r = 0; r < y.size(); ++r) {
    ASSERT_NEAR(y[r], expected[r], tolerance[r]) << "row " << r;
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
          std::vector<double> expected, tolerance;
          ReferenceMatVec(m, x.data() + b * cols, &expected, &tolerance);
          std::vector<float> single(static_cast<size_t>(kRows), NAN);
          MatVec(m.view(), x.data() + b * cols, single.data(), nullptr);
          const std::vector<float> row(y.begin() + b * kRows, y.begin() + (b + 1) * kRows);
          ASSERT_TRUE(SameBits(row, single)) << DTypeName(dtype) << " cols " << cols;
          for (int64_t r = 0; r < kRows; ++r) {
            const auto i = static_cast<size_t>(r);
            ASSERT_NEAR(single[i], expected[i], tolerance[i])
                << DTypeName(dtype) << " cols " << cols << " row " << r;
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Whether the kernel for `dtype` on `target` sums blocks in f32 vector lanes
// (within f32 reordering of DotQuantRowScalar) rather than scaling exact
// block sums in block order (bit for bit): the 32-element formats
// everywhere, Q4_K and Q6_K on x86 from AVX2 up (AVX2 and AVX-512 alike).
bool SumsInLanes(DType dtype, int64_t target) {
  return DTypeBlockElements(dtype) != 256 ||
         (HWY_ARCH_X86 && target <= HWY_AVX2 && (dtype == DType::kQ4_K || dtype == DType::kQ6_K));
}

// Quantised weights on every compiled target the CPU supports (an AVX-512
// host runs the AVX2 kernels here too): MatVec and MatMul agree bit for bit,
// so do 1, 2 and 3 threads, results match the f64 reference within the
// activation rounding bound, and match the plain-loop DotQuantRowScalar as
// SumsInLanes says.
TEST(MatMulTargetsTest, QuantisedEveryTargetMatchesScalarDot) {
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    for (const DType dtype : {DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kMXFP4}) {
      constexpr int64_t kRows = 37, kCols = 1024, kBatch = 5;
      const TestMatrix m = MakeMatrix(dtype, kRows, kCols, 60);
      const std::vector<float> x = RandomVector(static_cast<size_t>(kBatch * kCols), 61);
      std::vector<float> y(static_cast<size_t>(kBatch * kRows), NAN);
      MatMul(m.view(), x.data(), kBatch, y.data(), nullptr);
      std::vector<uint8_t> xq(static_cast<size_t>(ActivationRowBytes(dtype, kCols)));
      const auto* w = static_cast<const uint8_t*>(m.view().data);
      for (int64_t b = 0; b < kBatch; ++b) {
        std::vector<double> expected, tolerance;
        ReferenceMatVec(m, x.data() + b * kCols, &expected, &tolerance);
        std::vector<float> single(static_cast<size_t>(kRows), NAN);
        MatVec(m.view(), x.data() + b * kCols, single.data(), nullptr);
        const std::vector<float> row(y.begin() + b * kRows, y.begin() + (b + 1) * kRows);
        ASSERT_TRUE(SameBits(row, single)) << DTypeName(dtype);
        for (const int threads : {2, 3}) {
          ThreadPool pool(threads);
          std::vector<float> pooled(static_cast<size_t>(kRows), NAN);
          MatVec(m.view(), x.data() + b * kCols, pooled.data(), &pool);
          ASSERT_TRUE(SameBits(pooled, single)) << DTypeName(dtype) << ", " << threads << " threads";
        }
        QuantizeActivationRow(dtype, x.data() + b * kCols, kCols, xq.data());
        std::vector<uint8_t> xq_simd(xq.size());
        internal::QuantizeActivationRows(dtype, x.data() + b * kCols, kCols, 1, xq_simd.data());
        ASSERT_EQ(xq_simd, xq) << DTypeName(dtype) << ": vectorised activation quantisation differs";
        for (int64_t r = 0; r < kRows; ++r) {
          const auto i = static_cast<size_t>(r);
          ASSERT_NEAR(single[i], expected[i], tolerance[i]) << DTypeName(dtype) << " row " << r;
          const float scalar = DotQuantRowScalar(dtype, w + r * DTypeBytes(dtype, kCols), xq.data(), kCols);
          if (!SumsInLanes(dtype, target)) {
            ASSERT_EQ(std::bit_cast<uint32_t>(single[i]), std::bit_cast<uint32_t>(scalar))
                << DTypeName(dtype) << " row " << r << ": " << single[i] << " vs " << scalar;
          } else {
            double abs_dot = 0;
            for (int64_t c = 0; c < kCols; ++c) {
              abs_dot += std::fabs(m.values[static_cast<size_t>(r * kCols + c)] * x[static_cast<size_t>(b * kCols + c)]);
            }
            ASSERT_NEAR(single[i], scalar, kRelativeTolerance * abs_dot) << DTypeName(dtype) << " row " << r;
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// The K-quant kernels at the ends of their ranges, on every target: codes
// and scales of the largest magnitudes (Q6_K: stored codes 63 and 0, int8
// scales 127 and -128; Q4_K: codes 15, 6-bit scales and mins 63) against
// activations of +-127, where an int16 pair sum that saturated, a scale
// taken with the wrong sign or sub-block, or a lane sum past 2^24 would show.
// The references are DotQuantRowScalar (exact integers per block) and the f64
// dot of the dequantised values.
TEST(MatMulTargetsTest, QuantisedExtremeBlocksEveryTarget) {
  constexpr int64_t kCols = 2048, kBatch = 3;
  for (const DType dtype : {DType::kQ4_K, DType::kQ6_K, DType::kQ5_K}) {
    SCOPED_TRACE(DTypeName(dtype));
    const int64_t row_bytes = DTypeBytes(dtype, kCols), block_bytes = DTypeBlockBytes(dtype);
    // Rows: every code and scale byte 0xFF, 0x00, 0x80, 0x7F, then one of
    // random fills of those four.
    constexpr int64_t kRows = 5;
    const uint8_t fills[] = {0xFF, 0x00, 0x80, 0x7F};
    std::vector<uint8_t> bytes(static_cast<size_t>(kRows * row_bytes));
    std::mt19937 rng(90);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t i = 0; i < row_bytes; ++i) {
        bytes[static_cast<size_t>(r * row_bytes + i)] = r < 4 ? fills[r] : fills[rng() % 4];
      }
    }
    // f16 scales of either sign (1.0, -0.5): the integer extremes stay in
    // the code and scale bytes.
    for (int64_t off = 0; off < kRows * row_bytes; off += block_bytes) {
      const uint16_t d = (off / block_bytes) % 2 ? 0xB800 : 0x3C00;
      if (dtype == DType::kQ6_K) {
        std::memcpy(bytes.data() + off + 208, &d, 2);
      } else {
        std::memcpy(bytes.data() + off, &d, 2);
        std::memcpy(bytes.data() + off + 2, &d, 2);
      }
    }
    // Activations +1 everywhere, -1 everywhere, and random signs: codes +-127.
    std::vector<float> x(static_cast<size_t>(kBatch * kCols));
    for (int64_t c = 0; c < kCols; ++c) {
      x[static_cast<size_t>(c)] = 1.0f;
      x[static_cast<size_t>(kCols + c)] = -1.0f;
      x[static_cast<size_t>(2 * kCols + c)] = rng() % 2 ? 1.0f : -1.0f;
    }
    std::vector<float> values(static_cast<size_t>(kRows * kCols));
    DequantizeRow(dtype, bytes.data(), kRows * kCols, values.data());
    const WeightMatrix w{dtype, bytes.data(), kRows, kCols};
    for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      SCOPED_TRACE(hwy::TargetName(target));
      std::vector<float> y(static_cast<size_t>(kBatch * kRows), NAN);
      MatMul(w, x.data(), kBatch, y.data(), nullptr);
      std::vector<uint8_t> xq(static_cast<size_t>(ActivationRowBytes(dtype, kCols)));
      for (int64_t b = 0; b < kBatch; ++b) {
        std::vector<float> single(static_cast<size_t>(kRows), NAN);
        MatVec(w, x.data() + b * kCols, single.data(), nullptr);
        ASSERT_TRUE(SameBits(std::vector<float>(y.begin() + b * kRows, y.begin() + (b + 1) * kRows), single));
        QuantizeActivationRow(dtype, x.data() + b * kCols, kCols, xq.data());
        for (int64_t r = 0; r < kRows; ++r) {
          double exact = 0, abs_dot = 0;
          for (int64_t c = 0; c < kCols; ++c) {
            const double p = static_cast<double>(values[static_cast<size_t>(r * kCols + c)]) *
                             x[static_cast<size_t>(b * kCols + c)];
            exact += p;
            abs_dot += std::fabs(p);
          }
          const float scalar = DotQuantRowScalar(dtype, bytes.data() + r * row_bytes, xq.data(), kCols);
          const float got = single[static_cast<size_t>(r)];
          // x = +-1 quantises to codes +-127 with d = 1/127 (one f32
          // rounding), so only f32 rounding separates the kernels from the
          // f64 dot.
          ASSERT_NEAR(got, exact, kRelativeTolerance * abs_dot + 1e-30) << "row " << r << " x " << b;
          if (SumsInLanes(dtype, target)) {
            ASSERT_NEAR(got, scalar, kRelativeTolerance * abs_dot + 1e-30) << "row " << r << " x " << b;
          } else {
            ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(scalar)) << "row " << r << " x " << b;
          }
        }
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

// MXFP4 decode runs several weight rows per pass (quant_matmul.cc), so row
// counts 1-9 leave every remainder, and rows are each a different mix of
// all 16 codes in both nibbles. Exponents at the ends of E8M0's range:
// e = 0 and 1 (subnormal scales) and 2 against activations of 2^100, e =
// 253 and 254 against 2^-100 (so no product overflows f32), and the middle
// of the range against +-1. On every target: MatVec equals MatMul (the
// batched kernel, a different code path) and single-row ranges bit for
// bit, and both are within f32 rounding of DotQuantRowScalar and of the f64
// dot of the values (2^(e - 128) times the table's, in f64).
TEST(MatMulTargetsTest, Mxfp4EveryCodeAndExponentEveryTarget) {
  constexpr int64_t kCols = 512, kBatch = 3;  // 16 blocks per row
  struct Case {
    std::vector<uint8_t> exponents;
    float x_scale;
  };
  const Case cases[] = {{{0, 1, 2, 1, 0}, 0x1p100f}, {{254, 253, 254, 200}, 0x1p-100f}, {{120, 127, 128, 129, 136}, 1.0f}};
  const int64_t row_bytes = DTypeBytes(DType::kMXFP4, kCols);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.x_scale);
    for (int64_t rows = 1; rows <= 9; ++rows) {
      SCOPED_TRACE(rows);
      std::vector<uint8_t> bytes(static_cast<size_t>(rows * row_bytes));
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < kCols / 32; ++i) {
          auto* block = bytes.data() + r * row_bytes + i * 17;
          block[0] = c.exponents[static_cast<size_t>(r + i) % c.exponents.size()];
          for (int l = 0; l < 16; ++l) {
            block[1 + l] = static_cast<uint8_t>(((l + r + i) & 0xF) | (((3 * l + 5 * r + 7 + i) & 0xF) << 4));
          }
        }
      }
      // The values in f64 from the bytes (DequantizeRow's f32 would overflow
      // for e = 254 and codes of 4 and more).
      std::vector<double> values(static_cast<size_t>(rows * kCols));
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < kCols; ++i) {
          const uint8_t* block = bytes.data() + r * row_bytes + (i / 32) * 17;
          const int l = static_cast<int>(i % 32);
          const int code = l < 16 ? block[1 + l] & 0xF : block[1 + l - 16] >> 4;
          values[static_cast<size_t>(r * kCols + i)] = std::ldexp(static_cast<double>(kMxfp4Values[code]), block[0] - 128);
        }
      }
      // Activations +s, -s and random signs: codes +-127.
      std::mt19937 rng(static_cast<uint32_t>(91 + rows));
      std::vector<float> x(static_cast<size_t>(kBatch * kCols));
      for (int64_t i = 0; i < kCols; ++i) {
        x[static_cast<size_t>(i)] = c.x_scale;
        x[static_cast<size_t>(kCols + i)] = -c.x_scale;
        x[static_cast<size_t>(2 * kCols + i)] = rng() % 2 ? c.x_scale : -c.x_scale;
      }
      const WeightMatrix w{DType::kMXFP4, bytes.data(), rows, kCols};
      for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
        hwy::SetSupportedTargetsForTest(target);
        SCOPED_TRACE(hwy::TargetName(target));
        std::vector<float> y(static_cast<size_t>(kBatch * rows), NAN);
        MatMul(w, x.data(), kBatch, y.data(), nullptr);
        std::vector<uint8_t> xq(static_cast<size_t>(ActivationRowBytes(DType::kMXFP4, kCols)));
        for (int64_t b = 0; b < kBatch; ++b) {
          const float* xb = x.data() + b * kCols;
          std::vector<float> single(static_cast<size_t>(rows), NAN), ranged(static_cast<size_t>(rows), NAN);
          MatVec(w, xb, single.data(), nullptr);
          for (int64_t r = 0; r < rows; ++r) MatMulRowRange(w, xb, 1, ranged.data(), r, r + 1);
          ASSERT_TRUE(SameBits(std::vector<float>(y.begin() + b * rows, y.begin() + (b + 1) * rows), single)) << b;
          ASSERT_TRUE(SameBits(ranged, single)) << b;
          QuantizeActivationRow(DType::kMXFP4, xb, kCols, xq.data());
          for (int64_t r = 0; r < rows; ++r) {
            double exact = 0, abs_dot = 0;
            for (int64_t i = 0; i < kCols; ++i) {
              const double p = values[static_cast<size_t>(r * kCols + i)] * xb[i];
              exact += p;
              abs_dot += std::fabs(p);
            }
            ASSERT_GT(abs_dot, 0.0);
            const float got = single[static_cast<size_t>(r)];
            const float scalar = DotQuantRowScalar(DType::kMXFP4, bytes.data() + r * row_bytes, xq.data(), kCols);
            ASSERT_NEAR(got, exact, kRelativeTolerance * abs_dot) << "row " << r << " x " << b;
            ASSERT_NEAR(got, scalar, kRelativeTolerance * abs_dot) << "row " << r << " x " << b;
          }
        }
      }
      hwy::SetSupportedTargetsForTest(0);
    }
  }
}

}  // namespace
}  // namespace expertd::kernels
