#ifndef EXPERTD_MODEL_GGUF_MODEL_CONFIG_H_
#define EXPERTD_MODEL_GGUF_MODEL_CONFIG_H_

// A model's hyperparameters from a GGUF file's metadata, in llama.cpp's
// naming, as the same ModelConfig config.json gives (model_config.h).
//
// The six families and what each reads beyond the shared keys
// ({arch}.block_count, .embedding_length, .context_length,
// .attention.head_count[_kv], .attention.key_length, .expert_count,
// .expert_used_count, .rope.freq_base, .attention.layer_norm_rms_epsilon):
//   olmoe     expert size = .feed_forward_length; QK-norm over the whole
//             projection; optional .attention.clamp_kqv
//   qwen2moe  expert size = .expert_feed_forward_length, shared expert
//             = .expert_shared_feed_forward_length, dense = .feed_forward_length;
//             q/k/v biases
//   qwen3moe  as qwen2moe without the shared expert; per-head QK-norm
//   llama     with .expert_count: Mixtral; expert size = .feed_forward_length
//   gpt-oss   expert size = .expert_feed_forward_length; .attention.sliding_window
//             and .attention.sliding_window_pattern (flags or a period;
//             absent: even layers slide); YaRN from .rope.scaling.{type,
//             factor,original_context_length,yarn_beta_fast,yarn_beta_slow,
//             yarn_attn_factor}, its ramp unrounded as gpt-oss's (HF's
//             truncate false; llama.cpp rounds it); sinks, biases and the
//             SwiGLU clamp (alpha 1.702, limit 7, built into llama.cpp's
//             graph, no key) always
//   deepseek2 DeepSeek-V2: with attn_kv_b whole, .attention.key_length =
//             nope + rope and .value_length = v; with attn_k_b/attn_v_b
//             (llama.cpp's converter now), .attention.key_length_mla and
//             .value_length_mla; .rope.dimension_count = rope, .attention.{q,kv}_lora_rank,
//             .leading_dense_block_count, .expert_shared_count,
//             .expert_weights_scale/_norm, .expert_group_count/_used_count
//             (V2's rule: a group scores its best expert), softmax gating
//             only, YaRN with .rope.scaling.yarn_log_multiplier
// GGUF carries no norm_topk_prob: each family gets the value llama.cpp
// computes it with (olmoe and qwen2moe off, qwen3moe and Mixtral on) unless
// .expert_weights_norm says otherwise. What metadata cannot say is read from
// the tensors: the LM head is tied when output.weight is absent, a layer is
// dense when it has no router (blk.N.ffn_gate_inp.weight), and OLMoE and
// Qwen3-MoE have attention biases when blk.0.attn_q.bias exists.

#include "absl/status/statusor.h"
#include "model/model_config.h"
#include "formats/gguf_file.h"

namespace expertd::model {

// Errors name the file and the key: NotFound for a missing required key,
// InvalidArgument for a value of the wrong type or out of range, Unimplemented
// for an architecture or feature expertd does not run (rope scaling other
// than gpt-oss's YaRN, per-layer head counts or sizes, key and value lengths
// that differ).
absl::StatusOr<ModelConfig> ModelConfigFromGguf(const formats::GgufFile& file);

}  // namespace expertd::model

#endif  // EXPERTD_MODEL_GGUF_MODEL_CONFIG_H_
