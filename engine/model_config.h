#ifndef EXPERTD_ENGINE_MODEL_CONFIG_H_
#define EXPERTD_ENGINE_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace expertd {

enum class Architecture { kOlmoe, kMixtral, kQwen2Moe, kQwen3Moe };

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

  std::optional<int> bos_token_id;
  std::optional<int> eos_token_id;

  int q_size() const { return num_heads * head_dim; }
  int kv_size() const { return num_kv_heads * head_dim; }
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

// The checks across fields every config must pass, whatever it was read
// from (positive sizes, heads divisible by KV heads, even head_dim, top-k
// within the experts, a layer_is_moe entry per layer, a dense size for dense
// layers): InvalidArgument prefixed with `source`.
absl::Status ValidateModelConfig(const ModelConfig& config, absl::string_view source);

// Parses config.json text; source names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view source);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& config_json_path);

}  // namespace expertd

#endif  // EXPERTD_ENGINE_MODEL_CONFIG_H_
