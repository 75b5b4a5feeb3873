#ifndef EXPERTD_ENGINE_MODEL_WEIGHTS_H_
#define EXPERTD_ENGINE_MODEL_WEIGHTS_H_

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "engine/model_config.h"
#include "kernels/cpu/matmul.h"

namespace expertd {

using kernels::WeightMatrix;

// One SwiGLU feed-forward block: down(silu(gate x) * up x).
struct FeedForwardWeights {
  WeightMatrix gate;  // [ffn][hidden]
  WeightMatrix up;    // [ffn][hidden]
  WeightMatrix down;  // [hidden][ffn]
};

struct LayerWeights {
  std::vector<float> input_norm;           // [hidden]
  std::vector<float> post_attention_norm;  // [hidden]
  WeightMatrix q, k, v, o;
  std::vector<float> q_bias, k_bias, v_bias;  // empty without attention_bias
  std::vector<float> q_norm, k_norm;          // empty without QK-norm

  bool is_moe = true;
  WeightMatrix router;                      // [num_experts][hidden]
  std::vector<FeedForwardWeights> experts;  // [num_experts], routed
  std::optional<FeedForwardWeights> shared_expert;
  WeightMatrix shared_expert_gate;  // [1][hidden], with shared_expert
  FeedForwardWeights dense_mlp;     // when !is_moe
};

// Views of every weight of a model. Matrices point into the checkpoint's
// mappings in their stored dtype; small vectors (norms, biases) are
// converted to f32 copies once at load.
struct ModelWeights {
  WeightMatrix embedding;  // [vocab][hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  WeightMatrix lm_head;  // [vocab][hidden]; the embedding when tied

  // Resolves and validates every tensor the config needs: presence, shape
  // and a usable dtype (f32, bf16, f16). Errors name the file and tensor.
  static absl::StatusOr<ModelWeights> Load(const Checkpoint& checkpoint, const ModelConfig& config);
};

}  // namespace expertd

#endif  // EXPERTD_ENGINE_MODEL_WEIGHTS_H_
