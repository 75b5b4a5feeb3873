#include "model/model_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace expertd::model {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Abridged from the real OLMoE-1B-7B-0924 config.json.
constexpr char kOlmoe[] = R"({
  "architectures": ["OlmoeForCausalLM"], "model_type": "olmoe",
  "hidden_size": 2048, "intermediate_size": 1024, "num_hidden_layers": 16,
  "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 64,
  "num_experts_per_tok": 8, "norm_topk_prob": false, "rope_theta": 10000.0,
  "rms_norm_eps": 1e-05, "vocab_size": 50304, "max_position_embeddings": 4096,
  "tie_word_embeddings": false, "clip_qkv": null, "eos_token_id": 50279, "pad_token_id": 1,
  "rope_scaling": null})";

// Abridged from Qwen1.5-MoE-A2.7B.
constexpr char kQwen2Moe[] = R"({
  "architectures": ["Qwen2MoeForCausalLM"], "hidden_size": 2048, "intermediate_size": 5632,
  "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts": 60,
  "num_experts_per_tok": 4, "norm_topk_prob": false, "num_hidden_layers": 24,
  "num_attention_heads": 16, "num_key_value_heads": 16, "decoder_sparse_step": 1,
  "mlp_only_layers": [], "vocab_size": 151936, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
  "max_position_embeddings": 8192, "eos_token_id": [151643, 151645]})";

TEST(ModelConfig, ParsesOlmoe) {
  auto config = ParseModelConfig(kOlmoe, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, Architecture::kOlmoe);
  EXPECT_EQ(config->num_experts, 64);
  EXPECT_EQ(config->experts_per_token, 8);
  EXPECT_EQ(config->expert_intermediate_size, 1024);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->qk_norm, QkNorm::kWholeProjection);
  EXPECT_FALSE(config->norm_topk_prob);
  EXPECT_FALSE(config->clip_qkv.has_value());
  EXPECT_EQ(config->eos_token_id, 50279);
  EXPECT_FLOAT_EQ(config->rms_norm_eps, 1e-5f);
}

TEST(ModelConfig, ParsesQwen2MoeWithSharedExpertAndEosList) {
  auto config = ParseModelConfig(kQwen2Moe, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->shared_expert_intermediate_size, 5632);
  EXPECT_EQ(config->expert_intermediate_size, 1408);
  EXPECT_TRUE(config->attention_bias);
  EXPECT_EQ(config->eos_token_id, 151643);
  EXPECT_EQ(config->layer_is_moe, std::vector<bool>(24, true));
}

TEST(ModelConfig, MlpOnlyLayersAndSparseStep) {
  std::string text = kQwen2Moe;
  text.replace(text.find("\"decoder_sparse_step\": 1"), 24, "\"decoder_sparse_step\": 2");
  text.replace(text.find("\"mlp_only_layers\": []"), 21, "\"mlp_only_layers\": [3]");
  auto config = ParseModelConfig(text, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->layer_is_moe[0]);
  EXPECT_TRUE(config->layer_is_moe[1]);
  EXPECT_FALSE(config->layer_is_moe[2]);
  EXPECT_FALSE(config->layer_is_moe[3]);
  EXPECT_TRUE(config->layer_is_moe[5]);
}

TEST(ModelConfig, MixtralAlwaysNormalisesTopK) {
  auto config = ParseModelConfig(R"({"architectures": ["MixtralForCausalLM"], "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
    "vocab_size": 32000, "rope_theta": 1e6, "sliding_window": null})",
                                 "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->norm_topk_prob);
  EXPECT_EQ(config->num_kv_heads, 8);
  EXPECT_EQ(config->qk_norm, QkNorm::kNone);
}

TEST(ModelConfig, ErrorsNameTheProblem) {
  auto error = [](absl::string_view text) {
    auto config = ParseModelConfig(text, "m/config.json");
    EXPECT_FALSE(config.ok());
    return std::string(config.status().message());
  };
  EXPECT_THAT(error("[1, 2]"), HasSubstr("m/config.json: not a JSON object"));
  EXPECT_THAT(error("{}"), HasSubstr("missing 'architectures'"));
  EXPECT_THAT(error(R"({"architectures": ["GPT2LMHeadModel"]})"), HasSubstr("unsupported architecture 'GPT2LMHeadModel'"));
  std::string text = kOlmoe;
  text.replace(text.find("\"num_experts\": 64"), 17, "\"num_experts\": \"64\"");
  EXPECT_THAT(error(text), HasSubstr("key 'num_experts' must be an integer"));
  text = kOlmoe;
  text.replace(text.find("\"num_experts_per_tok\": 8"), 24, "\"num_experts_per_tok\": 65");
  EXPECT_THAT(error(text), HasSubstr("num_experts_per_tok must be in 1 .. number of experts"));
  text = kOlmoe;
  text.replace(text.find("\"rope_scaling\": null"), 20, "\"rope_scaling\": {\"type\": \"yarn\"}");
  EXPECT_THAT(error(text), HasSubstr("rope_scaling"));
  text = kOlmoe;
  text.replace(text.find("\"hidden_size\": 2048,"), 20, "");
  EXPECT_THAT(error(text), HasSubstr("missing required key 'hidden_size'"));
}


// Every integer is checked at full width before it is narrowed to int: 2^31
// would wrap to -2^31, 2^32 + 16 to 16.
TEST(ModelConfig, IntegersAreRangeCheckedBeforeNarrowing) {
  auto error = [](const std::string& key, const std::string& value) {
    std::string text = kOlmoe;
    const std::string from = "\"" + key + "\": ";
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << key;
    const size_t end = text.find_first_of(",}", at);
    text.replace(at, end - at, from + value);
    auto config = ParseModelConfig(text, "m/config.json");
    EXPECT_FALSE(config.ok()) << key << " = " << value;
    return config.ok() ? std::string() : std::string(config.status().message());
  };
  for (const std::string key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                "num_attention_heads", "num_key_value_heads", "num_experts", "num_experts_per_tok",
                                "max_position_embeddings", "eos_token_id"}) {
    for (const std::string value : {"2147483648", "4294967312", "9223372036854775807", "18446744073709551615",
                                    "-9223372036854775808", "-4294967280"}) {
      const std::string e = error(key, value);
      EXPECT_THAT(e, HasSubstr("m/config.json")) << key << " = " << value;
      EXPECT_THAT(e, HasSubstr("'" + key + "'")) << key << " = " << value << ": " << e;
    }
  }
  EXPECT_THAT(error("max_position_embeddings", "2147483648"),
              AllOf(HasSubstr("max_position_embeddings"), HasSubstr("16777216"), HasSubstr("2147483648")));
  EXPECT_THAT(error("max_position_embeddings", "16777217"), HasSubstr("16777216"));
  EXPECT_THAT(error("max_position_embeddings", "0"), HasSubstr("max_position_embeddings"));
  EXPECT_THAT(error("eos_token_id", "[4294967296]"), HasSubstr("'eos_token_id'"));
  EXPECT_THAT(error("rope_theta", "1e39"), HasSubstr("'rope_theta'"));
  EXPECT_THAT(error("rms_norm_eps", "1e-50"), HasSubstr("'rms_norm_eps'"));

  std::string text = kQwen2Moe;
  text.replace(text.find("\"mlp_only_layers\": []"), 21, "\"mlp_only_layers\": [4294967299]");
  auto config = ParseModelConfig(text, "config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("'mlp_only_layers'"));
  text = kQwen2Moe;
  text.replace(text.find("\"decoder_sparse_step\": 1"), 24, "\"decoder_sparse_step\": 4294967297");
  config = ParseModelConfig(text, "config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("'decoder_sparse_step'"));
}

TEST(ModelConfig, LargestContextIsAccepted) {
  std::string text = kOlmoe;
  text.replace(text.find("\"max_position_embeddings\": 4096"), 31, "\"max_position_embeddings\": 16777216");
  auto config = ParseModelConfig(text, "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->max_position_embeddings, 1 << 24);
}

// config.json is read with a cap: a device or a huge file is refused after
// at most that many bytes, naming the path.
TEST(ModelConfig, LoadReadsAtMostTheCap) {
  auto config = LoadModelConfig("/dev/zero");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), AllOf(HasSubstr("/dev/zero"), HasSubstr("1.0 MiB")));
  config = LoadModelConfig("/nonexistent/config.json");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr("/nonexistent/config.json"));
}

}  // namespace
}  // namespace expertd::model
