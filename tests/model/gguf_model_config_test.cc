// ModelConfigFromGguf against ParseModelConfig: for each family, a tiny
// mkmodel model's config.json and the GGUF tools/gguf/hf_to_gguf.py made of
// it (testdata/gguf_config/, by make_gguf_config_fixtures.py) must give the
// same ModelConfig field by field. Then metadata written here with keys
// missing or wrong, each refused naming the key.

#include "model/gguf_model_config.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/model_config.h"
#include "formats/gguf_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/gguf_metadata_file.h"

namespace expertd::model {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kTestdata = EXPERTD_GGUF_CONFIG_TESTDATA;

class GgufConfigAgreesTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufConfigAgreesTest, FieldByField) {
  const std::string dir = absl::StrCat(kTestdata, "/", GetParam());
  auto from_json = LoadModelConfig(dir + "/config.json");
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  auto gguf = formats::GgufFile::Open(dir + "/model.gguf");
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto from_gguf = ModelConfigFromGguf(**gguf);
  ASSERT_TRUE(from_gguf.ok()) << from_gguf.status();
  const ModelConfig& a = *from_json;
  const ModelConfig& b = *from_gguf;
#define EXPECT_FIELD(field) EXPECT_EQ(a.field, b.field) << #field
  EXPECT_FIELD(architecture);
  EXPECT_FIELD(architecture_name);
  EXPECT_FIELD(vocab_size);
  EXPECT_FIELD(hidden_size);
  EXPECT_FIELD(num_layers);
  EXPECT_FIELD(num_heads);
  EXPECT_FIELD(num_kv_heads);
  EXPECT_FIELD(head_dim);
  EXPECT_FIELD(max_position_embeddings);
  EXPECT_FIELD(num_experts);
  EXPECT_FIELD(experts_per_token);
  EXPECT_FIELD(expert_intermediate_size);
  EXPECT_FIELD(shared_expert_intermediate_size);
  EXPECT_FIELD(dense_intermediate_size);
  EXPECT_FIELD(norm_topk_prob);
  EXPECT_FIELD(layer_is_moe);
  EXPECT_FIELD(qk_norm);
  EXPECT_FIELD(attention_bias);
  EXPECT_FIELD(clip_qkv);
  EXPECT_FIELD(rope_theta);
  EXPECT_FIELD(rms_norm_eps);
  EXPECT_FIELD(tie_word_embeddings);
  EXPECT_FIELD(bos_token_id);
  EXPECT_FIELD(eos_token_id);
#undef EXPECT_FIELD
}

INSTANTIATE_TEST_SUITE_P(Families, GgufConfigAgreesTest,
                         ::testing::Values("olmoe", "qwen2moe", "qwen3moe", "mixtral"));

TEST(GgufConfig, FixturesCoverWhatDiffersBetweenFamilies) {
  // The agreement above is only worth as much as the variety of the
  // fixtures: each family's distinguishing fields are really exercised.
  auto config = [](const std::string& family) {
    auto gguf = formats::GgufFile::Open(absl::StrCat(kTestdata, "/", family, "/model.gguf"));
    EXPECT_TRUE(gguf.ok()) << gguf.status();
    return *ModelConfigFromGguf(**gguf);
  };
  const ModelConfig qwen2 = config("qwen2moe");
  EXPECT_EQ(qwen2.shared_expert_intermediate_size, 12);
  EXPECT_TRUE(qwen2.attention_bias);
  const ModelConfig qwen3 = config("qwen3moe");
  EXPECT_EQ(qwen3.head_dim, 4);  // not hidden / heads = 8
  EXPECT_TRUE(qwen3.tie_word_embeddings);
  EXPECT_TRUE(qwen3.norm_topk_prob);
  EXPECT_EQ(qwen3.qk_norm, QkNorm::kPerHead);
  const ModelConfig mixtral = config("mixtral");
  EXPECT_EQ(mixtral.architecture, Architecture::kMixtral);
  EXPECT_EQ(mixtral.vocab_size, 260);  // from llama.vocab_size: the file has no token list
  EXPECT_EQ(config("olmoe").qk_norm, QkNorm::kWholeProjection);
}

using ::expertd::testing::GgufMetadataFile;

// A minimal OLMoE, less the keys in `skip`.
GgufMetadataFile Olmoe(const std::vector<std::string>& skip = {}) {
  GgufMetadataFile f;
  auto keep = [&](const std::string& key) { return std::find(skip.begin(), skip.end(), key) == skip.end(); };
  f.Str("general.architecture", "olmoe");
  if (keep("olmoe.vocab_size")) f.U32("olmoe.vocab_size", 300);
  if (keep("olmoe.embedding_length")) f.U32("olmoe.embedding_length", 16);
  if (keep("olmoe.block_count")) f.U32("olmoe.block_count", 2);
  if (keep("olmoe.context_length")) f.U32("olmoe.context_length", 128);
  if (keep("olmoe.attention.head_count")) f.U32("olmoe.attention.head_count", 2);
  if (keep("olmoe.expert_count")) f.U32("olmoe.expert_count", 4);
  if (keep("olmoe.expert_used_count")) f.U32("olmoe.expert_used_count", 2);
  if (keep("olmoe.feed_forward_length")) f.U32("olmoe.feed_forward_length", 8);
  return f;
}

absl::StatusOr<ModelConfig> Convert(const GgufMetadataFile& metadata) {
  auto file = metadata.Open();
  if (!file.ok()) return file.status();
  return ModelConfigFromGguf(**file);
}

TEST(GgufConfig, MinimalMetadataAndItsDefaults) {
  auto config = Convert(Olmoe());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->num_kv_heads, 2);  // head_count_kv defaults to head_count
  EXPECT_EQ(config->head_dim, 8);      // key_length defaults to hidden / heads
  EXPECT_FLOAT_EQ(config->rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(config->rms_norm_eps, 1e-5f);
  EXPECT_FALSE(config->norm_topk_prob);
  EXPECT_EQ(config->layer_is_moe, std::vector<bool>(2, true));
  EXPECT_FALSE(config->bos_token_id.has_value());
}

TEST(GgufConfig, EachRequiredKeyMissingIsNamed) {
  for (const std::string key :
       {"olmoe.embedding_length", "olmoe.block_count", "olmoe.context_length", "olmoe.attention.head_count",
        "olmoe.expert_count", "olmoe.expert_used_count", "olmoe.feed_forward_length"}) {
    auto config = Convert(Olmoe({key}));
    ASSERT_FALSE(config.ok()) << key;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound) << key;
    EXPECT_THAT(std::string(config.status().message()), AllOf(HasSubstr("'" + key + "'"), HasSubstr("missing")));
  }
  auto no_vocab = Convert(Olmoe({"olmoe.vocab_size"}));
  EXPECT_THAT(std::string(no_vocab.status().message()),
              AllOf(HasSubstr("olmoe.vocab_size"), HasSubstr("tokenizer.ggml.tokens")));
  auto no_arch = Convert(GgufMetadataFile().U32("olmoe.block_count", 2));
  EXPECT_THAT(std::string(no_arch.status().message()), HasSubstr("'general.architecture' is missing"));
}

TEST(GgufConfig, BadValuesAndUnsupportedFeatures) {
  auto message = [](const GgufMetadataFile& f) { return std::string(Convert(f).status().message()); };
  EXPECT_THAT(message(GgufMetadataFile().Str("general.architecture", "gpt2")),
              AllOf(HasSubstr("unsupported architecture 'gpt2'"), HasSubstr("qwen3moe")));
  EXPECT_THAT(message(GgufMetadataFile().Str("general.architecture", "llama")), HasSubstr("dense Llama"));
  EXPECT_THAT(message(Olmoe().Str("olmoe.rope.scaling.type", "yarn")),
              AllOf(HasSubstr("'olmoe.rope.scaling.type'"), HasSubstr("yarn")));
  EXPECT_THAT(message(Olmoe({"olmoe.block_count"}).I32("olmoe.block_count", -1)),
              AllOf(HasSubstr("'olmoe.block_count'"), HasSubstr("-1")));
  EXPECT_THAT(message(Olmoe({"olmoe.block_count"}).Str("olmoe.block_count", "2")),
              AllOf(HasSubstr("'olmoe.block_count'"), HasSubstr("not an integer")));
  EXPECT_THAT(message(Olmoe().F32("olmoe.rope.freq_base", INFINITY)),
              AllOf(HasSubstr("'olmoe.rope.freq_base'"), HasSubstr("not finite")));
  EXPECT_THAT(message(Olmoe().U32("olmoe.attention.key_length", 8).U32("olmoe.attention.value_length",
                                                                                       4)),
              HasSubstr("'olmoe.attention.value_length'"));
  EXPECT_THAT(message(Olmoe({"olmoe.expert_used_count"}).U32("olmoe.expert_used_count", 5)),
              HasSubstr("num_experts_per_tok must be in 1 .. number of experts"));
  // A per-layer head count is accepted when every layer has the same one.
  auto uniform = Convert(Olmoe().U32Array("olmoe.attention.head_count_kv", {1, 1}));
  ASSERT_TRUE(uniform.ok()) << uniform.status();
  EXPECT_EQ(uniform->num_kv_heads, 1);
  EXPECT_THAT(message(Olmoe().U32Array("olmoe.attention.head_count_kv", {1, 2})),
              AllOf(HasSubstr("'olmoe.attention.head_count_kv'"), HasSubstr("each layer its own value")));
}

// A minimal gpt-oss as llama.cpp's converter writes one: 4 layers.
GgufMetadataFile GptOss() {
  GgufMetadataFile f;
  f.Str("general.architecture", "gpt-oss");
  f.U32("gpt-oss.vocab_size", 300);
  f.U32("gpt-oss.embedding_length", 32);
  f.U32("gpt-oss.block_count", 4);
  f.U32("gpt-oss.context_length", 4096);
  f.U32("gpt-oss.attention.head_count", 4);
  f.U32("gpt-oss.attention.head_count_kv", 2);
  f.U32("gpt-oss.attention.key_length", 16);
  f.U32("gpt-oss.attention.value_length", 16);
  f.U32("gpt-oss.attention.sliding_window", 128);
  f.U32("gpt-oss.expert_count", 8);
  f.U32("gpt-oss.expert_used_count", 4);
  f.U32("gpt-oss.feed_forward_length", 24);
  f.U32("gpt-oss.expert_feed_forward_length", 24);
  f.F32("gpt-oss.rope.freq_base", 150000.0f);
  return f;
}

TEST(GgufConfig, GptOssKeysAndWhatItHasBuiltIn) {
  auto config = Convert(GptOss());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, Architecture::kGptOss);
  EXPECT_EQ(config->architecture_name, "GptOssForCausalLM");
  EXPECT_EQ(config->expert_intermediate_size, 24);
  EXPECT_EQ(config->head_dim, 16);
  EXPECT_EQ(config->sliding_window, 128);
  // llama.cpp's default pattern, HF's default layer_types: even layers slide.
  EXPECT_EQ(config->layer_is_sliding, (std::vector<bool>{true, false, true, false}));
  EXPECT_FLOAT_EQ(config->rms_norm_eps, 1e-5f);
  EXPECT_TRUE(config->norm_topk_prob);
  EXPECT_TRUE(config->attention_sinks && config->attention_bias && config->attention_output_bias &&
              config->router_bias && config->expert_bias);
  ASSERT_TRUE(config->clamped_swiglu.has_value());
  EXPECT_FLOAT_EQ(config->clamped_swiglu->alpha, 1.702f);
  EXPECT_FLOAT_EQ(config->clamped_swiglu->limit, 7.0f);
  EXPECT_FALSE(config->yarn.has_value());

  // A period, and a flag per layer.
  auto period = Convert(GptOss().U32("gpt-oss.attention.sliding_window_pattern", 4));
  ASSERT_TRUE(period.ok()) << period.status();
  EXPECT_EQ(period->layer_is_sliding, (std::vector<bool>{true, true, true, false}));
  auto flags = Convert(GptOss().BoolArray("gpt-oss.attention.sliding_window_pattern", {false, true, true, false}));
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_EQ(flags->layer_is_sliding, (std::vector<bool>{false, true, true, false}));
  EXPECT_THAT(std::string(
                  Convert(GptOss().BoolArray("gpt-oss.attention.sliding_window_pattern", {true})).status().message()),
              AllOf(HasSubstr("'gpt-oss.attention.sliding_window_pattern'"), HasSubstr("one per layer")));

  // YaRN as the released models: the ramp unrounded (HF's truncate false).
  auto yarn = Convert(GptOss()
                          .Str("gpt-oss.rope.scaling.type", "yarn")
                          .F32("gpt-oss.rope.scaling.factor", 32.0f)
                          .U32("gpt-oss.rope.scaling.original_context_length", 128)
                          .F32("gpt-oss.rope.scaling.yarn_beta_fast", 16.0f));
  ASSERT_TRUE(yarn.ok()) << yarn.status();
  ASSERT_TRUE(yarn->yarn.has_value());
  EXPECT_EQ(yarn->yarn->factor, 32.0f);
  EXPECT_EQ(yarn->yarn->original_max_position_embeddings, 128);
  EXPECT_EQ(yarn->yarn->beta_fast, 16.0f);
  EXPECT_EQ(yarn->yarn->beta_slow, 1.0f);
  EXPECT_FALSE(yarn->yarn->truncate);
  EXPECT_FALSE(yarn->yarn->attention_factor.has_value());

  auto message = [](const GgufMetadataFile& f) { return std::string(Convert(f).status().message()); };
  EXPECT_THAT(message(GptOss().Str("gpt-oss.rope.scaling.type", "yarn")),
              HasSubstr("'gpt-oss.rope.scaling.factor'"));
  EXPECT_THAT(message(GptOss().Str("gpt-oss.rope.scaling.type", "linear")),
              AllOf(HasSubstr("'gpt-oss.rope.scaling.type'"), HasSubstr("linear")));
  EXPECT_THAT(message(GptOss().F32("gpt-oss.rope.freq_base_swa", 10000.0f)),
              HasSubstr("'gpt-oss.rope.freq_base_swa'"));
  EXPECT_THAT(message(GptOss()
                          .Str("gpt-oss.rope.scaling.type", "yarn")
                          .F32("gpt-oss.rope.scaling.factor", 32.0f)
                          .F32("gpt-oss.rope.scaling.attn_factor", 2.0f)),
              HasSubstr("'gpt-oss.rope.scaling.attn_factor'"));
  GgufMetadataFile no_window;
  no_window.Str("general.architecture", "gpt-oss")
      .U32("gpt-oss.vocab_size", 300)
      .U32("gpt-oss.embedding_length", 32)
      .U32("gpt-oss.block_count", 2)
      .U32("gpt-oss.context_length", 4096)
      .U32("gpt-oss.attention.head_count", 2)
      .U32("gpt-oss.expert_count", 4)
      .U32("gpt-oss.expert_used_count", 2)
      .U32("gpt-oss.expert_feed_forward_length", 8);
  EXPECT_THAT(message(no_window), HasSubstr("'gpt-oss.attention.sliding_window'"));
}

// A minimal DeepSeek-V2 in llama.cpp's deepseek2 keys, kv_b whole: 3
// layers, the first dense.
GgufMetadataFile Deepseek2() {
  GgufMetadataFile f;
  f.Str("general.architecture", "deepseek2");
  f.U32("deepseek2.vocab_size", 300);
  f.U32("deepseek2.embedding_length", 32);
  f.U32("deepseek2.block_count", 3);
  f.U32("deepseek2.context_length", 4096);
  f.U32("deepseek2.attention.head_count", 4);
  f.U32("deepseek2.attention.head_count_kv", 4);
  f.U32("deepseek2.attention.key_length", 24);
  f.U32("deepseek2.attention.value_length", 16);
  f.U32("deepseek2.rope.dimension_count", 8);
  f.U32("deepseek2.attention.q_lora_rank", 0);
  f.U32("deepseek2.attention.kv_lora_rank", 32);
  f.U32("deepseek2.leading_dense_block_count", 1);
  f.U32("deepseek2.feed_forward_length", 64);
  f.U32("deepseek2.expert_feed_forward_length", 16);
  f.U32("deepseek2.expert_count", 8);
  f.U32("deepseek2.expert_used_count", 2);
  f.U32("deepseek2.expert_shared_count", 2);
  f.F32("deepseek2.expert_weights_scale", 2.5f);
  return f;
}

TEST(GgufConfig, Deepseek2KeysAndRefusals) {
  auto config = Convert(Deepseek2());
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, Architecture::kDeepseekV2);
  ASSERT_TRUE(config->mla.has_value());
  EXPECT_EQ(config->mla->q_lora_rank, 0);
  EXPECT_EQ(config->mla->kv_lora_rank, 32);
  EXPECT_EQ(config->mla->qk_nope_head_dim, 16);
  EXPECT_EQ(config->mla->qk_rope_head_dim, 8);
  EXPECT_EQ(config->mla->v_head_dim, 16);
  EXPECT_EQ(config->head_dim, 8);
  EXPECT_EQ(config->layer_is_moe, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(config->dense_intermediate_size, 64);
  EXPECT_EQ(config->shared_expert_intermediate_size, 32);
  EXPECT_FALSE(config->norm_topk_prob);
  EXPECT_FLOAT_EQ(config->routed_scaling_factor, 2.5f);
  EXPECT_EQ(config->topk_method, TopkMethod::kGreedy);
  EXPECT_FALSE(config->yarn.has_value());

  auto grouped = Convert(Deepseek2()
                             .U32("deepseek2.expert_group_count", 4)
                             .U32("deepseek2.expert_group_used_count", 2)
                             .Bool("deepseek2.expert_weights_norm", true));
  ASSERT_TRUE(grouped.ok()) << grouped.status();
  EXPECT_EQ(grouped->topk_method, TopkMethod::kGroupLimitedGreedy);
  EXPECT_EQ(grouped->n_group, 4);
  EXPECT_EQ(grouped->topk_group, 2);
  EXPECT_TRUE(grouped->norm_topk_prob);

  // V2-Lite's YaRN: mscale = mscale_all_dim = 0.707, written as 0.0707.
  auto yarn = Convert(Deepseek2()
                          .Str("deepseek2.rope.scaling.type", "yarn")
                          .F32("deepseek2.rope.scaling.factor", 40.0f)
                          .U32("deepseek2.rope.scaling.original_context_length", 4096)
                          .F32("deepseek2.rope.scaling.yarn_log_multiplier", 0.0707f));
  ASSERT_TRUE(yarn.ok()) << yarn.status();
  ASSERT_TRUE(yarn->yarn.has_value());
  EXPECT_FLOAT_EQ(yarn->yarn->mscale_all_dim, 0.707f);
  EXPECT_FLOAT_EQ(yarn->yarn->mscale, 0.707f);
  EXPECT_TRUE(yarn->yarn->truncate);

  auto message = [](const GgufMetadataFile& f) { return std::string(Convert(f).status().message()); };
  // llama.cpp's current layout: one KV head of the latent, a head's sizes
  // in the _mla keys.
  GgufMetadataFile split;
  split.Str("general.architecture", "deepseek2")
      .U32("deepseek2.vocab_size", 300)
      .U32("deepseek2.embedding_length", 32)
      .U32("deepseek2.block_count", 3)
      .U32("deepseek2.context_length", 4096)
      .U32("deepseek2.attention.head_count", 4)
      .U32("deepseek2.attention.head_count_kv", 1)
      .U32("deepseek2.attention.key_length", 40)
      .U32("deepseek2.attention.value_length", 32)
      .U32("deepseek2.attention.key_length_mla", 24)
      .U32("deepseek2.attention.value_length_mla", 16)
      .U32("deepseek2.rope.dimension_count", 8)
      .U32("deepseek2.attention.kv_lora_rank", 32)
      .U32("deepseek2.expert_feed_forward_length", 16)
      .U32("deepseek2.expert_count", 8)
      .U32("deepseek2.expert_used_count", 2);
  auto mla = Convert(split);
  ASSERT_TRUE(mla.ok()) << mla.status();
  EXPECT_EQ(mla->mla->qk_nope_head_dim, 16);
  EXPECT_EQ(mla->mla->v_head_dim, 16);
  EXPECT_EQ(mla->num_kv_heads, 4);
  EXPECT_EQ(mla->head_dim, 8);
  EXPECT_THAT(message(Deepseek2().U32("deepseek2.expert_gating_func", 2)),
              HasSubstr("'deepseek2.expert_gating_func'"));
}

}  // namespace
}  // namespace expertd::model
