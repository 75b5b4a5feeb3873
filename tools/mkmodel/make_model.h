#ifndef EXPERTD_TOOLS_MKMODEL_MAKE_MODEL_H_
#define EXPERTD_TOOLS_MKMODEL_MAKE_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace expertd::tools {

// The shape of a generated test model. Defaults make a tiny model that
// loads and runs in milliseconds.
struct MakeModelOptions {
  std::string arch = "olmoe";  // olmoe | mixtral | qwen2_moe | qwen3_moe | deepseek_v2 | gpt_oss
  int layers = 2;
  int hidden = 64;
  int experts = 8;
  int top_k = 2;
  int ffn = 32;          // routed expert intermediate size
  int shared_ffn = 0;    // qwen2_moe shared expert; 0 = 2 * ffn
  int dense_ffn = 0;     // qwen dense layers; 0 = 4 * ffn
  std::vector<int> dense_layers;  // qwen: mlp_only_layers
  int heads = 4;
  int kv_heads = 2;
  int head_dim = 0;      // 0 = hidden / heads
  int vocab = 512;
  int max_position = 4096;
  std::string dtype = "f32";  // f32 | bf16 | f16
  bool norm_topk_prob = true;  // ignored by mixtral (always normalises)
  bool tie_embeddings = false;
  // For predictor tests: every MoE layer gets the same router and the same
  // post-attention norm, and attention and expert outputs are zero, so the
  // hidden state never changes and layer l's gate input routed through layer
  // l+1's router predicts layer l+1 exactly.
  bool shared_router = false;
  bool static_residual = false;
  // deepseek_v2: multi-head latent attention, shared experts, dense first
  // layers and its routing variants (heads, ffn, dense_ffn as above;
  // kv_heads and head_dim are not used).
  int q_lora_rank = 0;  // 0: a plain q_proj (q_lora_rank null, as V2-Lite)
  int kv_lora_rank = 32;
  int qk_nope_head_dim = 16;
  int qk_rope_head_dim = 8;
  int v_head_dim = 16;
  int first_dense_layers = 1;  // first_k_dense_replace
  int shared_experts = 1;      // n_shared_experts, each of ffn
  int n_group = 0;             // > 0: topk_method group_limited_greedy
  int topk_group = 0;
  float routed_scaling_factor = 1.0f;
  float yarn_factor = 0.0f;  // > 0: rope_scaling yarn (mscale 0.707 as V2-Lite)
  int yarn_original_max_position = 64;
  // gpt_oss: layers alternate sliding (first) and full attention; every
  // projection has a bias, each head a sink logit; the experts are stored
  // fused as HF ships them (gate_up_proj [E][hidden][2 ffn] with gate and up
  // interleaved, down_proj [E][ffn][hidden]); rope_scaling is YaRN
  // (yarn_factor, 0 = 32 as the real models; truncate false).
  int sliding_window = 4;  // small, so a short test prompt outgrows it
  // The clamp of the experts' SwiGLU; 7 in the real models, where
  // activations are large. Test activations are O(1): 1 makes it bite.
  float swiglu_limit = 1.0f;
  // gpt_oss: the experts as the released checkpoints ship them,
  // quantization_config quant_method "mxfp4": gate_up_proj_blocks/_scales
  // and down_proj_blocks/_scales (U8; [out][in] per expert), random E2M1
  // codes with exponents near 2^-5, instead of dtype's fused tensors.
  bool mxfp4_experts = false;
  uint64_t seed = 1;
  // A chat template (Jinja source) for tokenizer_config.json; "" = none.
  // Every "<|name|>" literal in it also becomes a special token of the
  // vocabulary, so a publisher's template (Llama 3's <|start_header_id|>,
  // Qwen's <|im_start|>) tokenizes its markers whole, as on the real model.
  std::string chat_template;
};

// Writes config.json, model.safetensors, tokenizer.json and
// tokenizer_config.json of a random-weight model to out_dir (created if
// needed). The same options always give the same bytes. Weights are scaled
// (1/sqrt(fan-in), norms near 1) so activations stay O(1) through the layers,
// and router weights are larger so routing is decisive, not uniform.
absl::Status MakeModel(const MakeModelOptions& options, const std::string& out_dir);

}  // namespace expertd::tools

#endif  // EXPERTD_TOOLS_MKMODEL_MAKE_MODEL_H_
