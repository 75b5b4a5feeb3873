#ifndef EXPERTD_MODEL_MODEL_WEIGHTS_H_
#define EXPERTD_MODEL_MODEL_WEIGHTS_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "model/checkpoint.h"
#include "model/model_config.h"
#include "model/tensor_source.h"
#include "io/aligned_buffer.h"
#include "kernels/cpu/matmul.h"

namespace expertd::model {

using kernels::WeightMatrix;

// One SwiGLU feed-forward block: down(silu(gate x) * up x).
struct FeedForwardWeights {
  WeightMatrix gate;  // [ffn][hidden]
  WeightMatrix up;    // [ffn][hidden]
  WeightMatrix down;  // [hidden][ffn]
};

// What a routed expert of gpt-oss has beyond its three matrices: biases
// (LayerWeights keeps them, resident) and the clamped SwiGLU. All null: a
// plain SwiGLU block.
struct ExpertExtras {
  const float* gate_bias = nullptr;  // [ffn]
  const float* up_bias = nullptr;    // [ffn]
  const float* down_bias = nullptr;  // [hidden]
  const ClampedSwiglu* clamped_swiglu = nullptr;
};

struct LayerWeights {
  std::vector<float> input_norm;           // [hidden]
  std::vector<float> post_attention_norm;  // [hidden]
  WeightMatrix q, k, v, o;
  std::vector<float> q_bias, k_bias, v_bias;  // empty without attention_bias
  std::vector<float> o_bias;                  // [hidden]; empty without attention_output_bias
  std::vector<float> sinks;                   // [heads]: attention sinks (gpt-oss); empty without
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
  std::vector<float> router_bias;           // [num_experts]; empty without ModelConfig::router_bias
  // gpt-oss's expert biases, [num_experts][ffn] (gate, up, de-interleaved)
  // and [num_experts][hidden] (down); empty without ModelConfig::expert_bias.
  // They stay resident here, beside the router, whatever tier the experts'
  // matrices are in: a few KiB per layer (gpt-oss-20b: 32 x (2 x 2880 +
  // 2880) floats = 1.1 MiB for all 24 layers), not worth a second layout of
  // the packed expert file, and every path an expert takes (resident,
  // packed file, DRAM or VRAM cache) finds them by (layer, expert).
  std::vector<float> expert_gate_bias, expert_up_bias, expert_down_bias;
  // The extras of routed expert `expert` (null biases when there are none).
  ExpertExtras ExtrasOf(int expert, const ModelConfig& config) const {
    ExpertExtras extras;
    if (config.clamped_swiglu) extras.clamped_swiglu = &*config.clamped_swiglu;
    if (expert_gate_bias.empty()) return extras;
    const size_t ffn = static_cast<size_t>(config.expert_intermediate_size);
    extras.gate_bias = expert_gate_bias.data() + expert * ffn;
    extras.up_bias = expert_up_bias.data() + expert * ffn;
    extras.down_bias = expert_down_bias.data() + static_cast<size_t>(expert) * config.hidden_size;
    return extras;
  }
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
  // Whether matrices stored exactly as the engine computes with them point
  // into a read-only mapping of the model file instead of being copied
  // (GGUF files; a safetensors checkpoint is always copied, as are permuted,
  // split or repacked tensors). The pages are faulted in at load. A mapped
  // model shares the page cache with other processes on the same file
  // (llama.cpp maps by default) and starts again without re-reading it, but
  // it shares the file's fate: truncating or rewriting the file in place
  // while the model runs kills it (SIGBUS) or changes its weights
  // (formats/mapped_file.h). Off by default: copies cannot be hurt that way.
  bool map_weights = false;
  // Every matrix gets kernels::WeightMatrix::bf16_activations: bf16 ones
  // then multiply with activations rounded to bf16 on CPUs with AVX-512
  // BF16 (llama.cpp's arithmetic; prefill on wide experts ~1.7x faster).
  // Off by default: f32 activations keep every product exact.
  bool bf16_activations = false;
};

// Every weight of a model, in memory the struct owns. Matrices keep their
// stored dtype and are copied once at load into `storage`; small vectors
// (norms, biases) are converted to f32 copies. Nothing points into the
// checkpoint's files afterwards, so a file truncated or rewritten under a
// running model can neither crash it nor change what it computes; unless
// the load mapped the matrices (WeightLoadOptions::map_weights), which then
// point into `mapping`.
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
  // With WeightLoadOptions::map_weights: keeps the file mapped that some
  // matrices point into (null when none does).
  std::shared_ptr<const void> mapping;

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

}  // namespace expertd::model

#endif  // EXPERTD_MODEL_MODEL_WEIGHTS_H_
