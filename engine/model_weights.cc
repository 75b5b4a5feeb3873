#include "engine/model_weights.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/dtype.h"

namespace expertd {
namespace {

using kernels::DType;

// Tensor names differ per family; everything else about a layer is shared.
struct TensorNames {
  const char* router;         // relative to the layer's MoE block
  const char* moe_block;      // "mlp" or "block_sparse_moe"
  const char* expert_gate;    // gate_proj / w1
  const char* expert_up;      // up_proj / w3
  const char* expert_down;    // down_proj / w2
};

TensorNames NamesFor(Architecture arch) {
  if (arch == Architecture::kMixtral) return {"gate", "block_sparse_moe", "w1", "w3", "w2"};
  return {"gate", "mlp", "gate_proj", "up_proj", "down_proj"};
}

absl::StatusOr<DType> ComputeDtype(const Checkpoint& checkpoint, const TensorView& view) {
  switch (view.dtype) {
    case TensorDtype::kF32: return DType::kF32;
    case TensorDtype::kBF16: return DType::kBF16;
    case TensorDtype::kF16: return DType::kF16;
    default:
      return absl::UnimplementedError(absl::StrCat(checkpoint.FileOf(view), ": tensor '", view.name, "' has dtype ",
                                                   TensorDtypeName(view.dtype), "; weights must be F32, BF16 or F16"));
  }
}

class Loader {
 public:
  Loader(const Checkpoint& checkpoint) : checkpoint_(checkpoint) {}

  absl::StatusOr<WeightMatrix> Matrix(const std::string& name, int64_t rows, int64_t cols) {
    auto view = checkpoint_.Get(name, {rows, cols});
    if (!view.ok()) return view.status();
    auto dtype = ComputeDtype(checkpoint_, **view);
    if (!dtype.ok()) return dtype.status();
    return WeightMatrix{*dtype, (*view)->data, rows, cols};
  }

  absl::StatusOr<std::vector<float>> Vector(const std::string& name, int64_t size) {
    auto view = checkpoint_.Get(name, {size});
    if (!view.ok()) return view.status();
    auto dtype = ComputeDtype(checkpoint_, **view);
    if (!dtype.ok()) return dtype.status();
    std::vector<float> out(size);
    kernels::ConvertToF32(*dtype, (*view)->data, size, out.data());
    return out;
  }

  absl::StatusOr<FeedForwardWeights> FeedForward(const std::string& prefix, const char* gate, const char* up,
                                                 const char* down, int64_t hidden, int64_t ffn) {
    FeedForwardWeights ff;
    auto g = Matrix(absl::StrCat(prefix, gate, ".weight"), ffn, hidden);
    if (!g.ok()) return g.status();
    auto u = Matrix(absl::StrCat(prefix, up, ".weight"), ffn, hidden);
    if (!u.ok()) return u.status();
    auto d = Matrix(absl::StrCat(prefix, down, ".weight"), hidden, ffn);
    if (!d.ok()) return d.status();
    return FeedForwardWeights{*g, *u, *d};
  }

 private:
  const Checkpoint& checkpoint_;
};

}  // namespace

absl::StatusOr<ModelWeights> ModelWeights::Load(const Checkpoint& checkpoint, const ModelConfig& config) {
  Loader load(checkpoint);
  const TensorNames names = NamesFor(config.architecture);
  const int64_t hidden = config.hidden_size;
  ModelWeights weights;
  ASSIGN_OR_RETURN(weights.embedding, load.Matrix("model.embed_tokens.weight", config.vocab_size, hidden));
  ASSIGN_OR_RETURN(weights.final_norm, load.Vector("model.norm.weight", hidden));
  if (config.tie_word_embeddings && !checkpoint.Has("lm_head.weight")) {
    weights.lm_head = weights.embedding;
  } else {
    ASSIGN_OR_RETURN(weights.lm_head, load.Matrix("lm_head.weight", config.vocab_size, hidden));
  }

  weights.layers.resize(config.num_layers);
  for (int i = 0; i < config.num_layers; ++i) {
    LayerWeights& layer = weights.layers[i];
    const std::string prefix = absl::StrCat("model.layers.", i, ".");
    const std::string attn = prefix + "self_attn.";
    ASSIGN_OR_RETURN(layer.input_norm, load.Vector(prefix + "input_layernorm.weight", hidden));
    ASSIGN_OR_RETURN(layer.post_attention_norm, load.Vector(prefix + "post_attention_layernorm.weight", hidden));
    ASSIGN_OR_RETURN(layer.q, load.Matrix(attn + "q_proj.weight", config.q_size(), hidden));
    ASSIGN_OR_RETURN(layer.k, load.Matrix(attn + "k_proj.weight", config.kv_size(), hidden));
    ASSIGN_OR_RETURN(layer.v, load.Matrix(attn + "v_proj.weight", config.kv_size(), hidden));
    ASSIGN_OR_RETURN(layer.o, load.Matrix(attn + "o_proj.weight", hidden, config.q_size()));
    if (config.attention_bias) {
      ASSIGN_OR_RETURN(layer.q_bias, load.Vector(attn + "q_proj.bias", config.q_size()));
      ASSIGN_OR_RETURN(layer.k_bias, load.Vector(attn + "k_proj.bias", config.kv_size()));
      ASSIGN_OR_RETURN(layer.v_bias, load.Vector(attn + "v_proj.bias", config.kv_size()));
    }
    if (config.qk_norm == QkNorm::kWholeProjection) {
      ASSIGN_OR_RETURN(layer.q_norm, load.Vector(attn + "q_norm.weight", config.q_size()));
      ASSIGN_OR_RETURN(layer.k_norm, load.Vector(attn + "k_norm.weight", config.kv_size()));
    } else if (config.qk_norm == QkNorm::kPerHead) {
      ASSIGN_OR_RETURN(layer.q_norm, load.Vector(attn + "q_norm.weight", config.head_dim));
      ASSIGN_OR_RETURN(layer.k_norm, load.Vector(attn + "k_norm.weight", config.head_dim));
    }

    layer.is_moe = config.layer_is_moe[i];
    const std::string moe = absl::StrCat(prefix, names.moe_block, ".");
    if (!layer.is_moe) {
      ASSIGN_OR_RETURN(layer.dense_mlp, load.FeedForward(prefix + "mlp.", "gate_proj", "up_proj", "down_proj",
                                                         hidden, config.dense_intermediate_size));
      continue;
    }
    ASSIGN_OR_RETURN(layer.router, load.Matrix(moe + names.router + ".weight", config.num_experts, hidden));
    layer.experts.resize(config.num_experts);
    for (int e = 0; e < config.num_experts; ++e) {
      ASSIGN_OR_RETURN(layer.experts[e],
                       load.FeedForward(absl::StrCat(moe, "experts.", e, "."), names.expert_gate, names.expert_up,
                                        names.expert_down, hidden, config.expert_intermediate_size));
    }
    if (config.shared_expert_intermediate_size > 0) {
      ASSIGN_OR_RETURN(layer.shared_expert, load.FeedForward(moe + "shared_expert.", "gate_proj", "up_proj",
                                                             "down_proj", hidden,
                                                             config.shared_expert_intermediate_size));
      ASSIGN_OR_RETURN(layer.shared_expert_gate, load.Matrix(moe + "shared_expert_gate.weight", 1, hidden));
    }
  }
  return weights;
}

}  // namespace expertd
