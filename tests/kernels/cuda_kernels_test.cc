// The CUDA kernels against the CPU kernels (and engine RouteToken) on random
// inputs. Tests that need a device skip when there is none; the runtime
// wrappers' error paths and the shape checks run everywhere.

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/routing.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/dtype.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/quant_blocks.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/runtime.h"

namespace expertd::kernels::cuda {
namespace {

// Skips the test when no device is usable, with the reason.
#define SKIP_WITHOUT_DEVICE()                                               \
  do {                                                                      \
    std::string why_none;                                                   \
    auto count = CudaDeviceCount(&why_none);                                \
    ASSERT_TRUE(count.ok()) << count.status();                              \
    if (*count == 0) GTEST_SKIP() << "no CUDA device: " << why_none;        \
  } while (false)

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> out(n);
  for (float& v : out) v = dist(rng);
  return out;
}

// A device copy of a host vector; the test fails on any error.
template <typename T>
DeviceBuffer Upload(const std::vector<T>& host) {
  auto buffer = DeviceBuffer::Allocate(host.size() * sizeof(T));
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  if (!buffer.ok()) return DeviceBuffer();
  EXPECT_TRUE(buffer->CopyFromHost(host.data(), host.size() * sizeof(T)).ok());
  return std::move(*buffer);
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& buffer, size_t n) {
  std::vector<T> host(n);
  EXPECT_TRUE(buffer.CopyToHost(host.data(), n * sizeof(T)).ok());
  return host;
}

DeviceBuffer Zeros(size_t bytes) {
  auto buffer = DeviceBuffer::Allocate(bytes);
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  return buffer.ok() ? std::move(*buffer) : DeviceBuffer();
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, float tolerance,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tolerance * (1.0f + std::fabs(want[i]))) << what << " at " << i;
  }
}

// --- Without a device ---

TEST(CudaRuntimeTest, ErrorsMapToStatusCodes) {
  EXPECT_TRUE(CudaStatus(cudaSuccess, "x").ok());
  EXPECT_EQ(CudaStatus(cudaErrorMemoryAllocation, "cudaMalloc").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(CudaStatus(cudaErrorNoDevice, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CudaStatus(cudaErrorInsufficientDriver, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CudaStatus(cudaErrorInvalidValue, "x").code(), absl::StatusCode::kInvalidArgument);
  const absl::Status s = CudaStatus(cudaErrorLaunchFailure, "launching MatMul");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_NE(s.message().find("launching MatMul"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("cudaErrorLaunchFailure"), absl::string_view::npos) << s;
}

TEST(CudaRuntimeTest, DeviceCountIsZeroOrMoreNeverAnError) {
  std::string why_none;
  auto count = CudaDeviceCount(&why_none);
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_GE(*count, 0);
  if (*count == 0) {
    EXPECT_FALSE(why_none.empty());
  }
}

// Without a device every wrapper reports an error instead of crashing; with
// one, they work. Either way nothing aborts and destructors are safe.
TEST(CudaRuntimeTest, WrappersReturnStatusWithOrWithoutADevice) {
  auto count = CudaDeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  const bool device = *count > 0;

  auto buffer = DeviceBuffer::Allocate(4096);
  auto stream = Stream::Create();
  auto event = Event::Create(/*timing=*/true);
  auto pinned = PinnedHostBuffer::Allocate(4096);
  std::vector<std::byte> host(8192);
  auto registration = HostRegistration::Register(host.data(), host.size());
  for (const absl::Status& s : {buffer.status(), stream.status(), event.status(), pinned.status(),
                                registration.status()}) {
    EXPECT_EQ(s.ok(), device) << s;
    if (!device) {
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    }
  }
  // Zero bytes needs no device.
  auto empty = DeviceBuffer::Allocate(0);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->data(), nullptr);
  EXPECT_FALSE(empty->CopyFromHost(host.data(), 1).ok()) << "larger than the buffer";
  EXPECT_FALSE(HostRegistration::Register(nullptr, 0).ok());
  // A moved-from and a default wrapper destroy cleanly.
  DeviceBuffer moved = std::move(*empty);
  Stream default_stream;
  Event default_event;
}

TEST(CudaKernelsTest, ShapeErrorsAreCaughtBeforeLaunch) {
  WeightMatrix w;
  w.dtype = DType::kBF16;
  w.rows = 0;
  w.cols = 16;
  EXPECT_EQ(cuda::MatMul(w, nullptr, 1, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::RmsNorm(nullptr, nullptr, 1, 0, 1e-5f, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::ApplyRope(nullptr, 1, 2, 63, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  AttentionShape bad{.num_heads = 6, .num_kv_heads = 4, .head_dim = 64};
  EXPECT_EQ(cuda::CausalAttention(bad, nullptr, 1, 0, nullptr, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  AttentionShape wide{.num_heads = 4, .num_kv_heads = 4, .head_dim = kMaxAttentionHeadDim + 2};
  EXPECT_EQ(cuda::CausalAttention(wide, nullptr, 1, 0, nullptr, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::RouteTokens(nullptr, 1, 8, 9, true, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::SiluMul(nullptr, nullptr, -1, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  // Empty work is fine and launches nothing.
  EXPECT_TRUE(cuda::RouteTokens(nullptr, 0, 8, 2, true, nullptr, nullptr, nullptr).ok());
  EXPECT_TRUE(cuda::SiluMul(nullptr, nullptr, 0, nullptr, nullptr).ok());
  EXPECT_EQ(cuda::AddRows(nullptr, 1, 0, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::GatherRows(nullptr, nullptr, -1, 4, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::Clip(-1.0f, 4, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  AttentionShape negative_window{.num_heads = 4, .num_kv_heads = 2, .head_dim = 64, .window = -1};
  EXPECT_EQ(cuda::CausalAttention(negative_window, nullptr, 1, 0, nullptr, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::ClampedSwiglu(nullptr, nullptr, nullptr, nullptr, 1, 0, 1.702f, 7.0f, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::ClampedSwiglu(nullptr, nullptr, nullptr, nullptr, 1, 4, 1.702f, 0.0f, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(cuda::ClampedSwiglu(nullptr, nullptr, nullptr, nullptr, 0, 4, 1.702f, 7.0f, nullptr, nullptr).ok());
  EXPECT_EQ(cuda::InterleavedRope(nullptr, 1, 8, 1, 0, 7, nullptr, 1.0f, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::Scale(2.0f, -1, nullptr, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(cuda::Scale(2.0f, 0, nullptr, nullptr).ok());
  EXPECT_TRUE(cuda::AddWeightedSlots(nullptr, nullptr, nullptr, 0, 4, nullptr, nullptr).ok());
}

// --- Against the CPU kernels, on a device ---

// (dtype, rows, cols, batch): cols 256 takes the 16-byte path, 61 the scalar one.
class CudaMatMulTest : public ::testing::TestWithParam<std::tuple<DType, int, int, int>> {};

TEST_P(CudaMatMulTest, MatchesCpuMatMul) {
  SKIP_WITHOUT_DEVICE();
  const auto [dtype, rows, cols, batch] = GetParam();
  const size_t count = static_cast<size_t>(rows) * cols;
  std::vector<float> w32 = RandomFloats(count, 1);
  std::vector<uint16_t> w16(count);
  for (size_t i = 0; i < count; ++i) {
    w16[i] = dtype == DType::kBF16 ? F32ToBF16(w32[i]) : F32ToF16(w32[i]);
  }
  const void* host_w = dtype == DType::kF32 ? static_cast<const void*>(w32.data()) : w16.data();
  const std::vector<float> x = RandomFloats(static_cast<size_t>(batch) * cols, 2);

  WeightMatrix cpu_w{.dtype = dtype, .data = host_w, .rows = rows, .cols = cols};
  std::vector<float> want(static_cast<size_t>(batch) * rows);
  kernels::MatMul(cpu_w, x.data(), batch, want.data(), nullptr);

  auto d_w = Zeros(cpu_w.size_bytes());
  ASSERT_TRUE(d_w.CopyFromHost(host_w, cpu_w.size_bytes()).ok());
  DeviceBuffer d_x = Upload(x);
  DeviceBuffer d_y = Zeros(want.size() * sizeof(float));
  WeightMatrix gpu_w = cpu_w;
  gpu_w.data = d_w.data();
  ASSERT_TRUE(cuda::MatMul(gpu_w, d_x.as<float>(), batch, d_y.as<float>(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // Sums of `cols` products of magnitude <= 1: f32 reassociation error.
  ExpectNear(Download<float>(d_y, want.size()), want, 1e-4f * std::sqrt(static_cast<float>(cols)), "y");
}

std::string MatMulTestName(const ::testing::TestParamInfo<CudaMatMulTest::ParamType>& info) {
  return std::string(DTypeName(std::get<0>(info.param))) + "_" + std::to_string(std::get<1>(info.param)) + "x" +
         std::to_string(std::get<2>(info.param)) + "_batch" + std::to_string(std::get<3>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaMatMulTest,
                         ::testing::Combine(::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                                            ::testing::Values(37), ::testing::Values(256, 61),
                                            ::testing::Values(1, 3, 8, 11)),
                         MatMulTestName);

// --- GGML block formats ---

// A block-format matrix of random blocks: random code bytes, and random
// finite scales (f16 in [-0.02, 0.02]; MXFP4's exponent 2^-10 to 2^-6), as
// tests/kernels/matmul_test.cc's MakeQuantMatrix; `values` is the CPU's
// DequantizeRow of them, the plain-loop reference.
struct QuantMatrix {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // [rows][cols]
};

QuantMatrix RandomQuantMatrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> scale(-0.02f, 0.02f);
  QuantMatrix m;
  m.bytes.resize(static_cast<size_t>(rows * DTypeBytes(dtype, cols)));
  for (uint8_t& b : m.bytes) b = static_cast<uint8_t>(rng());
  // Offsets of the f16 scales in a block (Q6_K keeps d at its end).
  std::vector<size_t> scale_offsets = {0};
  if (dtype == DType::kQ4_K || dtype == DType::kQ5_K) scale_offsets = {0, 2};
  if (dtype == DType::kQ6_K) scale_offsets = {208};
  if (dtype == DType::kMXFP4) scale_offsets = {};
  const auto block_bytes = static_cast<size_t>(DTypeBlockBytes(dtype));
  for (size_t block = 0; block < m.bytes.size(); block += block_bytes) {
    if (dtype == DType::kMXFP4) m.bytes[block] = static_cast<uint8_t>(118 + rng() % 5);
    for (const size_t offset : scale_offsets) {
      const uint16_t h = F32ToF16(scale(rng));
      std::memcpy(&m.bytes[block + offset], &h, sizeof(h));
    }
  }
  m.values.resize(static_cast<size_t>(rows * cols));
  DequantizeRow(dtype, m.bytes.data(), rows * cols, m.values.data());
  return m;
}

// (dtype, rows, blocks per row, batch). Batch 9 is two passes (8 + 1);
// 11 blocks of 32 leave lanes idle in a warp's last step (8 blocks a step);
// 37 rows leave warps idle in the last thread block.
class CudaQuantMatMulTest : public ::testing::TestWithParam<std::tuple<DType, int, int, int>> {};

TEST_P(CudaQuantMatMulTest, MatchesDequantizedPlainLoops) {
  SKIP_WITHOUT_DEVICE();
  const auto [dtype, rows, blocks, batch] = GetParam();
  const int64_t cols = blocks * DTypeBlockElements(dtype);
  const QuantMatrix m = RandomQuantMatrix(dtype, rows, cols, 50);
  const std::vector<float> x = RandomFloats(static_cast<size_t>(batch * cols), 51);

  // The weights one byte past an aligned address and x one float past one:
  // the kernel must not rely on alignment (blocks of 34, 18, 210 and 17
  // bytes are unaligned within a row anyway).
  DeviceBuffer d_w = Zeros(m.bytes.size() + 1);
  ASSERT_TRUE(cudaMemcpy(d_w.as<uint8_t>() + 1, m.bytes.data(), m.bytes.size(), cudaMemcpyHostToDevice) ==
              cudaSuccess);
  std::vector<float> x_shifted(x.size() + 1, 0.0f);
  std::copy(x.begin(), x.end(), x_shifted.begin() + 1);
  DeviceBuffer d_x = Upload(x_shifted);
  DeviceBuffer d_y = Zeros(static_cast<size_t>(batch) * rows * sizeof(float));
  const WeightMatrix w{.dtype = dtype, .data = d_w.as<uint8_t>() + 1, .rows = rows, .cols = cols};
  ASSERT_TRUE(cuda::MatMul(w, d_x.as<float>() + 1, batch, d_y.as<float>(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = Download<float>(d_y, static_cast<size_t>(batch) * rows);

  // The device dequantises each weight to DequantizeRow's value exactly, so
  // the only error is the f32 sum: a lane adds cols / 32 products in order,
  // then 5 shuffle steps add the lanes' sums; the classic bound for n
  // additions is n * u * sum |w x| (u = 2^-24), and FLT_EPSILON = 2u doubles
  // it for margin. A wrong element (a nibble, a scale, a sign) moves y by
  // about |w x|, far above this (~1e-6 of sum |w x|).
  const double bound_factor = (static_cast<double>(cols) / 32 + 8) * FLT_EPSILON;
  for (int b = 0; b < batch; ++b) {
    for (int r = 0; r < rows; ++r) {
      double want = 0, magnitude = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double product = static_cast<double>(m.values[r * cols + c]) * x[b * cols + c];
        want += product;
        magnitude += std::fabs(product);
      }
      ASSERT_LE(std::fabs(got[b * rows + r] - want), bound_factor * magnitude)
          << "row " << r << " of batch row " << b << ": got " << got[b * rows + r] << ", want " << want;
    }
  }
}

std::string QuantMatMulTestName(const ::testing::TestParamInfo<CudaQuantMatMulTest::ParamType>& info) {
  return std::string(DTypeName(std::get<0>(info.param))) + "_" + std::to_string(std::get<1>(info.param)) + "x" +
         std::to_string(std::get<2>(info.param)) + "blocks_batch" + std::to_string(std::get<3>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaQuantMatMulTest,
                         ::testing::Combine(::testing::Values(DType::kQ8_0, DType::kQ4_0, DType::kQ4_K, DType::kQ5_K,
                                                              DType::kQ6_K, DType::kMXFP4),
                                            ::testing::Values(37), ::testing::Values(1, 11),
                                            ::testing::Values(1, 3, 9)),
                         QuantMatMulTestName);

// A row that is not whole blocks is refused before anything is enqueued,
// naming the dtype and the columns (no device needed).
TEST(CudaKernelsTest, BlockFormatsRefuseColsThatAreNotWholeBlocks) {
  for (const auto& [dtype, cols] : {std::pair{DType::kQ8_0, 48}, std::pair{DType::kQ4_0, 33},
                                    std::pair{DType::kQ4_K, 300}, std::pair{DType::kQ5_K, 128},
                                    std::pair{DType::kQ6_K, 260}, std::pair{DType::kMXFP4, 16}}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    // Host pointers: the shape check comes first, nothing is read.
    const std::vector<uint8_t> bytes(1024);
    const WeightMatrix w{.dtype = dtype, .data = bytes.data(), .rows = 4, .cols = cols};
    float x = 0, y = 0;
    const absl::Status s = cuda::MatMul(w, &x, 1, &y, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(std::string(DTypeName(dtype))), absl::string_view::npos) << s;
    EXPECT_NE(s.message().find(std::to_string(cols) + " columns"), absl::string_view::npos) << s;
  }
  // Every dtype the CPU reads has a GPU kernel.
  for (DType dtype : kAllDTypes) EXPECT_TRUE(cuda::MatMulSupports(dtype)) << DTypeName(dtype);
}

TEST(CudaKernelsTest, RmsNormMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kRows = 3;
  constexpr int kN = 1000;
  const std::vector<float> x = RandomFloats(kRows * kN, 3, 4.0f);
  const std::vector<float> weight = RandomFloats(kN, 4);
  std::vector<float> want(x.size());
  for (int r = 0; r < kRows; ++r) kernels::RmsNorm(x.data() + r * kN, weight.data(), kN, 1e-5f, want.data() + r * kN);
  DeviceBuffer d_x = Upload(x);
  DeviceBuffer d_w = Upload(weight);
  // In place, as the CPU kernel allows.
  ASSERT_TRUE(cuda::RmsNorm(d_x.as<float>(), d_w.as<float>(), kRows, kN, 1e-5f, d_x.as<float>(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_x, x.size()), want, 1e-5f, "rmsnorm");
}

TEST(CudaKernelsTest, RopeMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kTokens = 3;
  constexpr int kHeads = 4;
  constexpr int kHeadDim = 64;
  std::vector<float> x = RandomFloats(kTokens * kHeads * kHeadDim, 5);
  std::vector<float> cos_sin(kTokens * kHeadDim);
  for (int t = 0; t < kTokens; ++t) {
    const int position = 17 + t;
    for (int i = 0; i < kHeadDim / 2; ++i) {
      const double angle = position * std::pow(10000.0, -2.0 * i / kHeadDim);
      cos_sin[t * kHeadDim + i] = static_cast<float>(std::cos(angle));
      cos_sin[t * kHeadDim + kHeadDim / 2 + i] = static_cast<float>(std::sin(angle));
    }
  }
  std::vector<float> want = x;
  for (int t = 0; t < kTokens; ++t) {
    kernels::ApplyRope(want.data() + t * kHeads * kHeadDim, kHeads, kHeadDim, cos_sin.data() + t * kHeadDim);
  }
  DeviceBuffer d_x = Upload(x);
  DeviceBuffer d_cs = Upload(cos_sin);
  ASSERT_TRUE(cuda::ApplyRope(d_x.as<float>(), kTokens, kHeads, kHeadDim, d_cs.as<float>(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_x, x.size()), want, 1e-6f, "rope");
}

// DeepSeek-V2's RoPE on every head's rope part of strided query rows,
// against engine/forward.cc's InterleavedRope written out; then Scale.
TEST(CudaKernelsTest, InterleavedRopeAndScaleMatchPlainLoops) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kRows = 3, kHeads = 4, kNope = 16, kDim = 8, kQk = kNope + kDim;
  constexpr int kStride = kHeads * kQk;
  constexpr float kFactor = 1.3f;
  const std::vector<float> x = RandomFloats(kRows * kStride, 50);
  const std::vector<float> cos_sin = RandomFloats(kRows * kDim, 51);
  std::vector<float> want = x;
  for (int r = 0; r < kRows; ++r) {
    for (int head = 0; head < kHeads; ++head) {
      float* p = want.data() + r * kStride + head * kQk + kNope;
      const float* cs = cos_sin.data() + r * kDim;
      for (int i = 0; i < kDim / 2; ++i) {
        const float c = cs[i] * kFactor, s = cs[kDim / 2 + i] * kFactor;
        const float a = p[2 * i], b = p[2 * i + 1];
        p[2 * i] = a * c - b * s;
        p[2 * i + 1] = a * s + b * c;
      }
    }
  }
  DeviceBuffer d_x = Upload(x);
  DeviceBuffer d_cs = Upload(cos_sin);
  ASSERT_TRUE(cuda::InterleavedRope(d_x.as<float>() + kNope, kRows, kStride, kHeads, kQk, kDim, d_cs.as<float>(),
                                    kFactor, nullptr)
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> got = Download<float>(d_x, x.size());
  ExpectNear(got, want, 1e-6f, "interleaved rope");
  ASSERT_NE(got, x);

  for (float& v : want) v *= -0.25f;
  ASSERT_TRUE(cuda::Scale(-0.25f, static_cast<int64_t>(x.size()), d_x.as<float>(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_x, x.size()), want, 1e-6f, "scale");
}

// (head_dim, num_heads, num_kv_heads, num_queries, first_position)
class CudaAttentionTest : public ::testing::TestWithParam<std::tuple<int, int, int, int, int>> {};

TEST_P(CudaAttentionTest, MatchesCpuCausalAttention) {
  SKIP_WITHOUT_DEVICE();
  const auto [head_dim, heads, kv_heads, queries, first] = GetParam();
  const AttentionShape shape{.num_heads = heads, .num_kv_heads = kv_heads, .head_dim = head_dim};
  const int positions = first + queries;
  const std::vector<float> q = RandomFloats(static_cast<size_t>(queries) * heads * head_dim, 6);
  const std::vector<float> k = RandomFloats(static_cast<size_t>(positions) * kv_heads * head_dim, 7);
  const std::vector<float> v = RandomFloats(static_cast<size_t>(positions) * kv_heads * head_dim, 8);
  std::vector<float> want(q.size());
  kernels::CausalAttention(shape, q.data(), queries, first, k.data(), v.data(), want.data(), nullptr);
  DeviceBuffer d_q = Upload(q);
  DeviceBuffer d_k = Upload(k);
  DeviceBuffer d_v = Upload(v);
  DeviceBuffer d_out = Zeros(q.size() * sizeof(float));
  ASSERT_TRUE(cuda::CausalAttention(shape, d_q.as<float>(), queries, first, d_k.as<float>(), d_v.as<float>(),
                              d_out.as<float>(), nullptr)
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_out, q.size()), want, 1e-4f, "attention");
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttentionTest,
                         ::testing::Values(std::make_tuple(64, 8, 2, 3, 37), std::make_tuple(128, 4, 4, 1, 0),
                                           std::make_tuple(128, 16, 4, 5, 300), std::make_tuple(96, 6, 3, 2, 9),
                                           std::make_tuple(256, 2, 1, 1, 1000),
                                           // DeepSeek-V2's latent (512 + 64) and a test model's (32 + 8): every
                                           // head on one shared KV head.
                                           std::make_tuple(576, 16, 1, 3, 20), std::make_tuple(40, 4, 1, 5, 3)));

// gpt-oss's attention: sliding windows shorter and longer than the
// history, with and without sinks (one large enough to take most of the
// probability), against the CPU kernel. (head_dim, queries, first_position,
// window, sinks)
class CudaWindowSinkAttentionTest : public ::testing::TestWithParam<std::tuple<int, int, int, int, bool>> {};

TEST_P(CudaWindowSinkAttentionTest, MatchesCpuCausalAttention) {
  SKIP_WITHOUT_DEVICE();
  const auto [head_dim, queries, first, window, with_sinks] = GetParam();
  constexpr int kHeads = 8, kKvHeads = 2;
  const int positions = first + queries;
  const std::vector<float> q = RandomFloats(static_cast<size_t>(queries) * kHeads * head_dim, 30);
  const std::vector<float> k = RandomFloats(static_cast<size_t>(positions) * kKvHeads * head_dim, 31);
  const std::vector<float> v = RandomFloats(static_cast<size_t>(positions) * kKvHeads * head_dim, 32);
  std::vector<float> sinks = RandomFloats(kHeads, 33, 2.0f);
  sinks[1] = 40.0f;  // far above every score: the head's output nearly vanishes
  AttentionShape shape{.num_heads = kHeads, .num_kv_heads = kKvHeads, .head_dim = head_dim, .window = window};
  if (with_sinks) shape.sinks = sinks.data();
  std::vector<float> want(q.size());
  kernels::CausalAttention(shape, q.data(), queries, first, k.data(), v.data(), want.data(), nullptr);
  // Without the window (or the sinks) the answer differs: the case tests them.
  AttentionShape plain{.num_heads = kHeads, .num_kv_heads = kKvHeads, .head_dim = head_dim};
  std::vector<float> unwindowed(q.size());
  kernels::CausalAttention(plain, q.data(), queries, first, k.data(), v.data(), unwindowed.data(), nullptr);
  ASSERT_NE(want, unwindowed);

  DeviceBuffer d_q = Upload(q);
  DeviceBuffer d_k = Upload(k);
  DeviceBuffer d_v = Upload(v);
  DeviceBuffer d_sinks = Upload(sinks);
  DeviceBuffer d_out = Zeros(q.size() * sizeof(float));
  if (with_sinks) shape.sinks = d_sinks.as<float>();
  ASSERT_TRUE(cuda::CausalAttention(shape, d_q.as<float>(), queries, first, d_k.as<float>(), d_v.as<float>(),
                                    d_out.as<float>(), nullptr)
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_out, q.size()), want, 1e-4f, "windowed attention with sinks");
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaWindowSinkAttentionTest,
                         ::testing::Values(std::make_tuple(64, 10, 0, 4, true),    // a prompt past its window
                                           std::make_tuple(64, 1, 37, 4, true),    // a decode step
                                           std::make_tuple(64, 3, 37, 4, false),   // window only
                                           std::make_tuple(64, 5, 2, 0, true),     // sinks only
                                           std::make_tuple(128, 2, 300, 128, true),
                                           std::make_tuple(64, 6, 1, 5, true)));   // window longer than some histories

// ClampedSwiglu against engine/cpu_feed_forward.cc's ExpertActivation with
// extras, written out as a plain loop: biases, then the clamps (gate from
// above only), then (up + 1) * g * sigmoid(alpha g).
TEST(CudaKernelsTest, ClampedSwigluMatchesTheCpuFormula) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kRows = 3;
  constexpr int kWidth = 300;
  constexpr float kAlpha = 1.702f, kLimit = 1.5f;
  std::vector<float> gate = RandomFloats(kRows * kWidth, 40, 4.0f);
  const std::vector<float> up = RandomFloats(kRows * kWidth, 41, 4.0f);
  const std::vector<float> gate_bias = RandomFloats(kWidth, 42);
  const std::vector<float> up_bias = RandomFloats(kWidth, 43);
  gate[0] = -200.0f;  // exp(-alpha g) overflows to inf: the output is -0
  for (bool with_biases : {true, false}) {
    SCOPED_TRACE(with_biases ? "with biases" : "without biases");
    std::vector<float> want(gate.size());
    int clamped = 0;
    for (int r = 0; r < kRows; ++r) {
      for (int i = 0; i < kWidth; ++i) {
        const int at = r * kWidth + i;
        const float g = gate[at] + (with_biases ? gate_bias[i] : 0.0f);
        const float u = up[at] + (with_biases ? up_bias[i] : 0.0f);
        const float clamped_gate = std::min(g, kLimit);
        const float clamped_up = std::clamp(u, -kLimit, kLimit);
        clamped += (clamped_gate != g) + (clamped_up != u);
        want[at] = (clamped_up + 1.0f) * clamped_gate / (1.0f + std::exp(-kAlpha * clamped_gate));
      }
    }
    ASSERT_GT(clamped, 100) << "the clamps must bite";
    DeviceBuffer d_gate = Upload(gate);
    DeviceBuffer d_up = Upload(up);
    DeviceBuffer d_gate_bias = Upload(gate_bias);
    DeviceBuffer d_up_bias = Upload(up_bias);
    ASSERT_TRUE(cuda::ClampedSwiglu(d_gate.as<float>(), d_up.as<float>(),
                                    with_biases ? d_gate_bias.as<float>() : nullptr,
                                    with_biases ? d_up_bias.as<float>() : nullptr, kRows, kWidth, kAlpha, kLimit,
                                    d_gate.as<float>(), nullptr)
                    .ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ExpectNear(Download<float>(d_gate, want.size()), want, 1e-5f, "clamped swiglu");
  }
}

class CudaRouteTest : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(CudaRouteTest, MatchesRouteToken) {
  SKIP_WITHOUT_DEVICE();
  const auto [experts, k, normalize] = GetParam();
  constexpr int kTokens = 7;
  const std::vector<float> logits = RandomFloats(static_cast<size_t>(kTokens) * experts, 9, 3.0f);
  std::vector<int32_t> want_experts(kTokens * k);
  std::vector<float> want_weights(kTokens * k);
  std::vector<float> scratch(experts);
  for (int t = 0; t < kTokens; ++t) {
    engine::RouteToken(logits.data() + t * experts, experts, k, normalize, scratch.data(), want_experts.data() + t * k,
               want_weights.data() + t * k);
  }
  DeviceBuffer d_logits = Upload(logits);
  DeviceBuffer d_experts = Zeros(want_experts.size() * sizeof(int32_t));
  DeviceBuffer d_weights = Zeros(want_weights.size() * sizeof(float));
  ASSERT_TRUE(cuda::RouteTokens(d_logits.as<float>(), kTokens, experts, k, normalize, d_experts.as<int32_t>(),
                          d_weights.as<float>(), nullptr)
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(Download<int32_t>(d_experts, want_experts.size()), want_experts);
  ExpectNear(Download<float>(d_weights, want_weights.size()), want_weights, 1e-5f, "weights");
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaRouteTest,
                         ::testing::Values(std::make_tuple(64, 8, true), std::make_tuple(64, 8, false),
                                           std::make_tuple(8, 2, true), std::make_tuple(128, 1, false),
                                           std::make_tuple(60, 4, true), std::make_tuple(1000, 16, true)));

TEST(CudaKernelsTest, RouteTiesGoToTheLowerIndex) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kExperts = 64;
  constexpr int kK = 8;
  // Equal logits everywhere except two high ones that tie with each other.
  std::vector<float> logits(kExperts, 0.0f);
  logits[40] = 2.0f;
  logits[9] = 2.0f;
  DeviceBuffer d_logits = Upload(logits);
  DeviceBuffer d_experts = Zeros(kK * sizeof(int32_t));
  DeviceBuffer d_weights = Zeros(kK * sizeof(float));
  ASSERT_TRUE(
      cuda::RouteTokens(d_logits.as<float>(), 1, kExperts, kK, true, d_experts.as<int32_t>(), d_weights.as<float>(), nullptr)
          .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(Download<int32_t>(d_experts, kK), (std::vector<int32_t>{9, 40, 0, 1, 2, 3, 4, 5}));
}

TEST(CudaKernelsTest, SiluMulMatchesCpu) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kN = 1001;
  std::vector<float> gate = RandomFloats(kN, 10, 8.0f);
  gate[0] = -100.0f;  // past the exp clamp
  gate[1] = 100.0f;
  const std::vector<float> up = RandomFloats(kN, 11);
  std::vector<float> want(kN);
  kernels::SiluMul(gate.data(), up.data(), kN, want.data());
  DeviceBuffer d_gate = Upload(gate);
  DeviceBuffer d_up = Upload(up);
  ASSERT_TRUE(cuda::SiluMul(d_gate.as<float>(), d_up.as<float>(), kN, d_gate.as<float>(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_gate, kN), want, 1e-5f, "silu");
}

// The forward pass's row operations against plain loops.
TEST(CudaKernelsTest, RowOperationsMatchPlainLoops) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kRows = 5;
  constexpr int kWidth = 300;  // not a multiple of the block size
  const std::vector<float> x = RandomFloats(kRows * kWidth, 20, 3.0f);
  const std::vector<float> base = RandomFloats(kRows * kWidth, 21);
  const std::vector<float> bias = RandomFloats(kWidth, 22);
  const std::vector<float> gates = {-2.0f, 0.0f, 1.0f, 5.0f, -30.0f};

  std::vector<float> want_add = base, want_bias = base, want_gated = base, want_clip = x;
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kWidth; ++i) {
      const int at = r * kWidth + i;
      want_add[at] += x[at];
      want_bias[at] += bias[i];
      want_gated[at] += 1.0f / (1.0f + std::exp(-gates[r])) * x[at];
      want_clip[at] = std::min(std::max(x[at], -1.5f), 1.5f);
    }
  }
  DeviceBuffer d_x = Upload(x);
  DeviceBuffer d_add = Upload(base);
  DeviceBuffer d_bias_out = Upload(base);
  DeviceBuffer d_gated = Upload(base);
  DeviceBuffer d_clip = Upload(x);
  DeviceBuffer d_bias = Upload(bias);
  DeviceBuffer d_gates = Upload(gates);
  ASSERT_TRUE(cuda::AddRows(d_x.as<float>(), kRows, kWidth, d_add.as<float>(), nullptr).ok());
  ASSERT_TRUE(cuda::AddBias(d_bias.as<float>(), kRows, kWidth, d_bias_out.as<float>(), nullptr).ok());
  ASSERT_TRUE(cuda::AddGatedRows(d_x.as<float>(), d_gates.as<float>(), kRows, kWidth, d_gated.as<float>(), nullptr).ok());
  ASSERT_TRUE(cuda::Clip(1.5f, kRows * kWidth, d_clip.as<float>(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_add, kRows * kWidth), want_add, 1e-6f, "add");
  ExpectNear(Download<float>(d_bias_out, kRows * kWidth), want_bias, 1e-6f, "bias");
  ExpectNear(Download<float>(d_gated, kRows * kWidth), want_gated, 1e-5f, "gated");
  ExpectNear(Download<float>(d_clip, kRows * kWidth), want_clip, 0.0f, "clip");
}

// More rows than a grid's y dimension holds (65535) run in chunks.
TEST(CudaKernelsTest, RowKernelsChunkPastTheGridLimit) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kRows = 70001;
  constexpr int kWidth = 3;
  const std::vector<float> x = RandomFloats(kRows * kWidth, 40);
  std::vector<int32_t> reversed(kRows);
  for (int i = 0; i < kRows; ++i) reversed[i] = kRows - 1 - i;
  std::vector<float> want_sum(kRows * kWidth), want_gather(kRows * kWidth);
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kWidth; ++i) {
      want_sum[r * kWidth + i] = 2 * x[r * kWidth + i];
      want_gather[r * kWidth + i] = x[reversed[r] * kWidth + i];
    }
  }
  DeviceBuffer d_x = Upload(x);
  DeviceBuffer d_sum = Upload(x);
  DeviceBuffer d_index = Upload(reversed);
  DeviceBuffer d_gathered = Zeros(x.size() * sizeof(float));
  ASSERT_TRUE(cuda::AddRows(d_x.as<float>(), kRows, kWidth, d_sum.as<float>(), nullptr).ok());
  ASSERT_TRUE(cuda::GatherRows(d_x.as<float>(), d_index.as<int32_t>(), kRows, kWidth, d_gathered.as<float>(), nullptr)
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_sum, x.size()), want_sum, 1e-6f, "add");
  ExpectNear(Download<float>(d_gathered, x.size()), want_gather, 0.0f, "gather");
}

// Gather an expert's rows, scatter its outputs to slots, combine the slots
// of each row with its gate weights: the MoE block's data movement.
TEST(CudaKernelsTest, GatherScatterAndSlotCombineMatchPlainLoops) {
  SKIP_WITHOUT_DEVICE();
  constexpr int kRows = 3;
  constexpr int kWidth = 70;
  const std::vector<int32_t> row_slot_begin = {0, 2, 3, 6};  // k = 2, 1, 3
  constexpr int kSlots = 6;
  const std::vector<float> src = RandomFloats(kRows * kWidth, 30);
  const std::vector<int32_t> gather_index = {2, 0, 2, 1};
  const std::vector<int32_t> scatter_index = {5, 0, 3, 1};
  const std::vector<float> weights = {0.5f, 0.25f, 1.0f, 0.2f, 0.3f, 0.5f};
  const std::vector<float> slots = RandomFloats(kSlots * kWidth, 31);
  const std::vector<float> out0 = RandomFloats(kRows * kWidth, 32);

  std::vector<float> want_gather(gather_index.size() * kWidth);
  for (size_t i = 0; i < gather_index.size(); ++i) {
    std::copy_n(&src[gather_index[i] * kWidth], kWidth, &want_gather[i * kWidth]);
  }
  std::vector<float> want_scatter = slots;
  for (size_t i = 0; i < scatter_index.size(); ++i) {
    std::copy_n(&want_gather[i * kWidth], kWidth, &want_scatter[scatter_index[i] * kWidth]);
  }
  std::vector<float> want_combine = out0;
  for (int r = 0; r < kRows; ++r) {
    for (int i = 0; i < kWidth; ++i) {
      float sum = 0.0f;
      for (int s = row_slot_begin[r]; s < row_slot_begin[r + 1]; ++s) sum += weights[s] * want_scatter[s * kWidth + i];
      want_combine[r * kWidth + i] += sum;
    }
  }
  DeviceBuffer d_src = Upload(src);
  DeviceBuffer d_gather_index = Upload(gather_index);
  DeviceBuffer d_scatter_index = Upload(scatter_index);
  DeviceBuffer d_gathered = Zeros(want_gather.size() * sizeof(float));
  DeviceBuffer d_slots = Upload(slots);
  DeviceBuffer d_weights = Upload(weights);
  DeviceBuffer d_begin = Upload(row_slot_begin);
  DeviceBuffer d_out = Upload(out0);
  const int count = static_cast<int>(gather_index.size());
  ASSERT_TRUE(cuda::GatherRows(d_src.as<float>(), d_gather_index.as<int32_t>(), count, kWidth,
                               d_gathered.as<float>(), nullptr).ok());
  ASSERT_TRUE(cuda::ScatterRows(d_gathered.as<float>(), d_scatter_index.as<int32_t>(), count, kWidth,
                                d_slots.as<float>(), nullptr).ok());
  ASSERT_TRUE(cuda::AddWeightedSlots(d_slots.as<float>(), d_weights.as<float>(), d_begin.as<int32_t>(), kRows, kWidth,
                                     d_out.as<float>(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ExpectNear(Download<float>(d_gathered, want_gather.size()), want_gather, 0.0f, "gather");
  ExpectNear(Download<float>(d_slots, want_scatter.size()), want_scatter, 0.0f, "scatter");
  ExpectNear(Download<float>(d_out, want_combine.size()), want_combine, 1e-6f, "combine");
}

// Work on a stream waits for an event recorded on another (the copy-stream
// pattern of the VRAM tier).
TEST(CudaRuntimeTest, StreamsOrderThroughEvents) {
  SKIP_WITHOUT_DEVICE();
  auto copy = Stream::Create();
  auto compute = Stream::Create();
  auto ready = Event::Create();
  ASSERT_TRUE(copy.ok() && compute.ok() && ready.ok());
  constexpr int kN = 1 << 20;
  std::vector<float> gate(kN, 1.0f), up(kN, 2.0f);
  auto pinned = PinnedHostBuffer::Allocate(kN * sizeof(float));
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  std::memcpy(pinned->data(), gate.data(), kN * sizeof(float));
  DeviceBuffer d_gate = Zeros(kN * sizeof(float));
  DeviceBuffer d_up = Upload(up);
  ASSERT_EQ(cudaMemcpyAsync(d_gate.data(), pinned->data(), kN * sizeof(float), cudaMemcpyHostToDevice, copy->get()),
            cudaSuccess);
  ASSERT_TRUE(ready->Record(copy->get()).ok());
  ASSERT_TRUE(compute->Wait(ready->get()).ok());
  ASSERT_TRUE(cuda::SiluMul(d_gate.as<float>(), d_up.as<float>(), kN, d_gate.as<float>(), compute->get()).ok());
  ASSERT_TRUE(compute->Synchronize().ok());
  const std::vector<float> got = Download<float>(d_gate, kN);
  const float want = 1.0f / (1.0f + std::exp(-1.0f)) * 2.0f;
  EXPECT_NEAR(got[0], want, 1e-6f);
  EXPECT_NEAR(got[kN - 1], want, 1e-6f);
}

}  // namespace
}  // namespace expertd::kernels::cuda
