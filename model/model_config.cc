#include "model/model_config.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/read_file.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace expertd::model {
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
    {"DeepseekV2ForCausalLM", Architecture::kDeepseekV2},
    {"GptOssForCausalLM", Architecture::kGptOss},
};

// The largest values accepted: far beyond any released model, small enough
// that no product the engine forms from them (heads x head_dim, layers x
// experts, a context's KV cache index) overflows an int.
constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
constexpr int64_t kMinInt = std::numeric_limits<int32_t>::min();
constexpr int64_t kMaxVocab = kMaxModelVocab;
constexpr int64_t kMaxWidth = kMaxModelWidth;
constexpr int64_t kMaxLayers = kMaxModelLayers;
constexpr int64_t kMaxHeads = kMaxModelHeads;
constexpr int64_t kMaxHeadDim = kMaxModelHeadDim;
constexpr int64_t kMaxExperts = kMaxModelExperts;

// Reads typed keys from the config object and remembers the first error, so
// the parser below reads as a list of keys rather than a list of checks.
class KeyReader {
 public:
  KeyReader(const json& object, absl::string_view source) : object_(object), source_(source) {}

  // An integer in [min, max]. config.json numbers are 64-bit (nlohmann keeps
  // uint64 apart): the range is checked at that width before narrowing, so
  // 2^31 is refused instead of wrapping to -2^31.
  int Int(const char* key, std::optional<int> fallback, int64_t min, int64_t max, absl::string_view note = "") {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return Missing<int>(key, fallback);
    return IntOf(key, *value, min, max, note);
  }
  // A float: finite in float, and not a nonzero that rounds to 0.
  float Float(const char* key, std::optional<float> fallback = std::nullopt) {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return Missing<float>(key, fallback);
    if (!value->is_number()) return Fail<float>(key, "a number");
    const double d = value->get<double>();
    if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max() ||
        (d != 0.0 && static_cast<float>(d) == 0.0f)) {
      Check(false, absl::StrCat("key '", key, "' must be a number a float can hold (magnitude ",
                                std::numeric_limits<float>::denorm_min(), " .. ", std::numeric_limits<float>::max(),
                                " or 0), got ", value->dump()));
      return 0.0f;
    }
    return static_cast<float>(d);
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
  std::optional<int> OptionalInt(const char* key, int64_t min, int64_t max) {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return std::nullopt;
    if (value->is_array()) {
      // eos_token_id may be a list; the first is the canonical one.
      if (value->empty() || !(*value)[0].is_number_integer()) return Fail<int>(key, "an integer or a list of integers");
      return IntOf(key, (*value)[0], min, max);
    }
    return IntOf(key, *value, min, max);
  }
  std::vector<int> IntList(const char* key, int64_t min, int64_t max) {
    const json* value = Get(key);
    std::vector<int> out;
    if (value == nullptr || value->is_null()) return out;
    if (!value->is_array()) return Fail<std::vector<int>>(key, "a list of integers");
    for (const auto& item : *value) {
      if (!item.is_number_integer()) return Fail<std::vector<int>>(key, "a list of integers");
      out.push_back(IntOf(key, item, min, max));
    }
    return out;
  }
  std::string String(const char* key, const std::string& fallback) {
    const json* value = Get(key);
    if (value == nullptr || value->is_null()) return fallback;
    if (!value->is_string()) return Fail<std::string>(key, "a string");
    return value->get<std::string>();
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
  int IntOf(const char* key, const json& value, int64_t min, int64_t max, absl::string_view note = "") {
    if (!value.is_number_integer()) return Fail<int>(key, "an integer");
    bool in_range;
    if (value.is_number_unsigned()) {
      const uint64_t u = value.get<uint64_t>();
      in_range = max >= 0 && u <= static_cast<uint64_t>(max) && (min <= 0 || u >= static_cast<uint64_t>(min));
    } else {
      const int64_t i = value.get<int64_t>();
      in_range = i >= min && i <= max;
    }
    if (!in_range) {
      Check(false, absl::StrCat("key '", key, "' must be an integer in ", min, " .. ", max, note, ", got ",
                                value.dump()));
      return 0;
    }
    return static_cast<int>(value.get<int64_t>());
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

// config.json's rope_scaling (or transformers 5's rope_parameters): absent
// or "default" is plain RoPE; "yarn" is read as HF's _compute_yarn_parameters
// reads it.
void ParseRopeScaling(const json& root, const char* rope_scaling_key, KeyReader& keys, ModelConfig& config) {
  auto scaling = root.find(rope_scaling_key);
  if (scaling == root.end() || scaling->is_null()) return;
  if (!scaling->is_object()) {
    keys.Check(false, absl::StrCat(rope_scaling_key, " must be an object"));
    return;
  }
  KeyReader rope(*scaling, rope_scaling_key);
  // transformers 5 saves rope_theta inside rope_parameters.
  if (!keys.Has("rope_theta") && rope.Has("rope_theta")) config.rope_theta = rope.Float("rope_theta");
  const std::string type = rope.String("type", rope.String("rope_type", "default"));
  if (type == "default") return;
  keys.Check(type == "yarn", absl::StrCat(rope_scaling_key, ": type '", type, "' is not supported (only yarn)"));
  YarnRope yarn;
  yarn.factor = rope.Float("factor");
  yarn.original_max_position_embeddings =
      rope.Int("original_max_position_embeddings", config.max_position_embeddings, 1, kMaxPositions);
  yarn.beta_fast = rope.Float("beta_fast", 32.0f);
  yarn.beta_slow = rope.Float("beta_slow", 1.0f);
  yarn.mscale = rope.Float("mscale", 0.0f);
  yarn.mscale_all_dim = rope.Float("mscale_all_dim", 0.0f);
  yarn.attention_factor = rope.OptionalFloat("attention_factor");
  yarn.truncate = rope.Bool("truncate", true);
  keys.Check(rope.status().ok(), rope.status().message());
  keys.Check(yarn.factor > 0, absl::StrCat(rope_scaling_key, ": factor must be positive"));
  config.yarn = yarn;
}

// gpt-oss's keys (HF's GptOssConfig; defaults as there).
void ParseGptOss(const json& root, const char* rope_scaling_key, KeyReader& keys, ModelConfig& config) {
  config.num_experts = keys.Int("num_local_experts", std::nullopt, 1, kMaxExperts);
  config.expert_intermediate_size = keys.Int("intermediate_size", std::nullopt, 1, kMaxWidth);
  // Softmax over the k chosen logits = the softmax over all, renormalised
  // over the k, for any k (dial-k keeps the rule).
  config.norm_topk_prob = true;
  config.attention_bias = keys.Bool("attention_bias", true);
  config.attention_output_bias = config.attention_bias;
  config.router_bias = true;
  config.expert_bias = true;
  config.attention_sinks = true;
  ClampedSwiglu swiglu;
  swiglu.alpha = keys.Float("swiglu_alpha", 1.702f);
  swiglu.limit = keys.Float("swiglu_limit", 7.0f);
  keys.Check(swiglu.limit > 0, "swiglu_limit must be positive");
  config.clamped_swiglu = swiglu;
  keys.Check(keys.String("hidden_act", "silu") == "silu", "hidden_act must be silu");
  // Absent layer_types alternate sliding and full, sliding first, as HF.
  config.sliding_window = keys.Int("sliding_window", 0, 0, kMaxPositions);
  config.layer_is_sliding.assign(std::max(config.num_layers, 0), false);
  auto types = root.find("layer_types");
  if (types == root.end() || types->is_null()) {
    for (int layer = 0; layer < config.num_layers; ++layer) config.layer_is_sliding[layer] = layer % 2 == 0;
  } else if (!types->is_array() || static_cast<int>(types->size()) != config.num_layers) {
    keys.Check(false, "layer_types must be a list with one entry per layer");
  } else {
    for (int layer = 0; layer < config.num_layers; ++layer) {
      const json& type = (*types)[layer];
      const bool sliding = type.is_string() && type.get<std::string>() == "sliding_attention";
      keys.Check(sliding || (type.is_string() && type.get<std::string>() == "full_attention"),
                 absl::StrCat("layer_types[", layer, "] must be \"sliding_attention\" or \"full_attention\", got ",
                              type.dump()));
      config.layer_is_sliding[layer] = sliding;
    }
  }
  if (config.sliding_window == 0) config.layer_is_sliding.assign(config.layer_is_sliding.size(), false);
  ParseRopeScaling(root, rope_scaling_key, keys, config);
}

// DeepSeek-V2's keys (HF's DeepseekV2Config; defaults as there). Two keys
// follow DeepSeek's own modelling code where transformers 5 ignores them:
// norm_topk_prob (renormalise, then scale) and moe_layer_freq. Every
// released V2 config has norm_topk_prob false and moe_layer_freq 1, where
// the two implementations agree.
void ParseDeepseekV2(const json& root, const char* rope_scaling_key, KeyReader& keys, ModelConfig& config) {
  MlaConfig mla;
  mla.q_lora_rank = keys.Int("q_lora_rank", 0, 0, kMaxWidth);  // null: a plain q_proj
  mla.kv_lora_rank = keys.Int("kv_lora_rank", std::nullopt, 1, kMaxWidth);
  mla.qk_nope_head_dim = keys.Int("qk_nope_head_dim", std::nullopt, 0, kMaxHeadDim);
  mla.qk_rope_head_dim = keys.Int("qk_rope_head_dim", std::nullopt, 2, kMaxHeadDim);
  mla.v_head_dim = keys.Int("v_head_dim", std::nullopt, 1, kMaxHeadDim);
  keys.Check(mla.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim must be even (RoPE)");
  config.mla = mla;
  // RoPE turns the qk_rope_head_dim part only; every head shares its key.
  config.head_dim = mla.qk_rope_head_dim;
  config.num_kv_heads = config.num_heads;
  config.num_experts = keys.Int("n_routed_experts", std::nullopt, 1, kMaxExperts);
  config.expert_intermediate_size = keys.Int("moe_intermediate_size", std::nullopt, 1, kMaxWidth);
  config.dense_intermediate_size = keys.Int("intermediate_size", 0, 0, kMaxWidth);
  const int shared_experts = keys.Int("n_shared_experts", 0, 0, 1024);
  keys.Check(int64_t{shared_experts} * config.expert_intermediate_size <= kMaxWidth,
             absl::StrCat("n_shared_experts x moe_intermediate_size must be at most ", kMaxWidth));
  config.shared_expert_intermediate_size = shared_experts * config.expert_intermediate_size;
  config.norm_topk_prob = keys.Bool("norm_topk_prob", false);
  config.routed_scaling_factor = keys.Float("routed_scaling_factor", 1.0f);
  const std::string method = keys.String("topk_method", "greedy");
  if (method == "group_limited_greedy") {
    config.topk_method = TopkMethod::kGroupLimitedGreedy;
    config.n_group = keys.Int("n_group", std::nullopt, 1, kMaxRoutingGroups);
    config.topk_group = keys.Int("topk_group", std::nullopt, 1, kMaxExperts);
  } else {
    keys.Check(method == "greedy", absl::StrCat("topk_method '", method,
                                                "' is not supported (DeepSeek-V2 uses greedy or group_limited_greedy)"));
  }
  keys.Check(!keys.Bool("attention_bias", false), "attention_bias true is not supported for DeepseekV2ForCausalLM");
  keys.Check(keys.String("hidden_act", "silu") == "silu", "hidden_act must be silu");
  ParseRopeScaling(root, rope_scaling_key, keys, config);
}

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
        "' (supported: OlmoeForCausalLM, MixtralForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, "
        "DeepseekV2ForCausalLM, GptOssForCausalLM)"));
  }
  config.architecture = family->architecture;
  const Architecture arch = config.architecture;
  const bool is_qwen = arch == Architecture::kQwen2Moe || arch == Architecture::kQwen3Moe;

  KeyReader keys(root, source);
  config.vocab_size = keys.Int("vocab_size", std::nullopt, 1, kMaxVocab);
  config.hidden_size = keys.Int("hidden_size", std::nullopt, 1, kMaxWidth);
  config.num_layers = keys.Int("num_hidden_layers", std::nullopt, 1, kMaxLayers);
  config.num_heads = keys.Int("num_attention_heads", std::nullopt, 1, kMaxHeads);
  config.num_kv_heads = keys.Int("num_key_value_heads", config.num_heads, 1, kMaxHeads);
  config.max_position_embeddings =
      keys.Int("max_position_embeddings", 4096, 1, kMaxPositions,
               absl::StrCat(" (expertd supports contexts of up to ", kMaxPositions, " positions)"));
  // gpt-oss's defaults are GptOssConfig's (theta 150000, eps 1e-5).
  config.rope_theta = keys.Float("rope_theta", arch == Architecture::kGptOss ? 150000.0f : 10000.0f);
  config.rms_norm_eps =
      keys.Float("rms_norm_eps", arch == Architecture::kOlmoe || arch == Architecture::kGptOss ? 1e-5f : 1e-6f);
  config.tie_word_embeddings = keys.Bool("tie_word_embeddings", false);
  // Token ids are only narrowed here; whether they name a token is the
  // tokenizer's business.
  config.bos_token_id = keys.OptionalInt("bos_token_id", kMinInt, kMaxInt);
  config.eos_token_id = keys.OptionalInt("eos_token_id", kMinInt, kMaxInt);
  config.experts_per_token = keys.Int("num_experts_per_tok", std::nullopt, 1, kMaxExperts);
  const char* rope_scaling_key = keys.Has("rope_scaling") ? "rope_scaling" : "rope_parameters";
  const bool reads_rope_scaling = arch == Architecture::kDeepseekV2 || arch == Architecture::kGptOss;
  if (!reads_rope_scaling && keys.Has("rope_scaling")) {
    keys.Check(false, "rope_scaling is not supported yet; remove it or use a model without it");
  }
  if (config.num_heads > 0 && arch != Architecture::kDeepseekV2) {
    // GptOssConfig's head_dim defaults to 64, not hidden / heads.
    config.head_dim = keys.Int("head_dim", arch == Architecture::kGptOss ? 64 : config.hidden_size / config.num_heads,
                               1, kMaxHeadDim);
  }

  switch (arch) {
    case Architecture::kOlmoe:
      config.num_experts = keys.Int("num_experts", std::nullopt, 1, kMaxExperts);
      config.expert_intermediate_size = keys.Int("intermediate_size", std::nullopt, 1, kMaxWidth);
      config.norm_topk_prob = keys.Bool("norm_topk_prob", false);
      config.qk_norm = QkNorm::kWholeProjection;
      config.attention_bias = keys.Bool("attention_bias", false);
      config.clip_qkv = keys.OptionalFloat("clip_qkv");
      break;
    case Architecture::kMixtral:
      config.num_experts = keys.Int("num_local_experts", std::nullopt, 1, kMaxExperts);
      config.expert_intermediate_size = keys.Int("intermediate_size", std::nullopt, 1, kMaxWidth);
      config.norm_topk_prob = true;  // Mixtral always renormalises its top-k
      break;
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe:
      config.num_experts = keys.Int("num_experts", std::nullopt, 1, kMaxExperts);
      config.expert_intermediate_size = keys.Int("moe_intermediate_size", std::nullopt, 1, kMaxWidth);
      config.dense_intermediate_size = keys.Int("intermediate_size", 0, 0, kMaxWidth);
      config.norm_topk_prob = keys.Bool("norm_topk_prob", false);
      if (arch == Architecture::kQwen2Moe) {
        config.shared_expert_intermediate_size = keys.Int("shared_expert_intermediate_size", 0, 0, kMaxWidth);
        config.shared_expert_gated = true;
        config.attention_bias = true;  // Qwen2 attention always has q/k/v biases
      } else {
        config.qk_norm = QkNorm::kPerHead;
        config.attention_bias = keys.Bool("attention_bias", false);
      }
      break;
    case Architecture::kDeepseekV2:
      ParseDeepseekV2(root, rope_scaling_key, keys, config);
      break;
    case Architecture::kGptOss:
      ParseGptOss(root, rope_scaling_key, keys, config);
      break;
  }
  if (!keys.status().ok()) return keys.status();

  config.layer_is_moe.assign(std::max(config.num_layers, 0), true);
  if (is_qwen) {
    const int sparse_step = keys.Int("decoder_sparse_step", 1, 1, kMaxLayers);
    const std::vector<int> mlp_only = keys.IntList("mlp_only_layers", 0, kMaxInt);
    keys.Check(sparse_step >= 1, "decoder_sparse_step must be >= 1");
    for (int layer = 0; layer < config.num_layers && sparse_step >= 1; ++layer) {
      bool dense = (layer + 1) % sparse_step != 0;
      for (int only : mlp_only) dense |= only == layer;
      config.layer_is_moe[layer] = !dense;
    }
  }
  if (arch == Architecture::kDeepseekV2) {
    // As DeepSeek's modelling code: the first first_k_dense_replace layers
    // are dense, then every moe_layer_freq-th layer is MoE.
    const int first_dense = keys.Int("first_k_dense_replace", 0, 0, kMaxLayers);
    const int frequency = keys.Int("moe_layer_freq", 1, 1, kMaxLayers);
    for (int layer = 0; layer < config.num_layers && frequency >= 1; ++layer) {
      config.layer_is_moe[layer] = layer >= first_dense && layer % frequency == 0;
    }
  }

  if (!keys.status().ok()) return keys.status();
  RETURN_IF_ERROR(ValidateModelConfig(config, source));
  return config;
}

absl::Status ValidateModelConfig(const ModelConfig& config, absl::string_view source) {
  absl::Status status;
  auto check = [&](bool condition, absl::string_view message) {
    if (!condition && status.ok()) status = absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
  };
  check(config.vocab_size > 0, "vocab_size must be positive");
  check(config.hidden_size > 0, "hidden_size must be positive");
  check(config.num_layers > 0, "num_hidden_layers must be positive");
  check(config.num_heads > 0, "num_attention_heads must be positive");
  check(config.num_kv_heads > 0 && config.num_heads % std::max(config.num_kv_heads, 1) == 0,
        "num_key_value_heads must be positive and divide num_attention_heads");
  check(config.head_dim > 0 && config.head_dim % 2 == 0, "head_dim must be positive and even (RoPE)");
  check(config.num_experts > 0, "the number of experts must be positive");
  check(config.experts_per_token >= 1 && config.experts_per_token <= config.num_experts,
        "num_experts_per_tok must be in 1 .. number of experts");
  check(config.expert_intermediate_size > 0, "the expert intermediate size must be positive");
  check(config.rms_norm_eps > 0, "rms_norm_eps must be positive");
  check(config.rope_theta > 0, "rope_theta must be positive");
  check(static_cast<int>(config.layer_is_moe.size()) == config.num_layers,
        "layer_is_moe must have one entry per layer");
  check(config.layer_is_sliding.empty() || static_cast<int>(config.layer_is_sliding.size()) == config.num_layers,
        "layer_types must have one entry per layer");
  check(config.sliding_window >= 0, "sliding_window must not be negative");
  if (config.topk_method == TopkMethod::kGroupLimitedGreedy) {
    check(config.n_group >= 1 && config.n_group <= kMaxRoutingGroups &&
              config.num_experts % std::max(config.n_group, 1) == 0,
          "n_group must divide the number of experts");
    check(config.topk_group >= 1 && config.topk_group <= config.n_group, "topk_group must be in 1 .. n_group");
    check(config.experts_per_token <= config.topk_group * (config.num_experts / std::max(config.n_group, 1)),
          "num_experts_per_tok must not exceed the experts of topk_group groups");
  }
  for (int layer = 0; layer < static_cast<int>(config.layer_is_moe.size()); ++layer) {
    if (!config.layer_is_moe[layer]) {
      check(config.dense_intermediate_size > 0,
            absl::StrCat("layer ", layer, " is dense but intermediate_size is missing"));
    }
  }
  return status;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& config_json_path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFileCapped(config_json_path, kMaxConfigJsonBytes, "config.json"));
  return ParseModelConfig(text, config_json_path);
}

}  // namespace expertd::model
