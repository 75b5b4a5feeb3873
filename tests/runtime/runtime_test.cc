// Runtime::Load and the options it is built from: bounds on settings that size
// memory (a prefetch lookahead past the model's layers and a DRAM budget past
// its experts are lowered to what the model can use), and every key of the
// daemon's config reaching the module it configures.

#include "runtime/runtime.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "daemon/config.h"
#include "engine/kv_cache.h"
#include "kernels/cpu/matmul.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_models.h"

namespace expertd::runtime {
namespace {

using ::testing::HasSubstr;

TEST(EngineLoaderTest, LookaheadAndBudgetAreBoundedByTheModel) {
  testing::ScopedTempDir dir("runtime");
  tools::MakeModelOptions o;  // olmoe: 2 layers of 8 experts
  EngineOptions options;
  options.model_dir = testing::MakeTestModel(dir, "model", o);
  options.reader.path = dir.Sub("model.experts");
  options.cache.dram_budget_bytes = uint64_t{1} << 30;
  options.prefetch.predictor.lookahead = INT_MAX;  // sized a vector of 2^31 entries: std::bad_alloc
  options.threads = 1;
  options.device.gpu = GpuMode::kOff;
  absl::StatusOr<std::unique_ptr<Runtime>> engine = Runtime::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_NE((*engine)->cache(), nullptr);
  ASSERT_NE((*engine)->prefetcher(), nullptr);
  EXPECT_EQ((*engine)->cache()->stats().dram.slots, o.layers * o.experts) << "every expert resident, no more";
}

// DeepSeek-V2 on the CPU with offloaded experts: its KV cache the latent
// only, and a prompt runs through the cache to the same logits as the
// all-resident model.
TEST(EngineLoaderTest, DeepseekV2RunsOffloadedOnTheCpu) {
  testing::ScopedTempDir dir("runtime");
  tools::MakeModelOptions o;
  o.arch = "deepseek_v2";
  o.layers = 3;
  EngineOptions options;
  options.model_dir = testing::MakeTestModel(dir, "model", o);
  options.reader.path = dir.Sub("model.experts");
  options.cache.dram_budget_bytes = uint64_t{1} << 20;
  options.threads = 1;
  options.device.gpu = GpuMode::kOff;
  absl::StatusOr<std::unique_ptr<Runtime>> engine = Runtime::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_FALSE((*engine)->on_gpu());
  ASSERT_TRUE((*engine)->offloading());
  const model::ModelConfig& config = (*engine)->model().config();
  engine::KvCache kv(config, 32, &(*engine)->forward().kv_memory());
  EXPECT_EQ(kv.kv_size(), o.kv_lora_rank + o.qk_rope_head_dim);
  std::vector<float> offloaded;
  const std::vector<int32_t> prompt = {5, 17, 260, 99, 3};
  ASSERT_TRUE((*engine)->forward().Run(prompt, kv, {}, &offloaded).ok());

  options.reader.path.clear();
  options.cache.dram_budget_bytes = 0;
  absl::StatusOr<std::unique_ptr<Runtime>> resident = Runtime::Load(options);
  ASSERT_TRUE(resident.ok()) << resident.status();
  ASSERT_FALSE((*resident)->offloading());
  engine::KvCache resident_kv(config, 32, &(*resident)->forward().kv_memory());
  std::vector<float> logits;
  ASSERT_TRUE((*resident)->forward().Run(prompt, resident_kv, {}, &logits).ok());
  EXPECT_EQ(offloaded, logits);
}

// bf16_activations reaches every matrix the model computes with, its own
// and the cache's views of offloaded experts: offloaded logits equal the
// resident ones bit for bit with the flag on (a view without it would
// compute those experts with f32 activations), and differ from the f32
// activations' by no more than rounding x to bf16 can.
TEST(EngineLoaderTest, Bf16ActivationsReachResidentAndOffloadedExperts) {
  if (!kernels::Bf16ActivationsSupported()) GTEST_SKIP() << "no AVX-512 BF16 here: bf16_activations changes nothing";
  testing::ScopedTempDir dir("runtime");
  tools::MakeModelOptions o;
  o.dtype = "bf16";
  EngineOptions options;
  options.model_dir = testing::MakeTestModel(dir, "model", o);
  options.threads = 1;
  options.device.gpu = GpuMode::kOff;
  const std::vector<int32_t> prompt = {5, 17, 260, 99, 3};
  const auto logits_of = [&](const EngineOptions& run) {
    absl::StatusOr<std::unique_ptr<Runtime>> engine = Runtime::Load(run);
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (!engine.ok()) return std::vector<float>{};
    EXPECT_EQ((*engine)->offloading(), run.offloading());
    engine::KvCache kv((*engine)->model().config(), 32, &(*engine)->forward().kv_memory());
    std::vector<float> logits;
    EXPECT_TRUE((*engine)->forward().Run(prompt, kv, {}, &logits).ok());
    return logits;
  };
  const std::vector<float> f32_activations = logits_of(options);
  options.bf16_activations = true;
  const std::vector<float> resident = logits_of(options);
  options.reader.path = dir.Sub("model.experts");
  options.cache.dram_budget_bytes = uint64_t{1} << 20;
  const std::vector<float> offloaded = logits_of(options);
  ASSERT_FALSE(resident.empty());
  EXPECT_EQ(offloaded, resident);
  ASSERT_EQ(f32_activations.size(), resident.size());
  float largest = 0, furthest = 0;
  for (size_t i = 0; i < resident.size(); ++i) {
    largest = std::max(largest, std::abs(f32_activations[i]));
    furthest = std::max(furthest, std::abs(f32_activations[i] - resident[i]));
  }
  EXPECT_GT(furthest, 0.0f) << "the flag changed nothing";
  EXPECT_LT(furthest, 0.02f * largest) << "more than rounding the activations to bf16 explains";
}

// gpt-oss likewise: its MXFP4 experts, packed at load from a model read
// without them (one expert's slabs at a time), offloaded with their biases
// resident, give the all-resident model's logits over a prompt longer than
// the sliding window.
TEST(EngineLoaderTest, GptOssRunsOffloadedOnTheCpu) {
  testing::ScopedTempDir dir("runtime");
  tools::MakeModelOptions o;
  o.arch = "gpt_oss";
  o.layers = 2;
  o.top_k = 4;
  o.head_dim = 16;
  o.mxfp4_experts = true;
  EngineOptions options;
  options.model_dir = testing::MakeTestModel(dir, "model", o);
  options.reader.path = dir.Sub("model.experts");
  options.cache.dram_budget_bytes = uint64_t{1} << 20;
  options.threads = 1;
  options.device.gpu = GpuMode::kOff;
  absl::StatusOr<std::unique_ptr<Runtime>> engine = Runtime::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_FALSE((*engine)->on_gpu());
  ASSERT_TRUE((*engine)->offloading());
  const model::ModelConfig& config = (*engine)->model().config();
  engine::KvCache kv(config, 32, &(*engine)->forward().kv_memory());
  std::vector<float> offloaded;
  const std::vector<int32_t> prompt = {5, 17, 260, 99, 3, 42, 42, 1};
  ASSERT_TRUE((*engine)->forward().Run(prompt, kv, {}, &offloaded).ok());

  options.reader.path.clear();
  options.cache.dram_budget_bytes = 0;
  absl::StatusOr<std::unique_ptr<Runtime>> resident = Runtime::Load(options);
  ASSERT_TRUE(resident.ok()) << resident.status();
  ASSERT_FALSE((*resident)->offloading());
  engine::KvCache resident_kv(config, 32, &(*resident)->forward().kv_memory());
  std::vector<float> logits;
  ASSERT_TRUE((*resident)->forward().Run(prompt, resident_kv, {}, &logits).ok());
  EXPECT_EQ(offloaded, logits);
}

// [io] queue_depth was parsed and then dropped on the way to the reader,
// which always ran at its default depth (32 io_uring entries, or the pread
// pool's 4 threads). 3 is below both, so whichever reader this machine gets
// reports 3 only if the setting arrived.
TEST(EngineLoaderTest, QueueDepthReachesTheReader) {
  testing::ScopedTempDir dir("runtime");
  const std::string model = testing::MakeTestModel(dir, "model", tools::MakeModelOptions());
  absl::StatusOr<daemon::DaemonConfig> config = daemon::ParseDaemonConfig(absl::StrCat(R"([model]
path = ")", model, R"("
[cache]
dram_budget = "1GiB"
[io]
queue_depth = 3
[inference]
threads = 1
[device]
gpu = "off"
)"),
                                                          "queue_depth.toml");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<Runtime>> engine = Runtime::Load(daemon::EngineOptionsFromConfig(*config));
  ASSERT_TRUE(engine.ok()) << engine.status();
  ASSERT_NE((*engine)->reader(), nullptr);
  EXPECT_EQ((*engine)->reader()->queue_depth(), 3) << "reader " << (*engine)->reader()->name();
  // Offloaded experts are read through the cache: the model holds only its
  // dense weights (experts in memory too would defeat the DRAM budget).
  EXPECT_FALSE((*engine)->model().resident_experts());
}

// "section.key" of every key set in a TOML text: `[section]` lines and
// `key = value` lines, comments and blank lines skipped. Enough for the
// shipped config and the test's own, which hold nothing fancier.
std::set<std::string> KeysOf(const std::string& toml) {
  std::set<std::string> keys;
  std::string section;
  std::istringstream in(toml);
  for (std::string line; std::getline(in, line);) {
    const std::string trimmed(absl::StripAsciiWhitespace(line));
    if (trimmed.empty() || trimmed[0] == '#') continue;
    if (trimmed[0] == '[') {
      section = trimmed.substr(1, trimmed.find(']') - 1);
      continue;
    }
    const size_t eq = trimmed.find('=');
    if (eq != std::string::npos) {
      keys.insert(absl::StrCat(section, ".", absl::StripAsciiWhitespace(trimmed.substr(0, eq))));
    }
  }
  return keys;
}

// Every key set to something other than its default. The test below checks
// that this names every key of configs/expertd.toml (which documents them
// all), so a new key fails it until it is added here and followed to its
// module.
constexpr char kEveryKey[] = R"(
[server]
socket_path = "/tmp/expertd-test.sock"
socket_group = "llm"
socket_mode = "0600"
max_body = "4MiB"
max_connections = 10
max_connections_per_uid = 3
max_queued_requests = 5
read_timeout_ms = 1234

[model]
path = "MODEL"
map_weights = true

[cache]
dram_budget = "1GiB"
device_budget = "1GiB"
policy = "lru"
shallow_layers = 1
wrong_guesses_first = false

[io]
expert_file = "EXPERTS"
queue_depth = 3
speculative_depth = 2
direct_io = false

[prefetch]
kind = "previous-token"
lookahead = 2
max_in_flight = 5
to_device = false
budget_per_layer = 3
min_score = 0.5
next_token_layers = 1
next_token_from = "last-layer-gate"

[inference]
default_experts_per_token = 3
max_batch = 3
max_roster = 4
max_tokens = 99
threads = 2
bf16_activations = true
prefill_chunk_tokens = 17
kv_budget = "3MiB"

[device]
gpu = "off"
cuda_device = 1
execution_placement = false
)";

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// [prefetch] kind "auto": no prefetcher on the NVMe -> DRAM path alone,
// cross-layer once there is a device tier (here the host-memory stand-in);
// a named kind is kept either way.
TEST(EngineLoaderTest, AutoPrefetchIsCrossLayerOnlyWithADeviceTier) {
  EXPECT_EQ(ResolvePrefetchKind("auto", false), "none");
  EXPECT_EQ(ResolvePrefetchKind("auto", true), "cross-layer");
  EXPECT_EQ(ResolvePrefetchKind("cross-layer", false), "cross-layer");
  EXPECT_EQ(ResolvePrefetchKind("previous-token", true), "previous-token");

  testing::ScopedTempDir dir("runtime");
  tools::MakeModelOptions o;
  o.layers = 3;
  const std::string model = testing::MakeTestModel(dir, "model", o);
  for (bool device_tier : {false, true}) {
    SCOPED_TRACE(device_tier ? "device tier" : "DRAM only");
    EngineOptions options;
    options.model_dir = model;
    options.reader.path = dir.Sub("model.experts");
    options.cache.dram_budget_bytes = uint64_t{1} << 20;
    options.cache.device_budget_bytes = device_tier ? uint64_t{1} << 20 : 0;
    options.prefetch.predictor.kind = "auto";
    options.threads = 1;
    options.device.gpu = GpuMode::kOff;
    absl::StatusOr<std::unique_ptr<Runtime>> engine = Runtime::Load(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_EQ((*engine)->cache()->has_device_tier(), device_tier);
    if (device_tier) {
      ASSERT_NE((*engine)->prefetcher(), nullptr);
      EXPECT_EQ((*engine)->prefetcher()->predictor_name(), "cross-layer");
    } else {
      EXPECT_EQ((*engine)->prefetcher(), nullptr);
    }
  }
}

TEST(EngineLoaderTest, TheTestSetsEveryKeyOfTheShippedConfig) {
  const std::string shipped = ReadWholeFile(EXPERTD_DEFAULT_CONFIG);
  ASSERT_FALSE(shipped.empty()) << EXPERTD_DEFAULT_CONFIG;
  EXPECT_EQ(KeysOf(kEveryKey), KeysOf(shipped));
}

// Which module each key configures:
//   engine (EngineOptions, then the module Runtime::Load builds from it):
//     model.path                       -> model_dir, the loaded model
//     inference.threads                -> threads, the compute pool
//     inference.bf16_activations       -> bf16_activations, every weight
//                                         matrix's flag (the kernels)
//     inference.default_experts_per_token -> experts_per_token (the cache's
//                                         minimum slots at load)
//     cache.dram_budget, device_budget -> cache (ExpertCacheOptions), the tiers
//     cache.policy                     -> cache.policy, the tiers' policy
//     cache.shallow_layers             -> shallow_layers, experts pinned resident
//     cache.wrong_guesses_first        -> cache.wrong_guesses_first, the tiers'
//                                         victim order
//     io.expert_file                   -> reader.path, the file opened
//     io.queue_depth, io.speculative_depth, io.direct_io
//                                      -> reader (ReaderOptions), the reader
//     prefetch.kind, prefetch.lookahead -> prefetch.predictor, the predictor
//     prefetch.max_in_flight           -> prefetch.scheduler.max_in_flight
//     prefetch.to_device               -> cache.prefetch_to_device
//     prefetch.budget_per_layer        -> prefetch.scheduler.fixed_budget_per_layer,
//                                         the prefetcher's budget
//     prefetch.min_score               -> prefetch.scheduler.min_score
//     prefetch.next_token_layers       -> prefetch.next_token_layers, the
//                                         prefetcher's next-token layers
//     prefetch.next_token_from         -> prefetch.next_token_from, the
//                                         prefetcher's next-token source
//     device.*                         -> device (DeviceOptions); CUDA only
//   daemon (read from DaemonConfig by the server and the request scheduler):
//     server.*; inference.max_batch, max_roster, max_tokens,
//     prefill_chunk_tokens, kv_budget; inference.default_experts_per_token
//     also (the completion API's default k per request).
// Where a module exposes what it was built with, the loaded module is checked
// too; max_in_flight, min_score, to_device and wrong_guesses_first (no
// accessor) and the CUDA options (no GPU here) are checked on EngineOptions
// only.
TEST(EngineLoaderTest, EveryConfigKeyReachesTheModuleItConfigures) {
  testing::ScopedTempDir dir("runtime");
  tools::MakeModelOptions o;  // olmoe, 8 experts, top-2
  o.layers = 4;               // so that lookahead 2 is not lowered
  const std::string model = testing::MakeTestModel(dir, "model", o);
  const std::string experts = dir.Sub("elsewhere.experts");
  absl::StatusOr<daemon::DaemonConfig> config = daemon::ParseDaemonConfig(
      absl::StrReplaceAll(kEveryKey, {{"MODEL", model}, {"EXPERTS", experts}}), "every_key.toml");
  ASSERT_TRUE(config.ok()) << config.status();

  // The daemon's own keys.
  EXPECT_EQ(config->server.socket_path, "/tmp/expertd-test.sock");
  EXPECT_EQ(config->server.socket_group, "llm");
  EXPECT_EQ(config->server.socket_mode, 0600u);
  EXPECT_EQ(config->server.max_body_bytes, uint64_t{4} << 20);
  EXPECT_EQ(config->server.max_connections, 10);
  EXPECT_EQ(config->server.max_connections_per_uid, 3);
  EXPECT_EQ(config->server.max_queued_requests, 5);
  EXPECT_EQ(config->server.read_timeout_ms, 1234);
  EXPECT_EQ(config->inference.default_experts_per_token, 3);
  EXPECT_EQ(config->inference.max_batch, 3);
  EXPECT_EQ(config->inference.max_roster, 4);
  EXPECT_EQ(config->inference.max_tokens, 99);
  EXPECT_EQ(config->inference.prefill_chunk_tokens, 17);
  EXPECT_EQ(config->inference.kv_budget_bytes, uint64_t{3} << 20);

  // The engine's keys, in the modules' option structs.
  const EngineOptions options = daemon::EngineOptionsFromConfig(*config);
  EXPECT_EQ(options.model_dir, model);
  EXPECT_TRUE(options.map_weights);
  EXPECT_EQ(options.threads, 2);
  EXPECT_TRUE(options.bf16_activations);
  EXPECT_EQ(options.experts_per_token, 3);
  EXPECT_EQ(options.cache.dram_budget_bytes, uint64_t{1} << 30);
  EXPECT_EQ(options.cache.device_budget_bytes, uint64_t{1} << 30);
  EXPECT_EQ(options.cache.policy, "lru");
  EXPECT_FALSE(options.cache.prefetch_to_device);
  EXPECT_EQ(options.shallow_layers, 1);
  EXPECT_EQ(options.reader.path, experts);
  EXPECT_EQ(options.reader.queue_depth, 3);
  EXPECT_EQ(options.reader.speculative_depth, 2);
  EXPECT_FALSE(options.reader.direct_io);
  EXPECT_EQ(options.prefetch.predictor.kind, "previous-token");
  EXPECT_EQ(options.prefetch.predictor.lookahead, 2);
  EXPECT_EQ(options.prefetch.scheduler.max_in_flight, 5);
  EXPECT_EQ(options.prefetch.scheduler.fixed_budget_per_layer, 3);
  EXPECT_EQ(options.prefetch.scheduler.min_score, 0.5f);
  EXPECT_FALSE(options.cache.wrong_guesses_first);
  EXPECT_EQ(options.prefetch.next_token_layers, 1);
  EXPECT_EQ(options.prefetch.next_token_from, "last-layer-gate");
  EXPECT_EQ(options.device.gpu, GpuMode::kOff);
  EXPECT_EQ(options.device.cuda_device, 1);
  EXPECT_FALSE(options.device.execution_placement);

  // The modules Runtime::Load builds from them.
  absl::StatusOr<std::unique_ptr<Runtime>> engine = Runtime::Load(options);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->model().dir(), model);
  EXPECT_FALSE((*engine)->on_gpu());
  EXPECT_EQ((*engine)->threads(), 2);
  EXPECT_TRUE((*engine)->model().weights().lm_head.bf16_activations);
  EXPECT_TRUE((*engine)->model().weights().layers[0].router.bf16_activations);
  EXPECT_EQ((*engine)->Stats().bf16_activations, kernels::Bf16ActivationsSupported());
  ASSERT_NE((*engine)->expert_file(), nullptr);
  EXPECT_EQ((*engine)->expert_file()->path(), experts) << "packed where io.expert_file says";
  ASSERT_NE((*engine)->reader(), nullptr);
  EXPECT_EQ((*engine)->reader()->queue_depth(), 3);
  EXPECT_THAT(std::string((*engine)->reader()->name()), HasSubstr("buffered"));
  ASSERT_NE((*engine)->cache(), nullptr);
  const cache::CacheStats stats = (*engine)->cache()->stats();
  const int all_experts = o.layers * o.experts;  // both budgets hold more: lowered to this
  EXPECT_EQ(stats.dram.slots, all_experts);
  EXPECT_EQ(stats.dram.policy, "lru");
  EXPECT_TRUE((*engine)->cache()->has_device_tier());
  EXPECT_EQ(stats.device.slots, all_experts);
  EXPECT_EQ(stats.device.policy, "lru");
  for (int e = 0; e < o.experts; ++e) {
    EXPECT_TRUE((*engine)->cache()->IsReady({0, e})) << "shallow layer 0, expert " << e << " pinned resident";
  }
  ASSERT_NE((*engine)->prefetcher(), nullptr);
  EXPECT_EQ((*engine)->prefetcher()->predictor_name(), "previous-token");
  EXPECT_EQ((*engine)->prefetcher()->per_layer_budget(), 3);
  EXPECT_TRUE((*engine)->prefetcher()->budget_is_fixed());
  EXPECT_EQ((*engine)->prefetcher()->next_token_layers(), 1);
  EXPECT_EQ((*engine)->prefetcher()->next_token_from(), "last-layer-gate");
  // The lookahead shows once predictions are scored: distances 1 and 2.
  engine::KvCache kv((*engine)->model().config(), 8, &(*engine)->forward().kv_memory());
  std::vector<float> logits;
  const std::vector<int32_t> tokens = {5, 6, 7, 8};
  for (size_t t = 0; t < tokens.size(); ++t) {
    ASSERT_TRUE((*engine)->forward().Run(absl::MakeConstSpan(&tokens[t], 1), kv, engine::ForwardOptions(), &logits).ok());
  }
  EXPECT_EQ((*engine)->prefetcher()->prediction_stats().by_distance().size(), 3u);
}

// Shallow-favouring residency asked for more layers than the budget holds
// beside one layer's experts: the runtime keeps the whole layers that fit,
// first ones first, and loads (it used to refuse to start).
TEST(EngineLoaderTest, ShallowLayersKeepWhatFits) {
  testing::ScopedTempDir dir("runtime");
  tools::MakeModelOptions o;  // olmoe: 2 layers of 8 experts, top-2
  o.layers = 3;
  EngineOptions options;
  options.model_dir = testing::MakeTestModel(dir, "model", o);
  options.reader.path = dir.Sub("model.experts");
  options.threads = 1;
  options.device.gpu = GpuMode::kOff;
  options.shallow_layers = 3;
  for (int slots : {8, 12, 20, 24}) {
    SCOPED_TRACE(slots);
    // Pack once, then size the budget in slots.
    options.cache.dram_budget_bytes = uint64_t{1} << 20;
    absl::StatusOr<std::unique_ptr<Runtime>> probe = Runtime::Load(options);
    ASSERT_TRUE(probe.ok()) << probe.status();
    options.cache.dram_budget_bytes = static_cast<uint64_t>(slots) * (*probe)->cache()->slot_bytes();
    probe->reset();
    absl::StatusOr<std::unique_ptr<Runtime>> engine = Runtime::Load(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    // Room beside the 2 slots a layer needs: 6 -> none, 10 -> one layer of
    // 8, 18 and 22 -> two (24 slots hold every expert: the third layer's
    // stay resident unpinned).
    const int kept = (slots - 2) / o.experts;
    EXPECT_EQ((*engine)->shallow_layers_kept(), kept);
    for (int layer = 0; layer < 3; ++layer) {
      int ready = 0;
      for (int e = 0; e < o.experts; ++e) ready += (*engine)->cache()->IsReady({layer, e}) ? 1 : 0;
      EXPECT_EQ(ready, layer < kept ? o.experts : 0) << "layer " << layer;
    }
  }
}

}  // namespace
}  // namespace expertd::runtime
