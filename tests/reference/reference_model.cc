#include "tests/reference/reference_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/checkpoint.h"
#include "model/model_config.h"
#include "engine/roster.h"

namespace expertd::reference {
namespace {

using Vector = std::vector<double>;
using Matrix = std::vector<Vector>;  // [rows][cols]

double HalfBitsToDouble(uint16_t bits, bool is_bf16) {
  if (is_bf16) {
    uint32_t f32 = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &f32, 4);
    return value;
  }
  // IEEE half: sign, 5-bit exponent (bias 15), 10-bit mantissa.
  const int sign = (bits >> 15) ? -1 : 1;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 31) return mantissa ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

Vector ToDoubles(const formats::TensorInfo& tensor, const std::vector<std::byte>& bytes) {
  Vector out(tensor.num_elements());
  for (size_t i = 0; i < out.size(); ++i) {
    if (tensor.dtype == formats::SafetensorsDtype::kF32) {
      float value;
      std::memcpy(&value, bytes.data() + 4 * i, 4);
      out[i] = value;
    } else {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      out[i] = HalfBitsToDouble(bits, tensor.dtype == formats::SafetensorsDtype::kBF16);
    }
  }
  return out;
}

class Weights {
 public:
  explicit Weights(const model::Checkpoint& checkpoint) : checkpoint_(checkpoint) {}
  absl::StatusOr<Vector> Vec(const std::string& name) {
    ASSIGN_OR_RETURN(const formats::TensorInfo* tensor, checkpoint_.Get(name));
    std::vector<std::byte> bytes(tensor->size_bytes);
    RETURN_IF_ERROR(checkpoint_.Read(*tensor, bytes.data()));
    return ToDoubles(*tensor, bytes);
  }
  bool Has(const std::string& name) const { return checkpoint_.Has(name); }
  absl::StatusOr<std::vector<uint8_t>> Bytes(const std::string& name) {
    ASSIGN_OR_RETURN(const formats::TensorInfo* tensor, checkpoint_.Get(name));
    std::vector<uint8_t> bytes(tensor->size_bytes);
    RETURN_IF_ERROR(checkpoint_.Read(*tensor, reinterpret_cast<std::byte*>(bytes.data())));
    return bytes;
  }
  absl::StatusOr<Matrix> Mat(const std::string& name) {
    ASSIGN_OR_RETURN(const formats::TensorInfo* tensor, checkpoint_.Get(name));
    const int64_t rows = tensor->shape[0];
    const int64_t cols = tensor->shape[1];
    ASSIGN_OR_RETURN(Vector flat, Vec(name));
    Matrix m(rows, Vector(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) m[r][c] = flat[r * cols + c];
    }
    return m;
  }

 private:
  const model::Checkpoint& checkpoint_;
};

Vector Apply(const Matrix& w, const Vector& x) {
  Vector y(w.size(), 0.0);
  for (size_t r = 0; r < w.size(); ++r) {
    for (size_t c = 0; c < x.size(); ++c) y[r] += w[r][c] * x[c];
  }
  return y;
}

Vector RmsNorm(const Vector& x, const Vector& weight, double eps) {
  double mean_square = 0.0;
  for (double v : x) mean_square += v * v;
  mean_square /= x.size();
  const double scale = 1.0 / std::sqrt(mean_square + eps);
  Vector y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * weight[i];
  return y;
}

double Silu(double x) { return x / (1.0 + std::exp(-x)); }

// HF's rotate_half RoPE on one head.
void Rope(double* head, int head_dim, int position, double theta) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const double inv_freq = 1.0 / std::pow(theta, (2.0 * i) / head_dim);
    const double angle = position * inv_freq;
    const double a = head[i];
    const double b = head[i + half];
    head[i] = a * std::cos(angle) - b * std::sin(angle);
    head[i + half] = b * std::cos(angle) + a * std::sin(angle);
  }
}

struct FeedForward {
  Matrix gate, up, down;
  Vector operator()(const Vector& x) const {
    Vector g = Apply(gate, x);
    Vector u = Apply(up, x);
    for (size_t i = 0; i < g.size(); ++i) g[i] = Silu(g[i]) * u[i];
    return Apply(down, g);
  }
};

absl::StatusOr<FeedForward> LoadFeedForward(Weights& w, const std::string& prefix, const char* gate, const char* up,
                                            const char* down) {
  FeedForward ff;
  ASSIGN_OR_RETURN(ff.gate, w.Mat(absl::StrCat(prefix, gate, ".weight")));
  ASSIGN_OR_RETURN(ff.up, w.Mat(absl::StrCat(prefix, up, ".weight")));
  ASSIGN_OR_RETURN(ff.down, w.Mat(absl::StrCat(prefix, down, ".weight")));
  return ff;
}

// DeepSeek-V2's RoPE: the rotated part's elements pair up as (2i, 2i+1)
// (HF's apply_rotary_emb views them as complex numbers), each pair turned by
// position * inv_freq[i], and both scaled by YaRN's attention factor.
struct DeepseekRope {
  Vector inv_freq;
  double attention_factor = 1.0;
  double softmax_scale = 0.0;  // the attention's, YaRN's mscale included
};

double YarnMscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// dim: the rotated width; score_dim: the query-key width the softmax scale
// comes from (DeepSeek: the rope part and the whole head; gpt-oss: the head
// both times).
DeepseekRope MakeYarnRope(const model::ModelConfig& config, int dim, int score_dim) {
  const double base = config.rope_theta;
  DeepseekRope rope;
  rope.softmax_scale = 1.0 / std::sqrt(static_cast<double>(score_dim));
  for (int i = 0; i < dim / 2; ++i) rope.inv_freq.push_back(1.0 / std::pow(base, 2.0 * i / dim));
  if (!config.yarn) return rope;
  const model::YarnRope& y = *config.yarn;
  // The dimensions whose wavelengths fit in the original context keep their
  // frequency; the longer ones are divided by the factor; a linear ramp
  // between (YaRN's "NTK-by-parts").
  auto correction_dim = [&](double rotations) {
    return dim * std::log(y.original_max_position_embeddings / (rotations * 2 * M_PI)) / (2 * std::log(base));
  };
  // HF rounds the ramp's ends out to whole dimensions unless rope_scaling
  // says truncate: false (gpt-oss).
  double low = correction_dim(y.beta_fast), high = correction_dim(y.beta_slow);
  if (y.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  if (low == high) high += 0.001;
  for (int i = 0; i < dim / 2; ++i) {
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double extrapolation = rope.inv_freq[i];
    const double interpolation = extrapolation / y.factor;
    rope.inv_freq[i] = interpolation * ramp + extrapolation * (1.0 - ramp);
  }
  if (y.attention_factor) {
    rope.attention_factor = *y.attention_factor;
  } else if (y.mscale != 0 && y.mscale_all_dim != 0) {
    rope.attention_factor = YarnMscale(y.factor, y.mscale) / YarnMscale(y.factor, y.mscale_all_dim);
  } else {
    rope.attention_factor = YarnMscale(y.factor, 1.0);
  }
  if (y.mscale_all_dim != 0) {
    const double m = YarnMscale(y.factor, y.mscale_all_dim);
    rope.softmax_scale *= m * m;
  }
  return rope;
}

void InterleavedRope(double* x, const DeepseekRope& rope, int position) {
  for (size_t i = 0; i < rope.inv_freq.size(); ++i) {
    const double angle = position * rope.inv_freq[i];
    const double c = std::cos(angle) * rope.attention_factor;
    const double s = std::sin(angle) * rope.attention_factor;
    const double a = x[2 * i];
    const double b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = a * s + b * c;
  }
}

// HF's rotate_half RoPE (i with i + dim/2) with precomputed frequencies, cos
// and sin scaled by the attention factor (gpt-oss's YaRN).
void RotateHalfRope(double* head, int head_dim, const DeepseekRope& rope, int position) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const double angle = position * rope.inv_freq[i];
    const double c = std::cos(angle) * rope.attention_factor;
    const double sn = std::sin(angle) * rope.attention_factor;
    const double a = head[i];
    const double b = head[i + half];
    head[i] = a * c - b * sn;
    head[i + half] = b * c + a * sn;
  }
}

// Multi-head latent attention as HF's DeepseekV2Attention computes it: the
// latent expanded to full per-head keys and values (the engine attends in
// the latent space instead; the two must agree).
absl::StatusOr<std::vector<Vector>> MlaAttention(Weights& w, const std::string& p, const model::ModelConfig& config,
                                                 const DeepseekRope& rope, const std::vector<Vector>& x) {
  const model::MlaConfig& mla = *config.mla;
  const int n = static_cast<int>(x.size());
  const int heads = config.num_heads;
  const int nope = mla.qk_nope_head_dim, rot = mla.qk_rope_head_dim, qk = mla.qk_head_dim(), vd = mla.v_head_dim;
  const std::string a = p + "self_attn.";
  Matrix wq, wq_a, wq_b;
  Vector q_a_norm;
  if (mla.q_lora_rank > 0) {
    ASSIGN_OR_RETURN(wq_a, w.Mat(a + "q_a_proj.weight"));
    ASSIGN_OR_RETURN(q_a_norm, w.Vec(a + "q_a_layernorm.weight"));
    ASSIGN_OR_RETURN(wq_b, w.Mat(a + "q_b_proj.weight"));
  } else {
    ASSIGN_OR_RETURN(wq, w.Mat(a + "q_proj.weight"));
  }
  ASSIGN_OR_RETURN(Matrix wkv_a, w.Mat(a + "kv_a_proj_with_mqa.weight"));
  ASSIGN_OR_RETURN(Vector kv_a_norm, w.Vec(a + "kv_a_layernorm.weight"));
  ASSIGN_OR_RETURN(Matrix wkv_b, w.Mat(a + "kv_b_proj.weight"));
  ASSIGN_OR_RETURN(Matrix wo, w.Mat(a + "o_proj.weight"));
  // q_a_layernorm and kv_a_layernorm are built without the config's epsilon
  // (DeepseekV2RMSNorm(rank)): RMSNorm's default.
  const double latent_eps = 1e-6;

  std::vector<Vector> q(n), k(n), v(n);  // [heads * qk], [heads * qk], [heads * vd]
  for (int t = 0; t < n; ++t) {
    q[t] = mla.q_lora_rank > 0 ? Apply(wq_b, RmsNorm(Apply(wq_a, x[t]), q_a_norm, latent_eps)) : Apply(wq, x[t]);
    for (int h = 0; h < heads; ++h) InterleavedRope(&q[t][h * qk + nope], rope, t);
    const Vector compressed = Apply(wkv_a, x[t]);
    const Vector latent =
        RmsNorm(Vector(compressed.begin(), compressed.begin() + mla.kv_lora_rank), kv_a_norm, latent_eps);
    Vector k_rot(compressed.begin() + mla.kv_lora_rank, compressed.end());
    InterleavedRope(k_rot.data(), rope, t);
    const Vector expanded = Apply(wkv_b, latent);  // per head [nope | vd]
    k[t].assign(static_cast<size_t>(heads) * qk, 0.0);
    v[t].assign(static_cast<size_t>(heads) * vd, 0.0);
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < nope; ++i) k[t][h * qk + i] = expanded[h * (nope + vd) + i];
      for (int i = 0; i < rot; ++i) k[t][h * qk + nope + i] = k_rot[i];
      for (int i = 0; i < vd; ++i) v[t][h * vd + i] = expanded[h * (nope + vd) + nope + i];
    }
  }
  std::vector<Vector> out(n);
  for (int t = 0; t < n; ++t) {
    Vector attended(static_cast<size_t>(heads) * vd, 0.0);
    for (int h = 0; h < heads; ++h) {
      Vector scores(t + 1);
      for (int s = 0; s <= t; ++s) {
        double dot = 0.0;
        for (int i = 0; i < qk; ++i) dot += q[t][h * qk + i] * k[s][h * qk + i];
        scores[s] = dot * rope.softmax_scale;
      }
      const double top = *std::max_element(scores.begin(), scores.end());
      double total = 0.0;
      for (double& sc : scores) total += (sc = std::exp(sc - top));
      for (int s = 0; s <= t; ++s) {
        for (int i = 0; i < vd; ++i) attended[h * vd + i] += scores[s] / total * v[s][h * vd + i];
      }
    }
    out[t] = Apply(wo, attended);
  }
  return out;
}

// DeepSeek's group-limited greedy: experts form n_group groups of
// consecutive indices; only the topk_group groups with the best single
// probability stay eligible.
void LimitToGroups(const model::ModelConfig& config, Vector& probs) {
  const int per_group = config.num_experts / config.n_group;
  Vector best(config.n_group, 0.0);
  for (int g = 0; g < config.n_group; ++g) {
    best[g] = *std::max_element(probs.begin() + g * per_group, probs.begin() + (g + 1) * per_group);
  }
  std::vector<int> order(config.n_group);
  for (int g = 0; g < config.n_group; ++g) order[g] = g;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return best[a] > best[b]; });
  for (int rank = config.topk_group; rank < config.n_group; ++rank) {
    std::fill(probs.begin() + order[rank] * per_group, probs.begin() + (order[rank] + 1) * per_group, 0.0);
  }
}

// A gpt-oss fused expert tensor in HF's unquantized layout, [E][in][out]:
// as stored, or from its MXFP4 pair (name_blocks [E][out][in / 32][16],
// name_scales [E][out][in / 32]) dequantized as transformers'
// _convert_moe_packed_tensors does: within each group of 32, byte b's low
// nibble is element 2b and its high nibble element 2b + 1, each the FP4
// value of its code times 2^(scale - 127); then transposed.
absl::StatusOr<Vector> FusedExpertTensor(Weights& w, const std::string& name, int experts, int in, int out) {
  if (!w.Has(name + "_blocks")) return w.Vec(name);
  static constexpr double kFp4[16] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                                      -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0};
  ASSIGN_OR_RETURN(std::vector<uint8_t> blocks, w.Bytes(name + "_blocks"));
  ASSIGN_OR_RETURN(std::vector<uint8_t> scales, w.Bytes(name + "_scales"));
  Vector result(static_cast<size_t>(experts) * in * out);
  for (int e = 0; e < experts; ++e) {
    for (int r = 0; r < out; ++r) {
      for (int c = 0; c < in; ++c) {
        const size_t group = (static_cast<size_t>(e) * out + r) * (in / 32) + c / 32;
        const uint8_t byte = blocks[group * 16 + (c % 32) / 2];
        const int code = c % 2 == 0 ? byte & 0x0F : byte >> 4;
        result[(static_cast<size_t>(e) * in + c) * out + r] = std::ldexp(kFp4[code], scales[group] - 127);
      }
    }
  }
  return result;
}

// gpt-oss's MoE block as HF's GptOssMLP computes it, on every row of
// `hidden` (normalised by post_norm here): the router's logits (with bias),
// the top k of them, a softmax over those k alone; each chosen expert from
// the fused tensors as stored (gate_up_proj [E][hidden][2 ffn], gate the
// even and up the odd columns; down_proj [E][ffn][hidden]), with biases and
// the clamped SwiGLU. Roster noise ranks by logit + tau x Gumbel, the
// weights still the softmax over the chosen logits.
absl::StatusOr<std::vector<Vector>> GptOssMoe(Weights& w, const std::string& m, const model::ModelConfig& config, int k,
                                              int layer, const Vector& post_norm, const std::vector<Vector>& hidden,
                                              const ReferenceNoise* noise) {
  const int n = static_cast<int>(hidden.size());
  const int hs = config.hidden_size, ffn = config.expert_intermediate_size, experts = config.num_experts;
  ASSIGN_OR_RETURN(Matrix router, w.Mat(m + "router.weight"));
  ASSIGN_OR_RETURN(Vector router_bias, w.Vec(m + "router.bias"));
  ASSIGN_OR_RETURN(Vector gate_up, FusedExpertTensor(w, m + "experts.gate_up_proj", experts, hs, 2 * ffn));
  ASSIGN_OR_RETURN(Vector gate_up_bias, w.Vec(m + "experts.gate_up_proj_bias"));
  ASSIGN_OR_RETURN(Vector down, FusedExpertTensor(w, m + "experts.down_proj", experts, ffn, hs));
  ASSIGN_OR_RETURN(Vector down_bias, w.Vec(m + "experts.down_proj_bias"));
  const double alpha = config.clamped_swiglu->alpha, limit = config.clamped_swiglu->limit;
  std::vector<Vector> out(n, Vector(hs, 0.0));
  for (int t = 0; t < n; ++t) {
    const Vector x = RmsNorm(hidden[t], post_norm, config.rms_norm_eps);
    Vector logits = Apply(router, x);
    for (int e = 0; e < experts; ++e) logits[e] += router_bias[e];
    Vector score = logits;
    const double tau = noise != nullptr && t == n - 1 ? noise->layer_temperatures[layer] : 0.0;
    if (tau > 0.0) {
      for (int e = 0; e < experts; ++e) score[e] += tau * engine::GumbelNoise(noise->seed, t, layer, noise->sample, e);
    }
    std::vector<int> order(experts);
    for (int e = 0; e < experts; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
    double top = -INFINITY, total = 0.0;
    for (int j = 0; j < k; ++j) top = std::max(top, logits[order[j]]);
    for (int j = 0; j < k; ++j) total += std::exp(logits[order[j]] - top);
    for (int j = 0; j < k; ++j) {
      const int e = order[j];
      const double weight = std::exp(logits[e] - top) / total;
      Vector glu(ffn);
      for (int i = 0; i < ffn; ++i) {
        double gate = gate_up_bias[static_cast<size_t>(e) * 2 * ffn + 2 * i];
        double up = gate_up_bias[static_cast<size_t>(e) * 2 * ffn + 2 * i + 1];
        for (int c = 0; c < hs; ++c) {
          const size_t at = (static_cast<size_t>(e) * hs + c) * 2 * ffn + 2 * i;
          gate += x[c] * gate_up[at];
          up += x[c] * gate_up[at + 1];
        }
        gate = std::min(gate, limit);
        up = std::clamp(up, -limit, limit);
        glu[i] = (up + 1.0) * gate / (1.0 + std::exp(-alpha * gate));
      }
      for (int c = 0; c < hs; ++c) {
        double y = down_bias[static_cast<size_t>(e) * hs + c];
        for (int i = 0; i < ffn; ++i) y += glu[i] * down[(static_cast<size_t>(e) * ffn + i) * hs + c];
        out[t][c] += weight * y;
      }
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<double>>> ReferenceLogits(const std::string& model_dir,
                                                                 const std::vector<int32_t>& tokens, int k,
                                                                 const ReferenceNoise* noise) {
  ASSIGN_OR_RETURN(model::ModelConfig config, model::LoadModelConfig(model_dir + "/config.json"));
  ASSIGN_OR_RETURN(auto checkpoint, model::Checkpoint::Open(model_dir));
  Weights w(*checkpoint);
  if (k == 0) k = config.experts_per_token;
  const bool mixtral = config.architecture == model::Architecture::kMixtral;
  const std::string moe_block = mixtral ? "block_sparse_moe" : "mlp";
  const char* gate_name = mixtral ? "w1" : "gate_proj";
  const char* up_name = mixtral ? "w3" : "up_proj";
  const char* down_name = mixtral ? "w2" : "down_proj";
  const int n = static_cast<int>(tokens.size());
  const int hd = config.head_dim;
  const double eps = config.rms_norm_eps;

  const bool deepseek = config.architecture == model::Architecture::kDeepseekV2;
  const DeepseekRope deepseek_rope =
      deepseek ? MakeYarnRope(config, config.mla->qk_rope_head_dim, config.mla->qk_head_dim()) : DeepseekRope{};
  const bool gpt_oss = config.architecture == model::Architecture::kGptOss;
  // gpt-oss: HF's rotate-half RoPE with YaRN's frequencies, cos and sin
  // scaled by its attention factor.
  const bool yarn_rotate_half = !deepseek && config.yarn.has_value();
  const DeepseekRope yarn_rope = yarn_rotate_half ? MakeYarnRope(config, hd, hd) : DeepseekRope{};

  ASSIGN_OR_RETURN(Matrix embedding, w.Mat("model.embed_tokens.weight"));
  std::vector<Vector> hidden(n);
  for (int t = 0; t < n; ++t) hidden[t] = embedding[tokens[t]];

  for (int layer = 0; layer < config.num_layers; ++layer) {
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    ASSIGN_OR_RETURN(Vector input_norm, w.Vec(p + "input_layernorm.weight"));
    if (deepseek) {
      std::vector<Vector> normed(n);
      for (int t = 0; t < n; ++t) normed[t] = RmsNorm(hidden[t], input_norm, eps);
      ASSIGN_OR_RETURN(std::vector<Vector> attention, MlaAttention(w, p, config, deepseek_rope, normed));
      for (int t = 0; t < n; ++t) {
        for (size_t i = 0; i < attention[t].size(); ++i) hidden[t][i] += attention[t][i];
      }
    } else {  // standard attention
      ASSIGN_OR_RETURN(Matrix wq, w.Mat(p + "self_attn.q_proj.weight"));
      ASSIGN_OR_RETURN(Matrix wk, w.Mat(p + "self_attn.k_proj.weight"));
      ASSIGN_OR_RETURN(Matrix wv, w.Mat(p + "self_attn.v_proj.weight"));
      ASSIGN_OR_RETURN(Matrix wo, w.Mat(p + "self_attn.o_proj.weight"));

      // Attention over the whole sequence, causal.
      std::vector<Vector> q(n), kk(n), v(n);
      for (int t = 0; t < n; ++t) {
        const Vector x = RmsNorm(hidden[t], input_norm, eps);
        q[t] = Apply(wq, x);
        kk[t] = Apply(wk, x);
        v[t] = Apply(wv, x);
        if (config.attention_bias) {
          ASSIGN_OR_RETURN(Vector bq, w.Vec(p + "self_attn.q_proj.bias"));
          ASSIGN_OR_RETURN(Vector bk, w.Vec(p + "self_attn.k_proj.bias"));
          ASSIGN_OR_RETURN(Vector bv, w.Vec(p + "self_attn.v_proj.bias"));
          for (size_t i = 0; i < q[t].size(); ++i) q[t][i] += bq[i];
          for (size_t i = 0; i < kk[t].size(); ++i) kk[t][i] += bk[i];
          for (size_t i = 0; i < v[t].size(); ++i) v[t][i] += bv[i];
        }
        if (config.qk_norm != model::QkNorm::kNone) {
          ASSIGN_OR_RETURN(Vector qn, w.Vec(p + "self_attn.q_norm.weight"));
          ASSIGN_OR_RETURN(Vector kn, w.Vec(p + "self_attn.k_norm.weight"));
          if (config.qk_norm == model::QkNorm::kWholeProjection) {
            q[t] = RmsNorm(q[t], qn, eps);
            kk[t] = RmsNorm(kk[t], kn, eps);
          } else {
            for (int h = 0; h < config.num_heads; ++h) {
              Vector head(q[t].begin() + h * hd, q[t].begin() + (h + 1) * hd);
              head = RmsNorm(head, qn, eps);
              std::copy(head.begin(), head.end(), q[t].begin() + h * hd);
            }
            for (int h = 0; h < config.num_kv_heads; ++h) {
              Vector head(kk[t].begin() + h * hd, kk[t].begin() + (h + 1) * hd);
              head = RmsNorm(head, kn, eps);
              std::copy(head.begin(), head.end(), kk[t].begin() + h * hd);
            }
          }
        }
        if (config.clip_qkv) {
          const double c = *config.clip_qkv;
          for (auto* vec : {&q[t], &kk[t], &v[t]}) {
            for (double& value : *vec) value = std::clamp(value, -c, c);
          }
        }
        for (int h = 0; h < config.num_heads; ++h) {
          if (yarn_rotate_half) {
            RotateHalfRope(&q[t][h * hd], hd, yarn_rope, t);
          } else {
            Rope(&q[t][h * hd], hd, t, config.rope_theta);
          }
        }
        for (int h = 0; h < config.num_kv_heads; ++h) {
          if (yarn_rotate_half) {
            RotateHalfRope(&kk[t][h * hd], hd, yarn_rope, t);
          } else {
            Rope(&kk[t][h * hd], hd, t, config.rope_theta);
          }
        }
      }
      // gpt-oss: a sink logit per head joins each softmax; sliding layers
      // see the last sliding_window positions.
      Vector sinks;
      if (config.attention_sinks) {
        ASSIGN_OR_RETURN(sinks, w.Vec(p + "self_attn.sinks"));
      }
      const int window = config.AttentionWindow(layer);
      const int group = config.num_heads / config.num_kv_heads;
      for (int t = 0; t < n; ++t) {
        Vector attended(config.q_size(), 0.0);
        for (int h = 0; h < config.num_heads; ++h) {
          const int kv_head = h / group;
          const int first = window > 0 ? std::max(0, t - window + 1) : 0;
          Vector scores(t + 1, -INFINITY);
          for (int s = first; s <= t; ++s) {
            double dot = 0.0;
            for (int i = 0; i < hd; ++i) dot += q[t][h * hd + i] * kk[s][kv_head * hd + i];
            scores[s] = dot / std::sqrt(static_cast<double>(hd));
          }
          double top = *std::max_element(scores.begin(), scores.end());
          if (!sinks.empty()) top = std::max(top, sinks[h]);
          double total = sinks.empty() ? 0.0 : std::exp(sinks[h] - top);
          for (int s = first; s <= t; ++s) total += (scores[s] = std::exp(scores[s] - top));
          for (int s = first; s <= t; ++s) {
            for (int i = 0; i < hd; ++i) attended[h * hd + i] += scores[s] / total * v[s][kv_head * hd + i];
          }
        }
        Vector out = Apply(wo, attended);
        if (config.attention_output_bias) {
          ASSIGN_OR_RETURN(Vector bo, w.Vec(p + "self_attn.o_proj.bias"));
          for (size_t i = 0; i < out.size(); ++i) out[i] += bo[i];
        }
        for (size_t i = 0; i < out.size(); ++i) hidden[t][i] += out[i];
      }
    }

    // Feed-forward: a routed MoE (plus a shared expert), or a dense MLP.
    ASSIGN_OR_RETURN(Vector post_norm, w.Vec(p + "post_attention_layernorm.weight"));
    if (!config.layer_is_moe[layer]) {
      ASSIGN_OR_RETURN(FeedForward mlp, LoadFeedForward(w, p + "mlp.", "gate_proj", "up_proj", "down_proj"));
      for (int t = 0; t < n; ++t) {
        const Vector out = mlp(RmsNorm(hidden[t], post_norm, eps));
        for (size_t i = 0; i < out.size(); ++i) hidden[t][i] += out[i];
      }
      continue;
    }
    if (gpt_oss) {
      ASSIGN_OR_RETURN(std::vector<Vector> out, GptOssMoe(w, p + "mlp.", config, k, layer, post_norm, hidden, noise));
      for (int t = 0; t < n; ++t) {
        for (size_t i = 0; i < out[t].size(); ++i) hidden[t][i] += out[t][i];
      }
      continue;
    }
    const std::string moe = p + moe_block + ".";
    ASSIGN_OR_RETURN(Matrix router, w.Mat(moe + "gate.weight"));
    std::map<int, FeedForward> experts;  // loaded when first chosen
    for (int t = 0; t < n; ++t) {
      const Vector x = RmsNorm(hidden[t], post_norm, eps);
      Vector probs = Apply(router, x);
      // The ranking score: the probability, or for a Roster of Experts
      // sample the logit plus tau times a Gumbel draw.
      Vector score = probs;
      const double tau = noise != nullptr && t == n - 1 ? noise->layer_temperatures[layer] : 0.0;
      const double top = *std::max_element(probs.begin(), probs.end());
      double total = 0.0;
      for (double& pr : probs) total += (pr = std::exp(pr - top));
      for (double& pr : probs) pr /= total;
      if (tau > 0.0) {
        for (size_t e = 0; e < score.size(); ++e) {
          score[e] += tau * engine::GumbelNoise(noise->seed, t, layer, noise->sample, static_cast<int>(e));
        }
      } else {
        if (config.topk_method == model::TopkMethod::kGroupLimitedGreedy) LimitToGroups(config, probs);
        score = probs;
      }
      std::vector<int> order(probs.size());
      for (size_t e = 0; e < order.size(); ++e) order[e] = static_cast<int>(e);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
      double chosen_total = 0.0;
      for (int j = 0; j < k; ++j) chosen_total += probs[order[j]];
      Vector out(config.hidden_size, 0.0);
      for (int j = 0; j < k; ++j) {
        const int e = order[j];
        if (!experts.count(e)) {
          ASSIGN_OR_RETURN(experts[e], LoadFeedForward(w, absl::StrCat(moe, "experts.", e, "."), gate_name, up_name,
                                                       down_name));
        }
        const double weight =
            (config.norm_topk_prob ? probs[e] / chosen_total : probs[e]) * config.routed_scaling_factor;
        const Vector y = experts[e](x);
        for (size_t i = 0; i < y.size(); ++i) out[i] += weight * y[i];
      }
      if (deepseek && config.shared_expert_intermediate_size > 0) {
        // DeepSeek's shared experts: one MLP, always on, ungated.
        ASSIGN_OR_RETURN(FeedForward shared,
                         LoadFeedForward(w, moe + "shared_experts.", "gate_proj", "up_proj", "down_proj"));
        const Vector y = shared(x);
        for (size_t i = 0; i < y.size(); ++i) out[i] += y[i];
      } else if (config.shared_expert_intermediate_size > 0) {
        ASSIGN_OR_RETURN(FeedForward shared,
                         LoadFeedForward(w, moe + "shared_expert.", "gate_proj", "up_proj", "down_proj"));
        ASSIGN_OR_RETURN(Matrix shared_gate, w.Mat(moe + "shared_expert_gate.weight"));
        const double gate = 1.0 / (1.0 + std::exp(-Apply(shared_gate, x)[0]));
        const Vector y = shared(x);
        for (size_t i = 0; i < y.size(); ++i) out[i] += gate * y[i];
      }
      for (size_t i = 0; i < out.size(); ++i) hidden[t][i] += out[i];
    }
  }

  ASSIGN_OR_RETURN(Vector final_norm, w.Vec("model.norm.weight"));
  Matrix lm_head;
  if (checkpoint->Has("lm_head.weight")) {
    ASSIGN_OR_RETURN(lm_head, w.Mat("lm_head.weight"));
  } else {
    lm_head = embedding;
  }
  std::vector<Vector> logits(n);
  for (int t = 0; t < n; ++t) logits[t] = Apply(lm_head, RmsNorm(hidden[t], final_norm, eps));
  return logits;
}

}  // namespace expertd::reference
