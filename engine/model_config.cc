#include "engine/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace expertd {
namespace {

using nlohmann::json;

struct Family {
  const char* hf_name;
  Architecture architecture;
};
constexpr Family kFamilies[] = {
    {"OlmoeForCausalLM", Architecture::kOlmoe},
    {"MixtralForCausalLM", Architecture::kMixtral},
    {"Qwen2MoeForCausalLM", Architecture::kQwen2Moe},
    {"Qwen3MoeForCausalLM", Architecture::kQwen3Moe},
};

// Reads typed keys from the config object and remembers the first error, so
// the parser below reads as a list of keys rather than a list of checks.
class KeyReader {
 public:
  KeyReader(const json& object, absl::string_view source) : object_(object), source_(source) {}

  int Int(const char* key, std::optional<int> fallback = std::nullopt) {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return Missing<int>(key, fallback);
    if (!value->is_number_integer()) return Fail<int>(key, "an integer");
    return value->get<int>();
  }
  float Float(const char* key, std::optional<float> fallback = std::nullopt) {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return Missing<float>(key, fallback);
    if (!value->is_number()) return Fail<float>(key, "a number");
    return value->get<float>();
  }
  bool Bool(const char* key, bool fallback) {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return fallback;
    if (!value->is_boolean()) return Fail<bool>(key, "true or false");
    return value->get<bool>();
  }
  std::optional<float> OptionalFloat(const char* key) {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return std::nullopt;
    return Float(key);
  }
  std::optional<int> OptionalInt(const char* key) {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return std::nullopt;
    if (value->is_array()) {
      // eos_token_id may be a list; the first is the canonical one.
      if (value->empty() || !(*value)[0].is_number_integer()) return Fail<int>(key, "an integer or a list of integers");
      return (*value)[0].get<int>();
    }
    return Int(key);
  }
  std::vector<int> IntList(const char* key) {
    const json* value = Get(key);
    std::vector<int> out;
    if (value == nullptr || value->is_null()) return out;
    if (!value->is_array()) return Fail<std::vector<int>>(key, "a list of integers");
    for (const auto& item : *value) {
      if (!item.is_number_integer()) return Fail<std::vector<int>>(key, "a list of integers");
      out.push_back(item.get<int>());
    }
    return out;
  }
  bool Has(const char* key) const {
    const json* value = Get(key);
    return value != nullptr && !value->is_null();
  }
  void Check(bool condition, absl::string_view message) {
    if (!condition && status_.ok()) {
      status_ = absl::InvalidArgumentError(absl::StrCat(source_, ": ", message));
    }
  }
  const absl::Status& status() const { return status_; }

 private:
  const json* Get(const char* key) const {
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  template <typename T>
  T Missing(const char* key, std::optional<T> fallback) {
    if (fallback.has_value()) return *fallback;
    Check(false, absl::StrCat("missing required key '", key, "'"));
    return T{};
  }
  template <typename T>
  T Fail(const char* key, const char* expected) {
    Check(false, absl::StrCat("key '", key, "' must be ", expected));
    return T{};
  }

  const json& object_;
  absl::string_view source_;
  absl::Status status_;
};

}  // namespace

absl::string_view ArchitectureName(Architecture architecture) {
  for (const auto& family : kFamilies) {
    if (family.architecture == architecture) return family.hf_name;
  }
  return "?";
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  ModelConfig config;
  auto arch_it = root.find("architectures");
  if (arch_it == root.end() || !arch_it->is_array() || arch_it->empty() || !(*arch_it)[0].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": missing 'architectures' list"));
  }
  config.architecture_name = (*arch_it)[0].get<std::string>();
  const Family* family = nullptr;
  for (const auto& candidate : kFamilies) {
    if (config.architecture_name == candidate.hf_name) family = &candidate;
  }
  if (family == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        source, ": unsupported architecture '", config.architecture_name,
        "' (supported: OlmoeForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM)"));
  }
  config.architecture = family->architecture;
  const Architecture arch = config.architecture;
  const bool is_qwen = arch == Architecture::kQwen2Moe || arch == Architecture::kQwen3Moe;

  KeyReader keys(root, source);
  config.vocab_size = keys.Int("vocab_size");
  config.hidden_size = keys.Int("hidden_size");
  config.num_layers = keys.Int("num_hidden_layers");
  config.num_heads = keys.Int("num_attention_heads");
  config.num_kv_heads = keys.Int("num_key_value_heads", config.num_heads);
  config.max_position_embeddings = keys.Int("max_position_embeddings", 4096);
  config.rope_theta = keys.Float("rope_theta", 10000.0f);
  config.rms_norm_eps = keys.Float("rms_norm_eps", arch == Architecture::kOlmoe ? 1e-5f : 1e-6f);
  config.tie_word_embeddings = keys.Bool("tie_word_embeddings", false);
  config.bos_token_id = keys.OptionalInt("bos_token_id");
  config.eos_token_id = keys.OptionalInt("eos_token_id");
  config.experts_per_token = keys.Int("num_experts_per_tok");
  if (keys.Has("rope_scaling")) {
    keys.Check(false, "rope_scaling is not supported yet; remove it or use a model without it");
  }
  if (config.num_heads > 0) {
    config.head_dim = keys.Int("head_dim", config.hidden_size / config.num_heads);
  }

  switch (arch) {
    case Architecture::kOlmoe:
      config.num_experts = keys.Int("num_experts");
      config.expert_intermediate_size = keys.Int("intermediate_size");
      config.norm_topk_prob = keys.Bool("norm_topk_prob", false);
      config.qk_norm = QkNorm::kWholeProjection;
      config.attention_bias = keys.Bool("attention_bias", false);
      config.clip_qkv = keys.OptionalFloat("clip_qkv");
      break;
    case Architecture::kMixtral:
      config.num_experts = keys.Int("num_local_experts");
      config.expert_intermediate_size = keys.Int("intermediate_size");
      config.norm_topk_prob = true;  // Mixtral always renormalises its top-k
      break;
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe:
      config.num_experts = keys.Int("num_experts");
      config.expert_intermediate_size = keys.Int("moe_intermediate_size");
      config.dense_intermediate_size = keys.Int("intermediate_size", 0);
      config.norm_topk_prob = keys.Bool("norm_topk_prob", false);
      if (arch == Architecture::kQwen2Moe) {
        config.shared_expert_intermediate_size = keys.Int("shared_expert_intermediate_size", 0);
        config.attention_bias = true;  // Qwen2 attention always has q/k/v biases
      } else {
        config.qk_norm = QkNorm::kPerHead;
        config.attention_bias = keys.Bool("attention_bias", false);
      }
      break;
  }
  if (!keys.status().ok()) return keys.status();

  config.layer_is_moe.assign(std::max(config.num_layers, 0), true);
  if (is_qwen) {
    const int sparse_step = keys.Int("decoder_sparse_step", 1);
    const std::vector<int> mlp_only = keys.IntList("mlp_only_layers");
    keys.Check(sparse_step >= 1, "decoder_sparse_step must be >= 1");
    for (int layer = 0; layer < config.num_layers && sparse_step >= 1; ++layer) {
      bool dense = (layer + 1) % sparse_step != 0;
      for (int only : mlp_only) dense |= only == layer;
      config.layer_is_moe[layer] = !dense;
      if (dense) {
        keys.Check(config.dense_intermediate_size > 0,
                   absl::StrCat("layer ", layer, " is dense but intermediate_size is missing"));
      }
    }
  }

  keys.Check(config.vocab_size > 0, "vocab_size must be positive");
  keys.Check(config.hidden_size > 0, "hidden_size must be positive");
  keys.Check(config.num_layers > 0, "num_hidden_layers must be positive");
  keys.Check(config.num_heads > 0, "num_attention_heads must be positive");
  keys.Check(config.num_kv_heads > 0 && config.num_heads % std::max(config.num_kv_heads, 1) == 0,
             "num_key_value_heads must be positive and divide num_attention_heads");
  keys.Check(config.head_dim > 0 && config.head_dim % 2 == 0, "head_dim must be positive and even (RoPE)");
  keys.Check(config.num_experts > 0, "the number of experts must be positive");
  keys.Check(config.experts_per_token >= 1 && config.experts_per_token <= config.num_experts,
             "num_experts_per_tok must be in 1 .. number of experts");
  keys.Check(config.expert_intermediate_size > 0, "the expert intermediate size must be positive");
  keys.Check(config.rms_norm_eps > 0, "rms_norm_eps must be positive");
  keys.Check(config.rope_theta > 0, "rope_theta must be positive");
  if (!keys.status().ok()) return keys.status();
  return config;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& config_json_path) {
  std::ifstream in(config_json_path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", config_json_path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseModelConfig(buffer.str(), config_json_path);
}

}  // namespace expertd
