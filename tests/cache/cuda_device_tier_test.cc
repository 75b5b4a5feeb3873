// The CUDA VRAM tier under the expert cache. Without a device only the
// clean failure is checked; the rest skips.

#include "cache/cuda_device_tier.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cache/expert_cache.h"
#include "gtest/gtest.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"
#include "kernels/cuda/runtime.h"
#include "tests/testing/test_models.h"

namespace expertd::cache {
namespace {

using ::expertd::testing::ScopedTempDir;

constexpr int kLayers = 2;
constexpr int kExperts = 8;

std::vector<std::byte> Bundle(const io::ExpertFileLayout& layout, int layer, int expert) {
  std::vector<std::byte> bytes(layout.expert_bytes());
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte((layer * 31 + expert * 7 + i) & 0xff);
  return bytes;
}

TEST(CudaDeviceTierTest, CreateIsAnErrorNotACrashWithoutADevice) {
  auto count = kernels::cuda::CudaDeviceCount();
  ASSERT_TRUE(count.ok()) << count.status();
  auto tier = CudaDeviceTier::Create();
  if (*count == 0) {
    ASSERT_FALSE(tier.ok());
    EXPECT_EQ(tier.status().code(), absl::StatusCode::kFailedPrecondition) << tier.status();
    EXPECT_NE(tier.status().message().find("no CUDA device"), absl::string_view::npos) << tier.status();
  } else {
    EXPECT_TRUE(tier.ok()) << tier.status();
  }
  EXPECT_EQ(CudaDeviceTier::Create(-1).status().code(),
            *count == 0 ? absl::StatusCode::kFailedPrecondition : absl::StatusCode::kInvalidArgument);
}

TEST(CudaDeviceTierTest, CacheServesExpertsFromVram) {
  std::string why_none;
  auto count = kernels::cuda::CudaDeviceCount(&why_none);
  ASSERT_TRUE(count.ok()) << count.status();
  if (*count == 0) GTEST_SKIP() << "no CUDA device: " << why_none;

  ScopedTempDir dir("cuda_device_tier");
  io::ExpertFileLayout layout;
  layout.model_fingerprint = 42;
  layout.dtypes = io::BundleDtypes::Uniform(DType::kF32);
  layout.num_layers = kLayers;
  layout.num_experts = kExperts;
  layout.hidden_size = 64;
  layout.intermediate_size = 32;
  const std::string path = dir.Sub("model.experts");
  {
    auto writer = io::ExpertFileWriter::Create(path, layout);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int l = 0; l < kLayers; ++l) {
      for (int e = 0; e < kExperts; ++e) ASSERT_TRUE((*writer)->Add(l, e, Bundle(layout, l, e)).ok());
    }
    ASSERT_TRUE((*writer)->Finish().ok());
  }
  auto file = io::ExpertFile::Open(path, 42);
  ASSERT_TRUE(file.ok()) << file.status();
  io::ReaderOptions reader_options;
  reader_options.path = path;
  reader_options.direct_io = true;
  auto reader = io::OpenExpertReader(reader_options);
  ASSERT_TRUE(reader.ok()) << reader.status();

  auto tier = CudaDeviceTier::Create();
  ASSERT_TRUE(tier.ok()) << tier.status();
  CudaDeviceTier* vram = tier->get();
  ExpertCacheOptions options;
  options.dram_budget_bytes = 6 * layout.slot_bytes();
  options.device_budget_bytes = 3 * layout.slot_bytes();
  options.min_slots = 2;
  options.device_copier = std::move(*tier);
  auto cache = ExpertCache::Create(**file, **reader, std::move(options));
  ASSERT_TRUE(cache.ok()) << cache.status();

  std::vector<std::byte> host(layout.expert_bytes());
  for (int round = 0; round < 3; ++round) {
    for (int l = 0; l < kLayers; ++l) {
      for (int e = 0; e < kExperts; ++e) {
        auto pin = (*cache)->Acquire({l, e});
        ASSERT_TRUE(pin.ok()) << pin.status();
        cudaEvent_t ready = vram->ReadyEvent(pin->data());
        ASSERT_NE(ready, nullptr) << "a pin's data is a device slot";
        // Acquire does not wait for the copy: the pin carries its event.
        void* carried = pin->readiness().stream_event();
        EXPECT_TRUE(carried == nullptr || carried == ready) << "the slot's own event, or none once seen done";
        ASSERT_TRUE(pin->readiness().Wait().ok());
        EXPECT_EQ(cudaEventQuery(ready), cudaSuccess) << "the copy is complete once the readiness says so";
        ASSERT_EQ(cudaMemcpy(host.data(), pin->data(), host.size(), cudaMemcpyDeviceToHost), cudaSuccess);
        const std::vector<std::byte> want = Bundle(layout, l, e);
        ASSERT_EQ(std::memcmp(host.data(), want.data(), want.size()), 0) << l << "/" << e;
      }
    }
  }
  const DeviceCopyStats stats = vram->copy_stats();
  EXPECT_EQ(stats.copies, (*cache)->stats().device.loads);
  EXPECT_GT(stats.bytes, 0u);
  // Grow and shrink live: a growth is one more allocation; a shrink frees.
  ASSERT_TRUE((*cache)->Resize(6 * layout.slot_bytes(), 5 * layout.slot_bytes()).ok());
  ASSERT_TRUE((*cache)->Resize(6 * layout.slot_bytes(), 2 * layout.slot_bytes()).ok());
  auto pin = (*cache)->Acquire({1, 7});
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_TRUE((*cache)->CheckInvariants().ok());
}

}  // namespace
}  // namespace expertd::cache
