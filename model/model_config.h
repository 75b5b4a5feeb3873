#ifndef EXPERTD_MODEL_MODEL_CONFIG_H_
#define EXPERTD_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace expertd::model {

enum class Architecture { kOlmoe, kMixtral, kQwen2Moe, kQwen3Moe, kDeepseekV2, kGptOss };

// Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434 §2.1): queries
// from a low-rank projection (or a plain q_proj when q_lora_rank is 0), keys
// and values from one compressed latent of kv_lora_rank per position plus
// one RoPE key part shared by every head. Each head's query and key are
// [qk_nope_head_dim | qk_rope_head_dim]; its value is v_head_dim wide.
struct MlaConfig {
  int q_lora_rank = 0;  // 0: the query is a plain q_proj (V2-Lite)
  int kv_lora_rank = 0;
  int qk_nope_head_dim = 0;
  int qk_rope_head_dim = 0;
  int v_head_dim = 0;
  int qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // What the KV cache keeps per position: the normalised latent, then the
  // rotated RoPE key part.
  int latent_size() const { return kv_lora_rank + qk_rope_head_dim; }
  // The epsilon of q_a_layernorm and kv_a_layernorm: DeepSeek's code (and
  // HF's) builds them without the config's rms_norm_eps, so they keep
  // RMSNorm's default whatever the config says (the released V2 configs say
  // 1e-6 too; a test model with 1e-5 showed the difference, 1e-5 relative in
  // the logits against transformers).
  static constexpr float kLatentNormEps = 1e-6f;
};

// YaRN RoPE scaling (arXiv:2309.00071) as HF's _compute_yarn_parameters
// reads config.json's rope_scaling.
struct YarnRope {
  float factor = 1.0f;
  int original_max_position_embeddings = 0;
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  float mscale = 0.0f;          // 0: absent
  float mscale_all_dim = 0.0f;  // 0: absent
  std::optional<float> attention_factor;
  // Whether the ramp's ends are rounded out to whole dimensions (HF's
  // rope_parameters "truncate", default true; gpt-oss says false).
  bool truncate = true;
};

// gpt-oss's expert activation (HF GptOssExperts._apply_gate): gate clamped
// from above and up on both sides to `limit`, then
// (up + 1) * gate * sigmoid(alpha * gate).
struct ClampedSwiglu {
  float alpha = 1.702f;
  float limit = 7.0f;
};

// How a DeepSeek router picks its experts among the softmax scores.
enum class TopkMethod {
  kGreedy,              // the k best of all experts
  kGroupLimitedGreedy,  // the k best within the topk_group groups whose best expert scores highest
};

// Where the architecture normalises queries and keys before RoPE.
enum class QkNorm {
  kNone,
  kWholeProjection,  // OLMoE: RMSNorm over the full q (and k) projection
  kPerHead,          // Qwen3-MoE: RMSNorm over each head, weight [head_dim]
};

// The subset of an HF config.json that the forward pass depends on, with the
// per-family defaults resolved so the engine never looks at family names.
struct ModelConfig {
  Architecture architecture = Architecture::kOlmoe;
  std::string architecture_name;  // as in config.json, e.g. "OlmoeForCausalLM"

  int vocab_size = 0;
  int hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_position_embeddings = 0;

  int num_experts = 0;
  int experts_per_token = 0;  // the model's native top-k
  int expert_intermediate_size = 0;
  int shared_expert_intermediate_size = 0;  // 0: no shared expert
  int dense_intermediate_size = 0;          // MLP of non-MoE layers (Qwen mlp_only_layers)
  // After top-k, rescale the chosen experts' probabilities to sum to one.
  bool norm_topk_prob = false;
  std::vector<bool> layer_is_moe;  // [num_layers]

  QkNorm qk_norm = QkNorm::kNone;
  bool attention_bias = false;  // biases on q, k and v projections
  std::optional<float> clip_qkv;
  float rope_theta = 10000.0f;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;

  // DeepSeek-V2. Routing: after top-k (and norm_topk_prob), every gate
  // weight is multiplied by routed_scaling_factor.
  std::optional<MlaConfig> mla;
  std::optional<YarnRope> yarn;  // RoPE scaling; absent: plain RoPE
  TopkMethod topk_method = TopkMethod::kGreedy;
  int n_group = 1;
  int topk_group = 1;
  float routed_scaling_factor = 1.0f;
  // Qwen2-MoE scales its shared expert by sigmoid(gate . x); DeepSeek adds
  // its shared experts as they are.
  bool shared_expert_gated = false;

  // gpt-oss. The router is a linear layer with a bias and its top-k gate
  // weights are the softmax over the k chosen logits, which is the softmax
  // over all of them renormalised over the k (norm_topk_prob true). Every
  // projection has a bias: q/k/v (attention_bias), o_proj, the router and
  // each expert's gate, up and down.
  std::optional<ClampedSwiglu> clamped_swiglu;  // the experts' activation; absent: SiLU(gate) * up
  bool attention_output_bias = false;
  bool router_bias = false;
  bool expert_bias = false;
  // A learned logit per query head that joins each row's softmax as one more
  // column and is then dropped (HF eager_attention_forward's "sinks").
  bool attention_sinks = false;
  // layer_types: a sliding layer attends to the last sliding_window
  // positions only (its own included), a full layer to all of them.
  int sliding_window = 0;
  std::vector<bool> layer_is_sliding;  // [num_layers], or empty: every layer full

  // 0: every cached position; else the positions (p - window, p].
  int AttentionWindow(int layer) const {
    return layer < static_cast<int>(layer_is_sliding.size()) && layer_is_sliding[layer] ? sliding_window : 0;
  }
  std::optional<int> bos_token_id;
  std::optional<int> eos_token_id;

  int q_size() const { return mla ? num_heads * mla->qk_head_dim() : num_heads * head_dim; }
  // Floats per position per layer in each of the KV cache's key and value
  // rows. With MLA the cache keeps the latent as the "key" row and has no
  // value rows (kv_has_values()).
  int kv_size() const { return mla ? mla->latent_size() : num_kv_heads * head_dim; }
  bool kv_has_values() const { return !mla.has_value(); }
};

absl::string_view ArchitectureName(Architecture architecture);

// The longest context accepted (max_position_embeddings): 16M positions,
// beyond any released MoE model; a larger value is refused by name rather
// than wrapping an int.
inline constexpr int kMaxPositions = 1 << 24;
// The largest config.json read (1 MiB; real ones are a few KiB).
inline constexpr uint64_t kMaxConfigJsonBytes = uint64_t{1} << 20;

// The limits ParseModelConfig holds config.json's values to; other sources
// of a config (GGUF metadata) hold theirs to the same.
inline constexpr int64_t kMaxModelVocab = int64_t{1} << 24;
inline constexpr int64_t kMaxModelWidth = int64_t{1} << 20;  // hidden and intermediate sizes
inline constexpr int64_t kMaxModelLayers = 4096;
inline constexpr int64_t kMaxModelHeads = 4096;
inline constexpr int64_t kMaxModelHeadDim = 4096;
inline constexpr int64_t kMaxModelExperts = 65536;
// Expert groups of group-limited routing (DeepSeek-V2 has 8).
inline constexpr int kMaxRoutingGroups = 64;

// The checks across fields every config must pass, whatever it was read
// from (positive sizes, heads divisible by KV heads, even head_dim, top-k
// within the experts, a layer_is_moe entry per layer, a dense size for dense
// layers): InvalidArgument prefixed with `source`.
absl::Status ValidateModelConfig(const ModelConfig& config, absl::string_view source);

// Parses config.json text; source names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& config_json_path);

}  // namespace expertd::model

#endif  // EXPERTD_MODEL_MODEL_CONFIG_H_
