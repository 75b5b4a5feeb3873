#ifndef EXPERTD_MODEL_GGUF_TENSOR_SOURCE_H_
#define EXPERTD_MODEL_GGUF_TENSOR_SOURCE_H_

// A GGUF file's tensors under the HF names the weight loader asks for
// (tensor_source.h), in llama.cpp's naming:
//
//   model.embed_tokens.weight              token_embd.weight
//   model.norm.weight                      output_norm.weight
//   lm_head.weight                         output.weight (absent: tied)
//   model.layers.N.input_layernorm         blk.N.attn_norm
//     .post_attention_layernorm            blk.N.ffn_norm
//     .self_attn.{q,k,v}_proj (+ .bias)    blk.N.attn_{q,k,v}
//     .self_attn.o_proj                    blk.N.attn_output
//     .self_attn.{q,k}_norm                blk.N.attn_{q,k}_norm
//     .mlp.gate / .block_sparse_moe.gate   blk.N.ffn_gate_inp (the router)
//     .<moe>.experts.E.{gate,up,down}_proj blk.N.ffn_{gate,up,down}_exps, expert E
//       (Mixtral's w1, w3, w2)             of the stack [experts][rows][cols]; older
//                                          Mixtral files' blk.N.ffn_{gate,up,down}.E
//     .mlp.shared_expert.{gate,up,down}_proj  blk.N.ffn_{gate,up,down}_shexp
//     .mlp.shared_expert_gate              blk.N.ffn_gate_inp_shexp ([hidden] for [1][hidden])
//     .mlp.{gate,up,down}_proj (dense)     blk.N.ffn_{gate,up,down}
//   gpt-oss (llama.cpp's "gpt-oss"):
//     .post_attention_layernorm            blk.N.post_attention_norm
//     .self_attn.o_proj.bias               blk.N.attn_output.bias
//     .self_attn.sinks                     blk.N.attn_sinks.weight
//     .mlp.router (.weight, .bias)         blk.N.ffn_gate_inp
//     .mlp.experts.E.{gate,up,down}_proj   blk.N.ffn_{gate,up,down}_exps, expert E
//     .mlp.experts.{gate,up,down}_proj_bias  blk.N.ffn_{gate,up,down}_exps.bias
//   DeepSeek-V2 (llama.cpp's "deepseek2", kv_b whole):
//     .self_attn.q_a_proj, .q_a_layernorm, .q_b_proj  blk.N.attn_q_a, attn_q_a_norm, attn_q_b
//     .self_attn.kv_a_proj_with_mqa, .kv_a_layernorm  blk.N.attn_kv_a_mqa, attn_kv_a_norm
//     .self_attn.kv_b_proj                 blk.N.attn_kv_b, or reassembled from
//       blk.N.attn_k_b [heads][rank][nope] (transposed) and attn_v_b [heads][v][rank]
//       as llama.cpp's converter splits it (F32, F16, BF16)
//     .mlp.shared_experts.{gate,up,down}_proj  blk.N.ffn_{gate,up,down}_shexp
//   HF fuses gpt-oss's experts (gate_up_proj, [in][out], gate and up
//   interleaved); llama.cpp splits and transposes them, so the weight loader
//   asks a GGUF for the split names above, which are not HF's (HF has no
//   per-expert gpt-oss tensors) but follow its other families.
//
// One expert of a stack is a byte range of it (rows of whole blocks, so
// every type slices). llama.cpp's "llama" graph (Mixtral) rotates adjacent
// pairs of each head where HF's rotates its two halves, and its converter
// reorders the rows of attn_q and attn_k to match; those rows are put back in
// HF's order as they are read (a row permutation, so any type), so the
// forward pass runs the HF model. Types: F32, F16, BF16, Q8_0, Q4_0, Q4_K,
// Q5_K, Q6_K, MXFP4 (gpt-oss's experts); any other is refused by Get naming
// the tensor and type.
//
// Tensor bytes are read with pread from a descriptor, not through the
// GgufFile's mapping, so a file truncated while the weights are copied fails
// the load (Aborted, as the safetensors loader) rather than faulting.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <xxhash.h>

#include "absl/status/statusor.h"
#include "model/model_config.h"
#include "model/tensor_source.h"
#include "formats/gguf_file.h"

namespace expertd::model {

class GgufTensorSource : public TensorSource {
 public:
  // `config` is the one ModelConfigFromGguf made of the same file: its
  // architecture and head counts say which rows are permuted.
  GgufTensorSource(std::shared_ptr<const formats::GgufFile> file, const ModelConfig& config)
      : file_(std::move(file)), config_(config) {}

  const formats::GgufFile& file() const { return *file_; }
  const std::string& path() const override { return file_->path(); }
  bool Has(const std::string& name) const override;
  absl::StatusOr<SourceTensor> Get(const std::string& name, const std::vector<int64_t>& shape) const override;
  absl::StatusOr<std::vector<FileReadStats>> ReadTensors(absl::Span<const TensorRead> reads) const override;
  // Inside GgufFile's own mapping of the file, which the owner keeps.
  const std::byte* MappedBytes(const SourceTensor& tensor) const override;
  std::shared_ptr<const void> MappingOwner() const override { return file_; }

  // The GGUF tensor an HF name stands for: its name, the expert of a stack
  // (-1: the whole tensor) and the permuted heads (0: none). Nullopt for a
  // name with no GGUF counterpart.
  struct Mapping {
    std::string gguf_name;
    int expert = -1;
    int permuted_heads = 0;
    // DeepSeek's kv_b from llama.cpp's attn_k_b (gguf_name) and attn_v_b.
    bool split_kv_b = false;
  };
  std::optional<Mapping> Map(const std::string& hf_name) const;

 private:
  // kv_b_proj from attn_k_b (`k_b`, of type `dtype`) and attn_v_b.
  absl::StatusOr<SourceTensor> SplitKvB(const std::string& name, const std::vector<int64_t>& shape,
                                        const formats::GgufTensorInfo& k_b, DType dtype) const;
  absl::Status ReadSplitKvB(int fd, const SourceTensor& tensor, std::byte* destination, XXH64_state_t* hash,
                            FileReadStats& stats) const;

  std::shared_ptr<const formats::GgufFile> file_;
  ModelConfig config_;
};

}  // namespace expertd::model

#endif  // EXPERTD_MODEL_GGUF_TENSOR_SOURCE_H_
