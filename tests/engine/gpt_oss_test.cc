// gpt-oss: config.json parsing, the fused experts' load (de-interleaved and
// transposed to the engine's [out][in] matrices, biases beside them), and
// the plain-loop reference against Hugging Face transformers' logits
// (tests/reference/hf_gpt_oss/make_reference.py) on the same mkmodel
// models. The engine against the reference is in engine_reference_test.cc
// with the other families.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/checkpoint.h"
#include "engine/expert_packer.h"
#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "model/model.h"
#include "model/model_config.h"
#include "model/model_weights.h"
#include "gtest/gtest.h"
#include "io/expert_file.h"
#include "kernels/cpu/dtype.h"
#include "tests/reference/reference_model.h"
#include "tests/testing/hf_logits.h"
#include "tests/testing/test_models.h"

namespace expertd::engine {
namespace {

using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;

// openai/gpt-oss-20b's config.json, without quantization_config and with
// layer_types cut to the four layers kept.
constexpr char k20bConfig[] = R"({
  "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
  "attention_bias": true, "attention_dropout": 0.0, "eos_token_id": 200002, "experts_per_token": 4,
  "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
  "initializer_range": 0.02, "intermediate_size": 2880,
  "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
  "max_position_embeddings": 131072, "num_attention_heads": 64, "num_experts_per_tok": 4,
  "num_hidden_layers": 4, "num_key_value_heads": 8, "num_local_experts": 32, "output_router_logits": false,
  "pad_token_id": 199999, "rms_norm_eps": 1e-05,
  "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                   "rope_type": "yarn", "truncate": false},
  "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
  "tie_word_embeddings": false, "transformers_version": "4.55.0.dev0", "use_cache": true, "vocab_size": 201088
})";

TEST(GptOssConfig, ParsesGptOss20b) {
  auto config = model::ParseModelConfig(k20bConfig, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, model::Architecture::kGptOss);
  EXPECT_EQ(config->head_dim, 64);
  EXPECT_EQ(config->q_size(), 64 * 64);
  EXPECT_EQ(config->kv_size(), 8 * 64);
  EXPECT_EQ(config->num_experts, 32);
  EXPECT_EQ(config->experts_per_token, 4);
  EXPECT_EQ(config->expert_intermediate_size, 2880);
  EXPECT_TRUE(config->norm_topk_prob);  // softmax over the chosen logits
  EXPECT_TRUE(config->attention_bias);
  EXPECT_TRUE(config->attention_output_bias);
  EXPECT_TRUE(config->router_bias);
  EXPECT_TRUE(config->expert_bias);
  EXPECT_TRUE(config->attention_sinks);
  ASSERT_TRUE(config->clamped_swiglu.has_value());
  EXPECT_FLOAT_EQ(config->clamped_swiglu->alpha, 1.702f);
  EXPECT_FLOAT_EQ(config->clamped_swiglu->limit, 7.0f);
  EXPECT_EQ(config->AttentionWindow(0), 128);
  EXPECT_EQ(config->AttentionWindow(1), 0);
  EXPECT_EQ(config->AttentionWindow(2), 128);
  EXPECT_EQ(config->AttentionWindow(3), 0);
  ASSERT_TRUE(config->yarn.has_value());
  EXPECT_EQ(config->yarn->factor, 32.0f);
  EXPECT_EQ(config->yarn->original_max_position_embeddings, 4096);
  EXPECT_FALSE(config->yarn->truncate);
  EXPECT_EQ(config->rope_theta, 150000.0f);
  EXPECT_EQ(config->layer_is_moe, (std::vector<bool>(4, true)));
}

// As transformers 5 saves it: rope_parameters with rope_theta inside.
TEST(GptOssConfig, ReadsRopeParametersOfTransformers5) {
  std::string text = k20bConfig;
  const std::string from = R"("rope_scaling": {"beta_fast": 32.0)";
  text.replace(text.find(from), from.size(), R"("rope_parameters": {"rope_theta": 500000.0, "beta_fast": 32.0)");
  const std::string theta = R"("rope_theta": 150000, )";
  text.replace(text.find(theta), theta.size(), "");
  auto config = model::ParseModelConfig(text, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->rope_theta, 500000.0f);
  ASSERT_TRUE(config->yarn.has_value());
  EXPECT_EQ(config->yarn->factor, 32.0f);
  EXPECT_FALSE(config->yarn->truncate);
}

TEST(GptOssConfig, RefusesWhatItCannotRunByName) {
  struct Case {
    std::string from, to, error;
  };
  const std::vector<Case> cases = {
      {R"("sliding_attention", "full_attention", "sliding_attention", "full_attention")",
       R"("sliding_attention", "chunked_attention", "sliding_attention", "full_attention")", "layer_types[1]"},
      {R"("sliding_attention", "full_attention", "sliding_attention", "full_attention")",
       R"("sliding_attention", "full_attention")", "one entry per layer"},
      {R"("rope_type": "yarn")", R"("rope_type": "llama3")", "type 'llama3' is not supported"},
      {R"("swiglu_limit": 7.0)", R"("swiglu_limit": -1.0)", "swiglu_limit must be positive"},
      {R"("num_local_experts": 32, )", "", "missing required key 'num_local_experts'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.to);
    std::string text = k20bConfig;
    const size_t at = text.find(c.from);
    ASSERT_NE(at, std::string::npos);
    text.replace(at, c.from.size(), c.to);
    auto config = model::ParseModelConfig(text, "config.json");
    ASSERT_FALSE(config.ok());
    EXPECT_NE(config.status().message().find(c.error), std::string::npos) << config.status();
  }
}

tools::MakeModelOptions SmallModel(const std::string& dtype) {
  tools::MakeModelOptions o;
  o.arch = "gpt_oss";
  o.dtype = dtype;
  o.layers = 2;
  o.hidden = 64;
  o.experts = 4;
  o.top_k = 2;
  o.ffn = 24;
  o.heads = 4;
  o.kv_heads = 2;
  o.head_dim = 16;
  o.vocab = 300;
  o.seed = 5;
  return o;
}

std::vector<float> TensorAsFloats(const model::Checkpoint& checkpoint, const std::string& name) {
  auto tensor = checkpoint.Get(name);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  std::vector<std::byte> bytes((*tensor)->size_bytes);
  EXPECT_TRUE(checkpoint.Read(**tensor, bytes.data()).ok());
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

float At(const kernels::WeightMatrix& m, int64_t row, int64_t col) {
  return static_cast<const float*>(m.data)[row * m.cols + col];
}

// Every expert's gate, up and down against HF's fused layout, element by
// element, and the biases split the same way.
TEST(GptOssWeights, FusedExpertsAreDeinterleavedAndTransposed) {
  ScopedTempDir dir("gpt_oss_weights");
  const tools::MakeModelOptions o = SmallModel("f32");
  const std::string model_dir = MakeTestModel(dir, "f32", o);
  auto model = model::Model::Load(model_dir);
  ASSERT_TRUE(model.ok()) << model.status();
  auto checkpoint = model::Checkpoint::Open(model_dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const int64_t hidden = o.hidden, ffn = o.ffn;
  for (int layer = 0; layer < o.layers; ++layer) {
    const std::string m = absl::StrCat("model.layers.", layer, ".mlp.experts.");
    const std::vector<float> gate_up = TensorAsFloats(**checkpoint, m + "gate_up_proj");
    const std::vector<float> down = TensorAsFloats(**checkpoint, m + "down_proj");
    const std::vector<float> gate_up_bias = TensorAsFloats(**checkpoint, m + "gate_up_proj_bias");
    const std::vector<float> down_bias = TensorAsFloats(**checkpoint, m + "down_proj_bias");
    const model::LayerWeights& weights = (*model)->weights().layers[layer];
    for (int e = 0; e < o.experts; ++e) {
      const model::FeedForwardWeights& expert = weights.experts[e];
      ASSERT_EQ(expert.gate.rows, ffn);
      ASSERT_EQ(expert.gate.cols, hidden);
      ASSERT_EQ(expert.down.rows, hidden);
      ASSERT_EQ(expert.down.cols, ffn);
      for (int64_t j = 0; j < ffn; ++j) {
        for (int64_t i = 0; i < hidden; ++i) {
          ASSERT_EQ(At(expert.gate, j, i), gate_up[(e * hidden + i) * 2 * ffn + 2 * j]) << e << " " << j << " " << i;
          ASSERT_EQ(At(expert.up, j, i), gate_up[(e * hidden + i) * 2 * ffn + 2 * j + 1]);
          ASSERT_EQ(At(expert.down, i, j), down[(e * ffn + j) * hidden + i]);
        }
        ASSERT_EQ(weights.expert_gate_bias[e * ffn + j], gate_up_bias[e * 2 * ffn + 2 * j]);
        ASSERT_EQ(weights.expert_up_bias[e * ffn + j], gate_up_bias[e * 2 * ffn + 2 * j + 1]);
      }
      for (int64_t i = 0; i < hidden; ++i) ASSERT_EQ(weights.expert_down_bias[e * hidden + i], down_bias[e * hidden + i]);
    }
  }
}

// Packing reads one expert at a time (only its slab of the fused tensors):
// the same bytes as the resident load, in bf16.
TEST(GptOssWeights, ReadRoutedExpertEqualsTheResidentExpert) {
  ScopedTempDir dir("gpt_oss_read_expert");
  const tools::MakeModelOptions o = SmallModel("bf16");
  const std::string model_dir = MakeTestModel(dir, "bf16", o);
  auto model = model::Model::Load(model_dir);
  ASSERT_TRUE(model.ok()) << model.status();
  auto checkpoint = model::Checkpoint::Open(model_dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  std::vector<std::byte> storage;
  for (int layer = 0; layer < o.layers; ++layer) {
    for (int e = 0; e < o.experts; ++e) {
      auto expert = model::ReadRoutedExpert(**checkpoint, (*model)->config(), layer, e, storage);
      ASSERT_TRUE(expert.ok()) << expert.status();
      const model::FeedForwardWeights& resident = (*model)->weights().layers[layer].experts[e];
      for (auto [read, held] : {std::pair{&expert->gate, &resident.gate}, std::pair{&expert->up, &resident.up},
                                std::pair{&expert->down, &resident.down}}) {
        ASSERT_EQ(read->dtype, DType::kBF16);
        ASSERT_EQ(read->size_bytes(), held->size_bytes());
        EXPECT_EQ(std::memcmp(read->data, held->data, held->size_bytes()), 0) << "layer " << layer << " expert " << e;
      }
    }
  }
}

// The models of make_reference.py: keep in step with its COMMON and VARIANTS.
tools::MakeModelOptions HfVariant(const std::string& name) {
  tools::MakeModelOptions o;
  o.arch = "gpt_oss";
  o.dtype = "f32";
  o.hidden = 64;
  o.experts = 8;
  o.top_k = 4;
  o.ffn = 32;
  o.heads = 4;
  o.kv_heads = 2;
  o.head_dim = 16;
  o.vocab = 320;
  if (name == "window4" || name == "mxfp4") {
    o.layers = 2;
    o.sliding_window = 4;
    o.swiglu_limit = 1.0f;
    o.yarn_factor = 32.0f;
    o.yarn_original_max_position = 64;
    o.max_position = 2048;
    o.seed = name == "mxfp4" ? 23 : 21;
    o.mxfp4_experts = name == "mxfp4";
  } else {
    o.layers = 4;
    o.sliding_window = 3;
    o.swiglu_limit = 1.5f;
    o.yarn_factor = 4.0f;
    o.yarn_original_max_position = 16;
    o.max_position = 64;
    o.seed = 22;
  }
  return o;
}

// Engine (8-bit activations in the MXFP4 matmul) against dequantised
// weights in f32 or double: measured 3.4e-3 of the largest logit against
// both (the test prints it).
constexpr double kMxfp4Tolerance = 1e-2;

const std::vector<int32_t> kHfTokens = {5, 17, 260, 99, 3, 42, 42, 1, 300, 77, 128, 64, 250, 11};

class GptOssVsTransformers : public ::testing::TestWithParam<std::string> {};

TEST_P(GptOssVsTransformers, ReferenceMatchesTransformersLogits) {
  ScopedTempDir dir("gpt_oss_hf");
  const std::string model = MakeTestModel(dir, GetParam(), HfVariant(GetParam()));
  const auto expected = testing::ReadLogitsFile(absl::StrCat(EXPERTD_HF_GPT_OSS_DIR, "/", GetParam(), ".logits"));
  ASSERT_EQ(expected.size(), kHfTokens.size());
  auto reference = reference::ReferenceLogits(model, kHfTokens);
  ASSERT_TRUE(reference.ok()) << reference.status();
  ASSERT_EQ(reference->size(), expected.size());
  // The largest difference relative to the largest logit, as for
  // DeepSeek-V2 (deepseek_test.cc): transformers in f32, the reference in
  // double.
  const testing::LogitsDifference d = testing::CompareLogits(*reference, expected);
  std::printf("%s: reference vs transformers, largest difference %.3g of logits up to %.3g (%.3g relative)\n",
              GetParam().c_str(), d.largest, d.largest_logit, d.relative());
  EXPECT_LT(d.relative(), 2e-6) << "largest difference " << d.largest << " of logits up to " << d.largest_logit;
}

INSTANTIATE_TEST_SUITE_P(Variants, GptOssVsTransformers, ::testing::Values("window4", "four_layers", "mxfp4"));

// HF's MXFP4 value of element c of a row of `in` columns (blocks [.][in / 32]
// [16], scales [.][in / 32]), written from transformers' definition
// (_convert_moe_packed_tensors): byte b of a group holds elements 2b (low
// nibble) and 2b + 1 (high), each FP4[code] x 2^(scale - 127).
float HfMxfp4(const std::vector<uint8_t>& blocks, const std::vector<uint8_t>& scales, int64_t row, int64_t in,
              int64_t c) {
  static constexpr float kFp4[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                     -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  const int64_t group = row * (in / 32) + c / 32;
  const uint8_t byte = blocks[group * 16 + (c % 32) / 2];
  return std::ldexp(kFp4[c % 2 == 0 ? byte & 0x0F : byte >> 4], scales[group] - 127);
}

std::vector<uint8_t> RawTensor(const model::Checkpoint& checkpoint, const std::string& name) {
  auto tensor = checkpoint.Get(name);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  std::vector<uint8_t> bytes((*tensor)->size_bytes);
  EXPECT_TRUE(checkpoint.Read(**tensor, reinterpret_cast<std::byte*>(bytes.data())).ok());
  return bytes;
}

// The checkpoint's MXFP4 pairs load as the engine's MXFP4 blocks (nibbles
// reordered, gate and up rows split, nothing requantised): every weight the
// engine's kernels see equals transformers' dequantisation bit for bit.
TEST(GptOssMxfp4, CheckpointBlocksLoadBitExactly) {
  ScopedTempDir dir("gpt_oss_mxfp4");
  tools::MakeModelOptions o = SmallModel("bf16");
  o.ffn = 32;
  o.mxfp4_experts = true;
  const std::string model_dir = MakeTestModel(dir, "mxfp4", o);
  auto model = model::Model::Load(model_dir);
  ASSERT_TRUE(model.ok()) << model.status();
  auto checkpoint = model::Checkpoint::Open(model_dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const int64_t hidden = o.hidden, ffn = o.ffn;
  std::vector<float> row(std::max(hidden, ffn));
  for (int layer = 0; layer < o.layers; ++layer) {
    const std::string m = absl::StrCat("model.layers.", layer, ".mlp.experts.");
    const auto gate_up_blocks = RawTensor(**checkpoint, m + "gate_up_proj_blocks");
    const auto gate_up_scales = RawTensor(**checkpoint, m + "gate_up_proj_scales");
    const auto down_blocks = RawTensor(**checkpoint, m + "down_proj_blocks");
    const auto down_scales = RawTensor(**checkpoint, m + "down_proj_scales");
    for (int e = 0; e < o.experts; ++e) {
      const model::FeedForwardWeights& expert = (*model)->weights().layers[layer].experts[e];
      ASSERT_EQ(expert.gate.dtype, DType::kMXFP4);
      ASSERT_EQ(expert.down.dtype, DType::kMXFP4);
      const int64_t gate_row_bytes = DTypeBytes(DType::kMXFP4, hidden);
      for (int64_t j = 0; j < ffn; ++j) {
        // gate row j is stored row 2j of the expert, up row j row 2j + 1.
        for (auto [matrix, stored] : {std::pair{&expert.gate, 2 * j}, std::pair{&expert.up, 2 * j + 1}}) {
          kernels::ConvertToF32(DType::kMXFP4, static_cast<const std::byte*>(matrix->data) + j * gate_row_bytes,
                                hidden, row.data());
          for (int64_t c = 0; c < hidden; ++c) {
            ASSERT_EQ(row[c], HfMxfp4(gate_up_blocks, gate_up_scales, e * 2 * ffn + stored, hidden, c))
                << "layer " << layer << " expert " << e << " row " << j << " column " << c;
          }
        }
      }
      for (int64_t i = 0; i < hidden; ++i) {
        kernels::ConvertToF32(DType::kMXFP4,
                              static_cast<const std::byte*>(expert.down.data) + i * DTypeBytes(DType::kMXFP4, ffn), ffn,
                              row.data());
        for (int64_t c = 0; c < ffn; ++c) ASSERT_EQ(row[c], HfMxfp4(down_blocks, down_scales, e * hidden + i, ffn, c));
      }
    }
  }
}

// The engine on the MXFP4 checkpoint against transformers (which
// dequantised it) and against the reference: the weights are the same
// numbers; what differs is the engine's MXFP4 matmul, which quantises each
// activation row to 8 bits (Q8 with one scale per 32) for its integer dot
// products.
TEST(GptOssMxfp4, EngineMatchesTransformersOnTheMxfp4Checkpoint) {
  ScopedTempDir dir("gpt_oss_mxfp4_hf");
  const std::string model_dir = MakeTestModel(dir, "mxfp4", HfVariant("mxfp4"));
  auto model = model::Model::Load(model_dir);
  ASSERT_TRUE(model.ok()) << model.status();
  ForwardPass forward(**model, nullptr);
  KvCache kv((*model)->config(), 64);
  ForwardOptions options;
  options.all_logits = true;
  std::vector<float> logits;
  ASSERT_TRUE(forward.Run(kHfTokens, kv, options, &logits).ok());
  const auto transformers = testing::ReadLogitsFile(absl::StrCat(EXPERTD_HF_GPT_OSS_DIR, "/mxfp4.logits"));
  ASSERT_EQ(transformers.size(), kHfTokens.size());
  ASSERT_EQ(logits.size(), kHfTokens.size() * transformers[0].size());
  auto reference = reference::ReferenceLogits(model_dir, kHfTokens);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const double vs_transformers = testing::CompareLogits(logits, transformers).relative();
  const double vs_reference = testing::CompareLogits(logits, *reference).relative();
  std::printf("mxfp4 checkpoint: engine vs transformers %.3g, vs reference %.3g relative\n", vs_transformers,
              vs_reference);
  EXPECT_LT(vs_transformers, kMxfp4Tolerance);
  EXPECT_LT(vs_reference, kMxfp4Tolerance);
}

// expertd pack with dtype "keep" writes the MXFP4 experts as they are.
TEST(GptOssMxfp4, PackKeepsMxfp4) {
  ScopedTempDir dir("gpt_oss_mxfp4_pack");
  const std::string model_dir = MakeTestModel(dir, "mxfp4", HfVariant("mxfp4"));
  auto model = model::Model::Load(model_dir);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string path = dir.Sub("model.experts");
  ASSERT_TRUE(PackExperts(**model, path, std::nullopt).ok());
  auto file = io::ExpertFile::Open(path, (*model)->fingerprint());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->layout().dtypes, io::BundleDtypes::Uniform(DType::kMXFP4));
}

}  // namespace
}  // namespace expertd::engine
