#include "model/gguf_model_config.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace expertd::model {
namespace {

using formats::GgufFile;
using formats::GgufValueType;

struct Family {
  const char* gguf_name;  // general.architecture, as llama.cpp names it
  Architecture architecture;
  bool norm_topk_prob;  // as llama.cpp's graph for the family computes
};
constexpr Family kFamilies[] = {
    {"olmoe", Architecture::kOlmoe, false},
    {"qwen2moe", Architecture::kQwen2Moe, false},
    {"qwen3moe", Architecture::kQwen3Moe, true},
    {"llama", Architecture::kMixtral, true},  // with {arch}.expert_count
    // Softmax over the k chosen logits (llama.cpp's SOFTMAX_WEIGHT gating).
    {"gpt-oss", Architecture::kGptOss, true},
    // DeepSeek-V2: renormalised only when .expert_weights_norm says so.
    {"deepseek2", Architecture::kDeepseekV2, false},
};

// llama.cpp's gpt-oss graph has the experts' clamped SwiGLU built in
// (src/llama-graph.cpp, build_moe_ffn's LLM_FFN_SWIGLU_OAI_MOE) and GGUF no
// key for it: the values of HF's GptOssConfig and the released models.
constexpr ClampedSwiglu kGptOssSwiglu{1.702f, 7.0f};

// The keys of one architecture ("{arch}.block_count"), read with the same
// ranges config.json's are, each error naming the file and the key.
class ArchKeys {
 public:
  ArchKeys(const GgufFile& file, std::string arch) : file_(file), arch_(std::move(arch)) {}

  std::string Key(std::string_view suffix) const { return absl::StrCat(arch_, ".", std::string(suffix)); }
  bool Has(std::string_view suffix) const { return file_.Has(Key(suffix)); }

  // An integer in [min, max]. llama.cpp lets some keys (head counts,
  // feed-forward lengths) be an array with one value per layer; such an
  // array is accepted when every layer has the same value.
  absl::StatusOr<int> Int(std::string_view suffix, int64_t min, int64_t max) const {
    const std::string key = Key(suffix);
    const formats::GgufValue* value = file_.Find(key);
    int64_t v = 0;
    if (value != nullptr && value->type() == GgufValueType::kArray) {
      ASSIGN_OR_RETURN(const std::vector<int64_t> values, file_.GetInt64Array(key));
      if (values.empty()) return absl::InvalidArgumentError(absl::StrCat(file_.path(), ": key '", key, "' is empty"));
      for (int64_t other : values) {
        if (other != values[0]) {
          return absl::UnimplementedError(absl::StrCat(file_.path(), ": key '", key,
                                                       "' gives each layer its own value; expertd needs one value "
                                                       "for every layer"));
        }
      }
      v = values[0];
    } else {
      ASSIGN_OR_RETURN(v, file_.GetInt64(key));
    }
    if (v < min || v > max) {
      return absl::InvalidArgumentError(
          absl::StrCat(file_.path(), ": key '", key, "' must be in ", min, " .. ", max, ", got ", v));
    }
    return static_cast<int>(v);
  }
  absl::StatusOr<int> IntOr(std::string_view suffix, int fallback, int64_t min, int64_t max) const {
    if (!Has(suffix)) return fallback;
    return Int(suffix, min, max);
  }
  // A finite float; `fallback` when absent.
  absl::StatusOr<float> FloatOr(std::string_view suffix, float fallback) const {
    if (!Has(suffix)) return fallback;
    ASSIGN_OR_RETURN(const float v, file_.GetFloat32(Key(suffix)));
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat(file_.path(), ": key '", Key(suffix), "' is not finite"));
    }
    return v;
  }
  absl::StatusOr<std::optional<float>> OptionalFloat(std::string_view suffix) const {
    if (!Has(suffix)) return std::nullopt;
    return FloatOr(suffix, 0.0f);
  }
  absl::StatusOr<std::optional<bool>> OptionalBool(std::string_view suffix) const {
    if (!Has(suffix)) return std::nullopt;
    return file_.GetBool(Key(suffix));
  }

 private:
  const GgufFile& file_;
  std::string arch_;
};

absl::StatusOr<std::optional<int>> OptionalTokenId(const GgufFile& file, std::string_view key) {
  if (!file.Has(key)) return std::nullopt;
  ASSIGN_OR_RETURN(const int32_t id, file.GetInt32(key));
  return id;
}

// The vocabulary size: {arch}.vocab_size when given, else the token list's
// length (llama.cpp's order), else the embedding's rows.
absl::StatusOr<int> VocabSize(const GgufFile& file, const ArchKeys& keys) {
  if (keys.Has("vocab_size")) return keys.Int("vocab_size", 1, kMaxModelVocab);
  if (const formats::GgufValue* tokens = file.Find("tokenizer.ggml.tokens"); tokens != nullptr) {
    ASSIGN_OR_RETURN(const formats::GgufArray* array, file.GetArray("tokenizer.ggml.tokens"));
    if (array->size() < 1 || array->size() > static_cast<uint64_t>(kMaxModelVocab)) {
      return absl::InvalidArgumentError(absl::StrCat(file.path(), ": key 'tokenizer.ggml.tokens' holds ",
                                                     array->size(), " tokens; expected 1 .. ", kMaxModelVocab));
    }
    return static_cast<int>(array->size());
  }
  if (const formats::GgufTensorInfo* embedding = file.FindTensor("token_embd.weight"); embedding != nullptr) {
    if (embedding->rows >= 1 && embedding->rows <= kMaxModelVocab) return static_cast<int>(embedding->rows);
  }
  return absl::NotFoundError(absl::StrCat(file.path(), ": no vocabulary size: neither key '", keys.Key("vocab_size"),
                                          "' nor 'tokenizer.ggml.tokens' nor a token_embd.weight tensor"));
}

// YaRN's keys both gpt-oss and DeepSeek-V2 files share (llama.cpp's
// rope.scaling.*): nullopt when the file scales RoPE otherwise or not at
// all. The betas default to 32 and 1, YaRN's own.
absl::StatusOr<std::optional<YarnRope>> ReadYarn(const GgufFile& file, const ArchKeys& keys,
                                                 const ModelConfig& config) {
  if (!keys.Has("rope.scaling.type")) return std::nullopt;
  ASSIGN_OR_RETURN(const std::string_view scaling, file.GetString(keys.Key("rope.scaling.type")));
  if (scaling != "yarn") return std::nullopt;
  YarnRope yarn;
  ASSIGN_OR_RETURN(yarn.factor, keys.FloatOr("rope.scaling.factor", 0.0f));
  if (!(yarn.factor > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": key '", keys.Key("rope.scaling.factor"), "' must be present and positive"));
  }
  ASSIGN_OR_RETURN(yarn.original_max_position_embeddings,
                   keys.IntOr("rope.scaling.original_context_length", config.max_position_embeddings, 1,
                              kMaxPositions));
  ASSIGN_OR_RETURN(yarn.beta_fast, keys.FloatOr("rope.scaling.yarn_beta_fast", 32.0f));
  ASSIGN_OR_RETURN(yarn.beta_slow, keys.FloatOr("rope.scaling.yarn_beta_slow", 1.0f));
  return yarn;
}

// gpt-oss's keys as llama.cpp's loader reads them (src/models/openai-moe.cpp,
// load_arch_hparams), into what HF's GptOssConfig says.
absl::Status ReadGptOss(const GgufFile& file, const ArchKeys& keys, ModelConfig& config) {
  ASSIGN_OR_RETURN(config.expert_intermediate_size, keys.Int("expert_feed_forward_length", 1, kMaxModelWidth));
  config.attention_bias = true;
  config.attention_output_bias = true;
  config.router_bias = true;
  config.expert_bias = true;
  config.attention_sinks = true;
  config.clamped_swiglu = kGptOssSwiglu;
  ASSIGN_OR_RETURN(config.sliding_window, keys.Int("attention.sliding_window", 1, kMaxPositions));
  // The sliding layers: llama.cpp's sliding_window_pattern, either a flag
  // per layer or a period n (layer i slides unless i % n == n - 1; n = 2
  // when absent, HF's default: even layers slide).
  config.layer_is_sliding.assign(config.num_layers, false);
  const std::string pattern_key = keys.Key("attention.sliding_window_pattern");
  const formats::GgufValue* pattern = file.Find(pattern_key);
  if (pattern != nullptr && pattern->type() == GgufValueType::kArray) {
    ASSIGN_OR_RETURN(const formats::GgufArray* flags, file.GetArray(pattern_key));
    if (flags->size() != static_cast<uint64_t>(config.num_layers)) {
      return absl::InvalidArgumentError(absl::StrCat(file.path(), ": key '", pattern_key, "' has ", flags->size(),
                                                     " flags; expected one per layer (", config.num_layers, ")"));
    }
    for (int layer = 0; layer < config.num_layers; ++layer) {
      absl::StatusOr<bool> flag = flags->Element(layer).AsBool();
      if (!flag.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(file.path(), ": key '", pattern_key, "'[", layer, "]: ", flag.status().message()));
      }
      config.layer_is_sliding[layer] = *flag;
    }
  } else {
    ASSIGN_OR_RETURN(const int period, keys.IntOr("attention.sliding_window_pattern", 2, 0, kMaxModelLayers));
    for (int layer = 0; layer < config.num_layers; ++layer) {
      config.layer_is_sliding[layer] = period == 0 || layer % period < period - 1;
    }
  }
  if (keys.Has("rope.freq_base_swa")) {
    ASSIGN_OR_RETURN(const float swa_base, keys.FloatOr("rope.freq_base_swa", config.rope_theta));
    if (swa_base != config.rope_theta) {
      return absl::UnimplementedError(absl::StrCat(file.path(), ": key '", keys.Key("rope.freq_base_swa"),
                                                   "' gives the sliding layers their own RoPE base; expertd has "
                                                   "one for every layer"));
    }
  }
  // llama.cpp's gpt-oss reads neither beta (it keeps 32 and 1, gpt-oss's
  // values); a file that says otherwise is read as it says, as HF would.
  ASSIGN_OR_RETURN(std::optional<YarnRope> read, ReadYarn(file, keys, config));
  if (!read) return absl::OkStatus();
  YarnRope& yarn = *read;
  // HF's attention_factor, which llama.cpp's converter writes here.
  ASSIGN_OR_RETURN(const std::optional<float> attention_factor, keys.OptionalFloat("rope.scaling.yarn_attn_factor"));
  yarn.attention_factor = attention_factor;
  ASSIGN_OR_RETURN(const float attn_factor, keys.FloatOr("rope.scaling.attn_factor", 1.0f));
  if (attn_factor != 1.0f) {
    return absl::UnimplementedError(absl::StrCat(file.path(), ": key '", keys.Key("rope.scaling.attn_factor"),
                                                 "' (llama.cpp's extra RoPE magnitude factor) is not supported"));
  }
  // HF rounds the ends of YaRN's ramp to whole dimensions unless the config
  // says truncate: false, which gpt-oss's does (and OpenAI's reference
  // implementation computes them unrounded); GGUF has no key for it, so a
  // gpt-oss file is read as the released models are. llama.cpp rounds them
  // for every model (ggml/src/ggml.c, ggml_rope_yarn_corr_dims: floorf and
  // ceilf), so on gpt-oss its RoPE differs from HF's in the dimensions
  // between the ends (gpt-oss-20b: 8.09 .. 17.40 unrounded, 8 .. 18 there).
  yarn.truncate = false;
  config.yarn = yarn;
  return absl::OkStatus();
}

// DeepSeek-V2's keys as llama.cpp's loader reads them (src/models/
// deepseek2.cpp, load_arch_hparams), in the layout with attn_kv_b whole:
// .attention.key_length is a head's query/key size (nope + rope) and
// .attention.value_length its value size. `config` holds the shared keys,
// head_dim the key length.
absl::Status ReadDeepseek2(const GgufFile& file, const ArchKeys& keys, int value_length, ModelConfig& config) {
  MlaConfig mla;
  ASSIGN_OR_RETURN(mla.q_lora_rank, keys.IntOr("attention.q_lora_rank", 0, 0, kMaxModelWidth));
  ASSIGN_OR_RETURN(mla.kv_lora_rank, keys.Int("attention.kv_lora_rank", 1, kMaxModelWidth));
  ASSIGN_OR_RETURN(mla.qk_rope_head_dim, keys.Int("rope.dimension_count", 2, kMaxModelHeadDim));
  if (keys.Has("attention.key_length_mla")) {
    // llama.cpp's converter since its MLA rework: kv_b split into attn_k_b
    // and attn_v_b, the model written as one KV head of the latent
    // (key_length kv_lora_rank + rope, value_length kv_lora_rank) and a
    // head's own sizes in the _mla keys.
    ASSIGN_OR_RETURN(const int key_length, keys.Int("attention.key_length_mla", 1, kMaxModelHeadDim));
    ASSIGN_OR_RETURN(mla.v_head_dim, keys.Int("attention.value_length_mla", 1, kMaxModelHeadDim));
    mla.qk_nope_head_dim = key_length - mla.qk_rope_head_dim;
  } else {
    mla.qk_nope_head_dim = config.head_dim - mla.qk_rope_head_dim;
    mla.v_head_dim = value_length;
  }
  if (mla.qk_nope_head_dim < 0 || mla.qk_rope_head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": key '", keys.Key("rope.dimension_count"), "' (",
                                                   mla.qk_rope_head_dim, ") must be even and at most a head's key "
                                                   "length (", mla.qk_nope_head_dim + mla.qk_rope_head_dim, ")"));
  }
  config.mla = mla;
  config.head_dim = mla.qk_rope_head_dim;
  config.num_kv_heads = config.num_heads;
  ASSIGN_OR_RETURN(config.expert_intermediate_size, keys.Int("expert_feed_forward_length", 1, kMaxModelWidth));
  ASSIGN_OR_RETURN(config.dense_intermediate_size, keys.IntOr("feed_forward_length", 0, 0, kMaxModelWidth));
  ASSIGN_OR_RETURN(const int shared, keys.IntOr("expert_shared_count", 0, 0, 1024));
  if (int64_t{shared} * config.expert_intermediate_size > kMaxModelWidth) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": key '", keys.Key("expert_shared_count"),
                                                   "' x the expert size exceeds ", kMaxModelWidth));
  }
  config.shared_expert_intermediate_size = shared * config.expert_intermediate_size;
  ASSIGN_OR_RETURN(config.routed_scaling_factor, keys.FloatOr("expert_weights_scale", 1.0f));
  // llama.cpp's gating enum: 0 none (softmax for V2 files), 1 softmax, 2
  // sigmoid (DeepSeek-V3's, with a selection bias).
  ASSIGN_OR_RETURN(const int gating, keys.IntOr("expert_gating_func", 1, 0, 16));
  if (gating > 1) {
    return absl::UnimplementedError(absl::StrCat(file.path(), ": key '", keys.Key("expert_gating_func"), "' is ",
                                                 gating, "; expertd's DeepSeek routes by softmax only (V2, not V3)"));
  }
  ASSIGN_OR_RETURN(const int groups, keys.IntOr("expert_group_count", 1, 1, kMaxRoutingGroups));
  if (groups > 1) {
    // V2's group_limited_greedy: a group scores its best expert. llama.cpp
    // scores a group by the sum of its best two (DeepSeek-V3's rule,
    // src/llama-graph.cpp build_moe_ffn) for every deepseek2 file.
    config.topk_method = TopkMethod::kGroupLimitedGreedy;
    config.n_group = groups;
    ASSIGN_OR_RETURN(config.topk_group, keys.Int("expert_group_used_count", 1, groups));
  }
  // Dense layers: the first .leading_dense_block_count (the tensors decide
  // below when the file has them).
  ASSIGN_OR_RETURN(const int first_dense, keys.IntOr("leading_dense_block_count", 0, 0, kMaxModelLayers));
  config.layer_is_moe.assign(config.num_layers, true);
  for (int layer = 0; layer < std::min(first_dense, config.num_layers); ++layer) config.layer_is_moe[layer] = false;
  ASSIGN_OR_RETURN(std::optional<YarnRope> read, ReadYarn(file, keys, config));
  if (!read) return absl::OkStatus();
  YarnRope& yarn = *read;
  // llama.cpp's converter writes 0.1 x mscale_all_dim, and llama.cpp takes
  // mscale to be mscale_all_dim ([TAG_DEEPSEEK2_YARN_LOG_MUL_FIX] there), as
  // DeepSeek's configs have them.
  ASSIGN_OR_RETURN(const float log_mul, keys.FloatOr("rope.scaling.yarn_log_multiplier", 0.0f));
  yarn.mscale = yarn.mscale_all_dim = log_mul / 0.1f;
  config.yarn = yarn;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfigFromGguf(const GgufFile& file) {
  ASSIGN_OR_RETURN(const std::string_view arch_name, file.GetString("general.architecture"));
  const Family* family = nullptr;
  for (const auto& candidate : kFamilies) {
    if (arch_name == candidate.gguf_name) family = &candidate;
  }
  const std::string arch(arch_name);
  ArchKeys keys(file, arch);
  if (family == nullptr || (family->architecture == Architecture::kMixtral && !keys.Has("expert_count"))) {
    return absl::UnimplementedError(absl::StrCat(
        file.path(), ": unsupported architecture '", arch,
        family == nullptr ? "'" : "' without experts (a dense Llama)",
        " (supported: olmoe, qwen2moe, qwen3moe, gpt-oss, deepseek2, and llama with llama.expert_count, i.e. "
        "Mixtral)"));
  }
  if (keys.Has("rope.scaling.type")) {
    ASSIGN_OR_RETURN(const std::string_view scaling, file.GetString(keys.Key("rope.scaling.type")));
    const bool yarn_ok = scaling == "yarn" && (family->architecture == Architecture::kGptOss ||
                                               family->architecture == Architecture::kDeepseekV2);
    if (scaling != "none" && !yarn_ok) {
      return absl::UnimplementedError(absl::StrCat(file.path(), ": key '", keys.Key("rope.scaling.type"), "' is '",
                                                   std::string(scaling), "'; rope scaling is not supported yet"));
    }
  }

  ModelConfig config;
  config.architecture = family->architecture;
  config.architecture_name = std::string(ArchitectureName(family->architecture));
  const Architecture a = config.architecture;
  ASSIGN_OR_RETURN(config.vocab_size, VocabSize(file, keys));
  ASSIGN_OR_RETURN(config.hidden_size, keys.Int("embedding_length", 1, kMaxModelWidth));
  ASSIGN_OR_RETURN(config.num_layers, keys.Int("block_count", 1, kMaxModelLayers));
  ASSIGN_OR_RETURN(config.num_heads, keys.Int("attention.head_count", 1, kMaxModelHeads));
  ASSIGN_OR_RETURN(config.num_kv_heads,
                   keys.IntOr("attention.head_count_kv", config.num_heads, 1, kMaxModelHeads));
  ASSIGN_OR_RETURN(config.head_dim, keys.IntOr("attention.key_length", config.hidden_size / config.num_heads, 1,
                                               kMaxModelHeadDim));
  ASSIGN_OR_RETURN(const int value_length,
                   keys.IntOr("attention.value_length", config.head_dim, 1, kMaxModelHeadDim));
  if (value_length != config.head_dim && a != Architecture::kDeepseekV2) {
    return absl::UnimplementedError(absl::StrCat(file.path(), ": key '", keys.Key("attention.value_length"), "' (",
                                                 value_length, ") differs from the key length (", config.head_dim,
                                                 "); expertd needs one head size"));
  }
  ASSIGN_OR_RETURN(config.max_position_embeddings, keys.Int("context_length", 1, kMaxPositions));
  ASSIGN_OR_RETURN(config.rope_theta, keys.FloatOr("rope.freq_base", 10000.0f));
  ASSIGN_OR_RETURN(config.rms_norm_eps,
                   keys.FloatOr("attention.layer_norm_rms_epsilon",
                                a == Architecture::kOlmoe || a == Architecture::kGptOss ? 1e-5f : 1e-6f));
  ASSIGN_OR_RETURN(config.num_experts, keys.Int("expert_count", 1, kMaxModelExperts));
  ASSIGN_OR_RETURN(config.experts_per_token, keys.Int("expert_used_count", 1, kMaxModelExperts));
  ASSIGN_OR_RETURN(const std::optional<bool> weights_norm, keys.OptionalBool("expert_weights_norm"));
  config.norm_topk_prob = weights_norm.value_or(family->norm_topk_prob);
  ASSIGN_OR_RETURN(config.bos_token_id, OptionalTokenId(file, "tokenizer.ggml.bos_token_id"));
  ASSIGN_OR_RETURN(config.eos_token_id, OptionalTokenId(file, "tokenizer.ggml.eos_token_id"));
  config.tie_word_embeddings = file.FindTensor("output.weight") == nullptr;
  const bool q_bias = file.FindTensor("blk.0.attn_q.bias") != nullptr;

  switch (a) {
    case Architecture::kOlmoe: {
      ASSIGN_OR_RETURN(config.expert_intermediate_size, keys.Int("feed_forward_length", 1, kMaxModelWidth));
      config.qk_norm = QkNorm::kWholeProjection;
      config.attention_bias = q_bias;
      ASSIGN_OR_RETURN(config.clip_qkv, keys.OptionalFloat("attention.clamp_kqv"));
      break;
    }
    case Architecture::kMixtral: {
      ASSIGN_OR_RETURN(config.expert_intermediate_size, keys.Int("feed_forward_length", 1, kMaxModelWidth));
      config.norm_topk_prob = true;  // Mixtral always renormalises its top-k
      break;
    }
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe: {
      ASSIGN_OR_RETURN(config.dense_intermediate_size, keys.IntOr("feed_forward_length", 0, 0, kMaxModelWidth));
      // llama.cpp's fallback when the expert size is absent: the dense size
      // shared among the experts a token uses.
      ASSIGN_OR_RETURN(config.expert_intermediate_size,
                       keys.IntOr("expert_feed_forward_length",
                                  config.dense_intermediate_size / std::max(config.experts_per_token, 1), 1,
                                  kMaxModelWidth));
      if (a == Architecture::kQwen2Moe) {
        ASSIGN_OR_RETURN(config.shared_expert_intermediate_size,
                         keys.IntOr("expert_shared_feed_forward_length", 0, 0, kMaxModelWidth));
        config.shared_expert_gated = true;
        config.attention_bias = true;  // Qwen2 attention always has q/k/v biases
      } else {
        config.qk_norm = QkNorm::kPerHead;
        config.attention_bias = q_bias;
      }
      break;
    }
    case Architecture::kGptOss: {
      RETURN_IF_ERROR(ReadGptOss(file, keys, config));
      break;
    }
    case Architecture::kDeepseekV2: {
      RETURN_IF_ERROR(ReadDeepseek2(file, keys, value_length, config));
      break;
    }
  }

  // A layer without a router is a dense MLP layer (Qwen's mlp_only_layers);
  // a file without tensors (metadata only) is taken as all-MoE (DeepSeek's
  // as its leading_dense_block_count says).
  if (config.layer_is_moe.size() != static_cast<size_t>(config.num_layers)) {
    config.layer_is_moe.assign(config.num_layers, true);
  }
  if (!file.tensors().empty()) {
    for (int layer = 0; layer < config.num_layers; ++layer) {
      config.layer_is_moe[layer] = file.FindTensor(absl::StrCat("blk.", layer, ".ffn_gate_inp.weight")) != nullptr;
    }
  }
  RETURN_IF_ERROR(ValidateModelConfig(config, file.path()));
  return config;
}

}  // namespace expertd::model
