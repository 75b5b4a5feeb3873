#ifndef EXPERTD_ENGINE_MODEL_WEIGHTS_H_
#define EXPERTD_ENGINE_MODEL_WEIGHTS_H_

#include <cstddef>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/checkpoint.h"
#include "engine/model_config.h"
#include "engine/tensor_source.h"
#include "io/aligned_buffer.h"
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
  // Multi-head latent attention (ModelConfig::mla): q above is the plain
  // q_proj when q_lora_rank is 0, else q_a -> q_a_norm -> q_b; k and v are
  // unused: kv_a gives the latent and the RoPE key, kv_b expands the latent
  // to each head's [nope key | value].
  WeightMatrix q_a, q_b;    // [q_lora_rank][hidden], [heads * qk_head_dim][q_lora_rank]
  WeightMatrix kv_a, kv_b;  // [kv_lora_rank + rope][hidden], [heads * (nope + v)][kv_lora_rank]
  std::vector<float> q_a_norm, kv_a_norm;

  bool is_moe = true;
  WeightMatrix router;                      // [num_experts][hidden]
  std::vector<FeedForwardWeights> experts;  // [num_experts], routed
  std::optional<FeedForwardWeights> shared_expert;
  WeightMatrix shared_expert_gate;  // [1][hidden], with a gated shared_expert (Qwen2-MoE)
  FeedForwardWeights dense_mlp;     // when !is_moe
};

struct WeightLoadOptions {
  // Whether routed experts are read into memory. False for a model whose
  // experts will come from a packed expert file through the cache: the load
  // then reads and holds the dense weights only (attention, norms, routers,
  // shared experts, embedding and LM head: a few percent of an MoE model),
  // and the experts' matrices carry shape and dtype but no data, so such a
  // model runs only with an ExpertSource over the packed file.
  // ReadRoutedExpert reads an expert when one is needed (packing).
  bool resident_experts = true;
};

// Every weight of a model, in memory the struct owns. Matrices keep their
// stored dtype and are copied once at load into `storage`; small vectors
// (norms, biases) are converted to f32 copies. Nothing points into the
// checkpoint's files afterwards, so a file truncated or rewritten under a
// running model can neither crash it nor change what it computes.
struct ModelWeights {
  WeightMatrix embedding;  // [vocab][hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;
  WeightMatrix lm_head;  // [vocab][hidden]; the embedding when tied

  // The bytes every matrix above points into: one anonymous mapping (huge
  // pages advised), each matrix on a 64-byte boundary. The kernels load
  // unaligned (LoadU), so the alignment is for whole cache lines, not for
  // correctness.
  io::AlignedBuffer storage;

  // Resolves and validates every tensor the config needs: presence, shape
  // and a usable dtype (f32, bf16, f16 from safetensors; those and the GGML
  // block formats from GGUF), before reading any: errors name the file and
  // tensor. Then reads them (TensorSource::ReadTensors), filling read_stats
  // (when not null) with one entry per file read. Tensors are asked for by
  // their HF names; a GGUF source maps them (gguf_tensor_source.h).
  static absl::StatusOr<ModelWeights> Load(const TensorSource& source, const ModelConfig& config,
                                           const WeightLoadOptions& options = {},
                                           std::vector<FileReadStats>* read_stats = nullptr);
  static absl::StatusOr<ModelWeights> Load(const Checkpoint& checkpoint, const ModelConfig& config,
                                           const WeightLoadOptions& options = {},
                                           std::vector<FileReadStats>* read_stats = nullptr);
};

// Routed expert `expert` of MoE layer `layer`, validated as Load validates it
// and read from the checkpoint into `storage` (resized to fit), which the
// returned matrices point into: for packing the experts of a model loaded
// without resident experts.
absl::StatusOr<FeedForwardWeights> ReadRoutedExpert(const TensorSource& source, const ModelConfig& config,
                                                    int layer, int expert, std::vector<std::byte>& storage);
absl::StatusOr<FeedForwardWeights> ReadRoutedExpert(const Checkpoint& checkpoint, const ModelConfig& config,
                                                    int layer, int expert, std::vector<std::byte>& storage);

}  // namespace expertd

#endif  // EXPERTD_ENGINE_MODEL_WEIGHTS_H_
