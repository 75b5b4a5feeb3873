// The GPU forward pass against the CPU pass (a slow, plain reference for it
// is the CPU pass itself, checked against PyTorch elsewhere): prefill, a
// batched decode step with two sequences and a Roster sample, for every
// architecture, with experts uploaded, cached in VRAM (with and without
// execution placement sending misses to the CPU) and cached on the host.
// Tests that need a device skip without one; the refusal without a device
// runs everywhere.

#include "engine/cuda/cuda_forward.h"

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "cache/cuda_device_tier.h"
#include "cache/expert_cache.h"
#include "engine/expert_packer.h"
#include "engine/expert_source.h"
#include "engine/forward.h"
#include "model/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"
#include "kernels/cuda/runtime.h"
#include "tests/testing/packed_experts.h"
#include "tests/testing/test_models.h"

namespace expertd::engine {
namespace {

using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;
using ::testing::HasSubstr;

bool HaveDevice(std::string* why_none) {
  auto count = kernels::cuda::CudaDeviceCount(why_none);
  return count.ok() && *count > 0;
}

const std::vector<int32_t> kPromptA = {5, 17, 260, 99, 3, 42, 42, 1, 300, 77};
const std::vector<int32_t> kPromptB = {8, 8, 150, 2};

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 2e-3f * (1.0f + std::fabs(want[i]))) << what << " at " << i;
  }
}

// What a pass computes on the fixed workload: prompt logits (every
// position) and one batched step (two sequences, one Roster sample).
struct Outputs {
  std::vector<float> prompt_a, prompt_b, step;
};

Outputs RunWorkload(const model::Model& model, Forward& forward) {
  Outputs out;
  KvCache a(model.config(), 64, &forward.kv_memory());
  KvCache b(model.config(), 64, &forward.kv_memory());
  ForwardOptions all;
  all.all_logits = true;
  EXPECT_TRUE(forward.Run(kPromptA, a, all, &out.prompt_a).ok());
  EXPECT_TRUE(forward.Run(kPromptB, b, {}, &out.prompt_b).ok());
  std::vector<float> temperatures(model.config().num_layers, 1.5f);
  const RowNoise noise{.layer_temperatures = temperatures.data(), .seed = 7, .sample = 1, .resident_bonus = 0.0f};
  const std::vector<StepRow> rows = {
      {.token = 11, .kv = &a, .appends_kv = false, .experts_per_token = 0, .noise = &noise},
      {.token = 11, .kv = &a},
      {.token = 12, .kv = &b, .appends_kv = true, .experts_per_token = 2},
  };
  absl::Status status = forward.Step(rows, &out.step);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(a.length(), static_cast<int>(kPromptA.size()) + 1);
  return out;
}

void ExpectSame(const Outputs& gpu, const Outputs& cpu) {
  ExpectClose(gpu.prompt_a, cpu.prompt_a, "prompt A");
  ExpectClose(gpu.prompt_b, cpu.prompt_b, "prompt B");
  ExpectClose(gpu.step, cpu.step, "step");
}

TEST(CudaForwardTest, WithoutADeviceCreateSaysSo) {
  std::string why_none;
  if (HaveDevice(&why_none)) GTEST_SKIP() << "a CUDA device is present";
  ScopedTempDir dir("cuda_forward");
  tools::MakeModelOptions o;
  o.layers = 2;
  o.experts = 4;
  o.top_k = 2;
  o.vocab = 320;
  auto model = model::Model::Load(MakeTestModel(dir, "model", o));
  ASSERT_TRUE(model.ok()) << model.status();
  auto pass = CudaForwardPass::Create(**model, nullptr, nullptr, {});
  ASSERT_FALSE(pass.ok());
  EXPECT_EQ(pass.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(pass.status().message()), HasSubstr("no CUDA device"));
}

// DeepSeek-V2's latent attention is CPU-only so far: refused at load, by
// name, with or without a device.
TEST(CudaForwardTest, DeepseekV2IsRefusedByName) {
  ScopedTempDir dir("cuda_forward_deepseek");
  tools::MakeModelOptions o;
  o.arch = "deepseek_v2";
  o.layers = 2;
  o.experts = 4;
  o.top_k = 2;
  o.vocab = 320;
  auto model = model::Model::Load(MakeTestModel(dir, "model", o));
  ASSERT_TRUE(model.ok()) << model.status();
  auto pass = CudaForwardPass::Create(**model, nullptr, nullptr, {});
  ASSERT_FALSE(pass.ok());
  EXPECT_EQ(pass.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(pass.status().message()), HasSubstr("DeepseekV2ForCausalLM"));
}

// gpt-oss's attention sinks, sliding windows and biased clamped-SwiGLU
// experts are CPU-only so far: refused at load by name, as DeepSeek-V2.
TEST(CudaForwardTest, GptOssIsRefusedByName) {
  ScopedTempDir dir("cuda_forward_gpt_oss");
  tools::MakeModelOptions o;
  o.arch = "gpt_oss";
  o.layers = 2;
  o.experts = 4;
  o.top_k = 2;
  o.vocab = 320;
  auto model = model::Model::Load(MakeTestModel(dir, "model", o));
  ASSERT_TRUE(model.ok()) << model.status();
  auto pass = CudaForwardPass::Create(**model, nullptr, nullptr, {});
  ASSERT_FALSE(pass.ok());
  EXPECT_EQ(pass.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(pass.status().message()), HasSubstr("GptOssForCausalLM"));
  EXPECT_THAT(std::string(pass.status().message()), HasSubstr("attention sinks"));
}

// No GPU kernel reads GGML blocks yet: a Q4_K_M model is refused at load
// (not by the first MatMul of a request), naming the first weight the pass
// would multiply and its type, with or without a device, so the runtime
// can fall back to the CPU before it serves anything.
TEST(CudaForwardTest, QuantizedWeightsAreRefusedAtLoadByName) {
  auto model = model::Model::Load(std::string(EXPERTD_GGUF_WEIGHTS_TESTDATA) + "/qwen3moe-q4_k_m.gguf");
  ASSERT_TRUE(model.ok()) << model.status();
  auto pass = CudaForwardPass::Create(**model, nullptr, nullptr, {});
  ASSERT_FALSE(pass.ok());
  EXPECT_EQ(pass.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(pass.status().message()), HasSubstr("cannot run layer 0's q (q4_k)"));
}

class CudaForward : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  void SetUp() override {
    std::string why_none;
    if (!HaveDevice(&why_none)) GTEST_SKIP() << "no CUDA device: " << why_none;
    const tools::MakeModelOptions o = testing::SmallOffloadModel(std::get<0>(GetParam()), std::get<1>(GetParam()));
    auto model = model::Model::Load(MakeTestModel(dir_, "model", o));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    testing::PackedExperts packed = testing::PackAndOpenExperts(*model_, dir_.Sub("model.experts"));
    ASSERT_TRUE(packed.file && packed.reader);
    file_ = std::move(packed.file);
    reader_ = std::move(packed.reader);
    ForwardPass cpu(*model_, &pool_);
    cpu_ = RunWorkload(*model_, cpu);
  }

  // A cache over the packed experts: DRAM holds them all; device_slots of
  // VRAM (0: none).
  std::unique_ptr<cache::ExpertCache> MakeCache(int device_slots, const cache::CudaDeviceTier** tier) {
    cache::ExpertCacheOptions options;
    const uint64_t slot = file_->layout().slot_bytes();
    options.dram_budget_bytes = 48 * slot;
    options.device_budget_bytes = device_slots * slot;
    options.min_slots = 4;
    if (device_slots > 0) {
      auto cuda = cache::CudaDeviceTier::Create();
      EXPECT_TRUE(cuda.ok()) << cuda.status();
      if (!cuda.ok()) return nullptr;
      *tier = cuda->get();
      options.device_copier = std::move(*cuda);
    }
    auto cache = cache::ExpertCache::Create(*file_, *reader_, std::move(options));
    EXPECT_TRUE(cache.ok()) << cache.status();
    return cache.ok() ? std::move(*cache) : nullptr;
  }

  ScopedTempDir dir_{"cuda_forward"};
  kernels::ThreadPool pool_{2};
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<io::ExpertFile> file_;
  std::unique_ptr<io::ExpertReader> reader_;
  Outputs cpu_;
};

TEST_P(CudaForward, UploadedExpertsMatchTheCpu) {
  auto gpu = CudaForwardPass::Create(*model_, &pool_, nullptr, {});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ExpectSame(RunWorkload(*model_, **gpu), cpu_);
  EXPECT_GT((*gpu)->stats().experts_on_device, 0u);
  EXPECT_EQ((*gpu)->stats().experts_on_cpu, 0u);
  // A host KV cache is refused, and changes nothing.
  KvCache host(model_->config(), 16);
  std::vector<float> logits;
  const absl::Status status = (*gpu)->Run(kPromptB, host, {}, &logits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(host.length(), 0);
}

TEST_P(CudaForward, ExpertsThroughTheVramTierMatchTheCpu) {
  for (bool cpu_is_cheap : {false, true}) {
    SCOPED_TRACE(cpu_is_cheap ? "placement sends misses to the CPU" : "misses are copied");
    const cache::CudaDeviceTier* tier = nullptr;
    auto cache = MakeCache(6, &tier);
    ASSERT_NE(cache, nullptr);
    CachedExperts experts(*cache, *file_);
    CudaForwardOptions options;
    options.experts = CudaForwardOptions::Experts::kCacheOnDevice;
    if (cpu_is_cheap) {
      options.placement.cpu_weight_bytes_per_second = 1e15;
      options.placement.h2d_bytes_per_second = 1e3;
    } else {
      options.execution_placement = false;
    }
    auto gpu = CudaForwardPass::Create(*model_, &pool_, &experts, options);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    ExpectSame(RunWorkload(*model_, **gpu), cpu_);
    const CudaForwardStats stats = (*gpu)->stats();
    EXPECT_GT(stats.experts_loaded, 0u);
    if (cpu_is_cheap) {
      EXPECT_GT(stats.experts_on_cpu, 0u);
    } else {
      EXPECT_EQ(stats.experts_on_cpu, 0u);
    }
    EXPECT_GT(tier->copy_stats().copies, 0u);
    EXPECT_EQ(experts.device_copies().copies, tier->copy_stats().copies) << "the copy timings reach the pass";
    EXPECT_TRUE(cache->CheckInvariants().ok());
  }
}

TEST_P(CudaForward, WithoutAVramTierExpertsRunOnTheCpu) {
  auto cache = MakeCache(0, nullptr);
  ASSERT_NE(cache, nullptr);
  CachedExperts experts(*cache, *file_);
  CudaForwardOptions options;
  options.experts = CudaForwardOptions::Experts::kCacheOnHost;
  auto gpu = CudaForwardPass::Create(*model_, &pool_, &experts, options);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ExpectSame(RunWorkload(*model_, **gpu), cpu_);
  EXPECT_EQ((*gpu)->stats().experts_on_device, 0u);
  EXPECT_GT((*gpu)->stats().experts_on_cpu, 0u);
}

INSTANTIATE_TEST_SUITE_P(Architectures, CudaForward,
                         ::testing::Combine(::testing::Values("olmoe", "mixtral", "qwen2_moe", "qwen3_moe"),
                                            ::testing::Values("f32", "bf16")),
                         [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

}  // namespace
}  // namespace expertd::engine
