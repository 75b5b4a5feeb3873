// Every kind of bad input is a clear error naming the problem, never a crash.

#include <filesystem>
#include <fstream>
#include <string>

#include "engine/forward.h"
#include "engine/generator.h"
#include "model/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_models.h"

namespace expertd::engine {
namespace {

namespace fs = std::filesystem;
using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
// Replaces the first `from` in text (there must be one).
std::string ReplaceOnce(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}
void WriteAll(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    tools::MakeModelOptions o;
    o.layers = 1;
    model_dir_ = MakeTestModel(dir_, "good", o);
  }
  // A copy of the good model to damage.
  std::string CopyModel(const std::string& name) {
    const std::string copy = dir_.Sub(name);
    fs::copy(model_dir_, copy, fs::copy_options::recursive);
    return copy;
  }
  std::string LoadError(const std::string& dir) {
    auto model = model::Model::Load(dir);
    EXPECT_FALSE(model.ok());
    return model.ok() ? "" : std::string(model.status().message());
  }

  ScopedTempDir dir_{"bad_input"};
  std::string model_dir_;
};

TEST_F(BadInput, MissingDirectory) {
  EXPECT_THAT(LoadError(dir_.Sub("nope")), HasSubstr("nope"));
}

TEST_F(BadInput, MissingConfig) {
  const std::string dir = CopyModel("no_config");
  fs::remove(dir + "/config.json");
  EXPECT_THAT(LoadError(dir), HasSubstr("config.json"));
}

TEST_F(BadInput, MissingWeights) {
  const std::string dir = CopyModel("no_weights");
  fs::remove(dir + "/model.safetensors");
  EXPECT_THAT(LoadError(dir), HasSubstr("model.safetensors"));
}

TEST_F(BadInput, MissingTokenizer) {
  const std::string dir = CopyModel("no_tokenizer");
  fs::remove(dir + "/tokenizer.json");
  EXPECT_THAT(LoadError(dir), HasSubstr("tokenizer.json"));
}

TEST_F(BadInput, TruncatedSafetensorsAtEveryCut) {
  const std::string original = ReadAll(model_dir_ + "/model.safetensors");
  for (size_t cut : {size_t{0}, size_t{4}, size_t{12}, original.size() / 3, original.size() - 1}) {
    SCOPED_TRACE(cut);
    const std::string dir = CopyModel("truncated_" + std::to_string(cut));
    WriteAll(dir + "/model.safetensors", original.substr(0, cut));
    EXPECT_THAT(LoadError(dir), HasSubstr("model.safetensors"));
  }
}

TEST_F(BadInput, CorruptHeaderLength) {
  const std::string dir = CopyModel("bad_header");
  std::string bytes = ReadAll(model_dir_ + "/model.safetensors");
  bytes[7] = '\x7f';  // a header length far beyond the file
  WriteAll(dir + "/model.safetensors", bytes);
  EXPECT_THAT(LoadError(dir), HasSubstr("header length"));
}

TEST_F(BadInput, MissingTensorIsNamed) {
  const std::string dir = CopyModel("missing_tensor");
  std::string bytes = ReadAll(model_dir_ + "/model.safetensors");
  // Rename a tensor inside the JSON header (same length, so offsets hold).
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, name.size(), "model.layers.0.self_attn.x_proj.weight");
  WriteAll(dir + "/model.safetensors", bytes);
  EXPECT_THAT(LoadError(dir), HasSubstr("model.layers.0.self_attn.q_proj.weight"));
}

TEST_F(BadInput, WrongShapeIsNamed) {
  const std::string dir = CopyModel("wrong_shape");
  std::string config = ReadAll(model_dir_ + "/config.json");
  // The config now claims a larger FFN than the tensors have.
  config = ReplaceOnce(config, "\"intermediate_size\": 32", "\"intermediate_size\": 40");
  WriteAll(dir + "/config.json", config);
  const std::string error = LoadError(dir);
  EXPECT_THAT(error, HasSubstr("experts.0.gate_proj.weight"));
  EXPECT_THAT(error, HasSubstr("expected [40, 64]"));
}

TEST_F(BadInput, UnknownArchitecture) {
  const std::string dir = CopyModel("unknown_arch");
  std::string config = ReadAll(model_dir_ + "/config.json");
  config = ReplaceOnce(config, "OlmoeForCausalLM", "LlamaForCausalLM");
  WriteAll(dir + "/config.json", config);
  EXPECT_THAT(LoadError(dir), HasSubstr("unsupported architecture 'LlamaForCausalLM'"));
}

TEST_F(BadInput, MalformedConfigJson) {
  const std::string dir = CopyModel("bad_json");
  WriteAll(dir + "/config.json", "{ \"architectures\": [");
  EXPECT_THAT(LoadError(dir), HasSubstr("config.json"));
}

TEST_F(BadInput, KOutOfRangeAndBadTokens) {
  auto model = model::Model::Load(model_dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  ForwardPass forward(**model, nullptr);
  KvCache kv((*model)->config(), 64);
  std::vector<float> logits;
  const std::vector<int32_t> tokens = {1, 2, 3};
  for (int k : {-1, 9, 100}) {
    ForwardOptions options;
    options.experts_per_token = k;
    absl::Status status = forward.Run(tokens, kv, options, &logits);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << k;
    EXPECT_THAT(std::string(status.message()), HasSubstr("experts_per_token must be in 1 .. 8"));
  }
  EXPECT_THAT(std::string(forward.Run({}, kv, {}, &logits).message()), HasSubstr("empty prompt"));
  const std::vector<int32_t> out_of_vocab = {1, 512};
  EXPECT_THAT(std::string(forward.Run(out_of_vocab, kv, {}, &logits).message()), HasSubstr("token id 512"));
  EXPECT_EQ(kv.length(), 0) << "failed runs must leave the cache unchanged";
  EXPECT_TRUE(forward.Run(tokens, kv, {}, &logits).ok());
}

TEST_F(BadInput, GenerateRejectsEmptyPromptAndBadSampling) {
  auto model = model::Model::Load(model_dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  ForwardPass forward(**model, nullptr);
  GenerateOptions options;
  EXPECT_THAT(std::string(Generate(**model, forward, {}, options).status().message()), HasSubstr("prompt is empty"));
  const std::vector<int32_t> prompt = {1, 2};
  options.sampling.top_p = 0.0f;
  EXPECT_THAT(std::string(Generate(**model, forward, prompt, options).status().message()), HasSubstr("top_p"));
  options.sampling.top_p = 1.0f;
  options.max_new_tokens = 5000;  // beyond max_position 4096
  EXPECT_EQ(Generate(**model, forward, prompt, options).status().code(), absl::StatusCode::kOutOfRange);
}

TEST_F(BadInput, ContextOverflowIsAnError) {
  auto model = model::Model::Load(model_dir_);
  ASSERT_TRUE(model.ok());
  ForwardPass forward(**model, nullptr);
  KvCache kv((*model)->config(), 4);
  std::vector<float> logits;
  const std::vector<int32_t> tokens = {1, 2, 3};
  ASSERT_TRUE(forward.Run(tokens, kv, {}, &logits).ok());
  absl::Status status = forward.Run(tokens, kv, {}, &logits);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(kv.length(), 3);
}

// Host memory that says it is not (stands for VRAM), and can be told to
// run out: the KV cache's contract with its memory.
class FakeDeviceMemory : public KvMemory {
 public:
  bool on_host() const override { return false; }
  absl::StatusOr<std::shared_ptr<float>> Allocate(size_t floats) override {
    if (fail) return absl::ResourceExhaustedError("out of fake device memory");
    ++allocations;
    return HostKvMemory().Allocate(floats);
  }
  absl::Status Copy(float* dst, const float* src, size_t floats) override {
    copied_floats += floats;
    return HostKvMemory().Copy(dst, src, floats);
  }
  bool fail = false;
  int allocations = 0;
  size_t copied_floats = 0;
};

TEST_F(BadInput, AKvCacheInAnotherPassesMemoryIsRefused) {
  auto model = model::Model::Load(model_dir_);
  ASSERT_TRUE(model.ok());
  ForwardPass forward(**model, nullptr);
  FakeDeviceMemory device;
  KvCache kv((*model)->config(), 16, &device);
  std::vector<float> logits;
  absl::Status status = forward.Run({1, 2}, kv, {}, &logits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("device memory"));
  status = forward.Step({{.token = 1, .kv = &kv}}, &logits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("step row 0"));
  EXPECT_EQ(kv.length(), 0);
  EXPECT_EQ(device.allocations, 0) << "refused before reserving";
}

TEST_F(BadInput, KvCacheGrowthKeepsRowsAndSurvivesAFailedAllocation) {
  auto model = model::Model::Load(model_dir_);
  ASSERT_TRUE(model.ok());
  const model::ModelConfig& config = (*model)->config();
  FakeDeviceMemory memory;
  KvCache kv(config, 1000, &memory);
  ASSERT_TRUE(kv.Reserve(3).ok());
  const int first_capacity_allocations = memory.allocations;
  EXPECT_EQ(first_capacity_allocations, 2 * config.num_layers);
  for (int i = 0; i < 3 * kv.kv_size(); ++i) kv.Keys(0)[i] = static_cast<float>(i);
  kv.Commit(3);
  // Past the first capacity (64): every array is reallocated, and only the
  // cached rows are copied.
  ASSERT_TRUE(kv.Reserve(100).ok());
  EXPECT_EQ(memory.allocations, 2 * first_capacity_allocations);
  EXPECT_EQ(memory.copied_floats, static_cast<size_t>(2 * config.num_layers * 3 * kv.kv_size()));
  for (int i = 0; i < 3 * kv.kv_size(); ++i) ASSERT_EQ(kv.Keys(0)[i], static_cast<float>(i));
  // Out of memory: an error naming the growth; the cache keeps its rows.
  const size_t bytes = kv.memory_bytes();
  const float* keys = kv.Keys(0);
  memory.fail = true;
  absl::Status status = kv.Reserve(900);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("growing a KV cache"));
  EXPECT_EQ(kv.memory_bytes(), bytes);
  EXPECT_EQ(kv.Keys(0), keys);
  EXPECT_EQ(kv.Keys(0)[5], 5.0f);
  EXPECT_EQ(kv.length(), 3);
}

}  // namespace
}  // namespace expertd::engine
