#include "tests/reference/reference_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/checkpoint.h"
#include "engine/model_config.h"
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

Vector ToDoubles(const TensorInfo& tensor, const std::vector<std::byte>& bytes) {
  Vector out(tensor.num_elements());
  for (size_t i = 0; i < out.size(); ++i) {
    if (tensor.dtype == SafetensorsDtype::kF32) {
      float value;
      std::memcpy(&value, bytes.data() + 4 * i, 4);
      out[i] = value;
    } else {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      out[i] = HalfBitsToDouble(bits, tensor.dtype == SafetensorsDtype::kBF16);
    }
  }
  return out;
}

class Weights {
 public:
  explicit Weights(const Checkpoint& checkpoint) : checkpoint_(checkpoint) {}
  absl::StatusOr<Vector> Vec(const std::string& name) {
    ASSIGN_OR_RETURN(const TensorInfo* tensor, checkpoint_.Get(name));
    std::vector<std::byte> bytes(tensor->size_bytes);
    RETURN_IF_ERROR(checkpoint_.Read(*tensor, bytes.data()));
    return ToDoubles(*tensor, bytes);
  }
  absl::StatusOr<Matrix> Mat(const std::string& name) {
    ASSIGN_OR_RETURN(const TensorInfo* tensor, checkpoint_.Get(name));
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
  const Checkpoint& checkpoint_;
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

}  // namespace

absl::StatusOr<std::vector<std::vector<double>>> ReferenceLogits(const std::string& model_dir,
                                                                 const std::vector<int32_t>& tokens, int k,
                                                                 const ReferenceNoise* noise) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir + "/config.json"));
  ASSIGN_OR_RETURN(auto checkpoint, Checkpoint::Open(model_dir));
  Weights w(*checkpoint);
  if (k == 0) k = config.experts_per_token;
  const bool mixtral = config.architecture == Architecture::kMixtral;
  const std::string moe_block = mixtral ? "block_sparse_moe" : "mlp";
  const char* gate_name = mixtral ? "w1" : "gate_proj";
  const char* up_name = mixtral ? "w3" : "up_proj";
  const char* down_name = mixtral ? "w2" : "down_proj";
  const int n = static_cast<int>(tokens.size());
  const int hd = config.head_dim;
  const double eps = config.rms_norm_eps;

  ASSIGN_OR_RETURN(Matrix embedding, w.Mat("model.embed_tokens.weight"));
  std::vector<Vector> hidden(n);
  for (int t = 0; t < n; ++t) hidden[t] = embedding[tokens[t]];

  for (int layer = 0; layer < config.num_layers; ++layer) {
    const std::string p = absl::StrCat("model.layers.", layer, ".");
    ASSIGN_OR_RETURN(Vector input_norm, w.Vec(p + "input_layernorm.weight"));
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
      if (config.qk_norm != QkNorm::kNone) {
        ASSIGN_OR_RETURN(Vector qn, w.Vec(p + "self_attn.q_norm.weight"));
        ASSIGN_OR_RETURN(Vector kn, w.Vec(p + "self_attn.k_norm.weight"));
        if (config.qk_norm == QkNorm::kWholeProjection) {
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
      for (int h = 0; h < config.num_heads; ++h) Rope(&q[t][h * hd], hd, t, config.rope_theta);
      for (int h = 0; h < config.num_kv_heads; ++h) Rope(&kk[t][h * hd], hd, t, config.rope_theta);
    }
    const int group = config.num_heads / config.num_kv_heads;
    for (int t = 0; t < n; ++t) {
      Vector attended(config.q_size(), 0.0);
      for (int h = 0; h < config.num_heads; ++h) {
        const int kv_head = h / group;
        Vector scores(t + 1);
        for (int s = 0; s <= t; ++s) {
          double dot = 0.0;
          for (int i = 0; i < hd; ++i) dot += q[t][h * hd + i] * kk[s][kv_head * hd + i];
          scores[s] = dot / std::sqrt(static_cast<double>(hd));
        }
        const double top = *std::max_element(scores.begin(), scores.end());
        double total = 0.0;
        for (double& s : scores) total += (s = std::exp(s - top));
        for (int s = 0; s <= t; ++s) {
          for (int i = 0; i < hd; ++i) attended[h * hd + i] += scores[s] / total * v[s][kv_head * hd + i];
        }
      }
      const Vector out = Apply(wo, attended);
      for (size_t i = 0; i < out.size(); ++i) hidden[t][i] += out[i];
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
          score[e] += tau * GumbelNoise(noise->seed, t, layer, noise->sample, static_cast<int>(e));
        }
      } else {
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
        const double weight = config.norm_topk_prob ? probs[e] / chosen_total : probs[e];
        const Vector y = experts[e](x);
        for (size_t i = 0; i < y.size(); ++i) out[i] += weight * y[i];
      }
      if (config.shared_expert_intermediate_size > 0) {
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
