// Fate's cross-layer gate (arXiv 2502.12224; SPEC-prefetch.md): adjacent
// layers' gate inputs are similar (cosine > 0.83), so layer j's own router
// applied to layer l's gate input x_l predicts layer j's routing, with no
// training. Decode keeps the top `per_layer` experts by probability; prefill
// counts every token's top-k (SPEC-prefetch rule 3).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "predictor/expert_predictor.h"
#include "predictor/predictors_internal.h"

namespace expertd::predictor {
namespace {

class CrossLayerPredictor final : public ExpertPredictor {
 public:
  CrossLayerPredictor(const ModelShape& shape, int lookahead, int per_layer, kernels::ThreadPool* pool)
      : shape_(shape), lookahead_(lookahead), per_layer_(per_layer), pool_(pool) {
    const auto num_experts = static_cast<size_t>(shape_.num_experts);
    // Sized for decode here; prefill grows logits_ once to its largest batch.
    logits_.resize(num_experts);
    order_.resize(num_experts);
    counts_.resize(num_experts, 0);
  }

  absl::string_view name() const override { return "cross-layer"; }

  void Predict(int layer, absl::Span<const float> gate_inputs, int n_tokens, int k,
               std::vector<LayerPrediction>* predictions) override {
    const int num_experts = shape_.num_experts;
    const auto hidden = static_cast<size_t>(shape_.hidden_size);
    // Bad input predicts nothing rather than reading out of bounds: a missed
    // prefetch only costs a demand load.
    if (layer < 0 || layer >= shape_.num_layers || n_tokens < 1 || k < 1 ||
        gate_inputs.size() < static_cast<size_t>(n_tokens) * hidden) {
      predictions->clear();
      return;
    }
    k = std::min(k, num_experts);
    const size_t logits_size = static_cast<size_t>(n_tokens) * static_cast<size_t>(num_experts);
    if (logits_.size() < logits_size) logits_.resize(logits_size);

    size_t count = 0;
    const int last = std::min(shape_.num_layers - 1, layer + lookahead_);
    for (int j = layer + 1; j <= last; ++j) {
      const auto uj = static_cast<size_t>(j);
      if (!shape_.layer_is_moe[uj]) continue;
      kernels::MatMul(shape_.routers[uj], gate_inputs.data(), n_tokens, logits_.data(), pool_);
      if (uj < shape_.router_biases.size() && shape_.router_biases[uj] != nullptr) {
        const float* bias = shape_.router_biases[uj];
        for (size_t i = 0; i < logits_size; ++i) logits_[i] += bias[i % static_cast<size_t>(num_experts)];
      }
      predictions->resize(count + 1);
      LayerPrediction& p = (*predictions)[count++];
      p.layer = j;
      p.distance = j - layer;
      p.experts.clear();
      if (n_tokens == 1) {
        PredictDecode(k, &p);
      } else {
        PredictPrefill(n_tokens, k, &p);
      }
    }
    predictions->resize(count);
  }

 private:
  // Higher value first, lower expert id on ties, so results are deterministic.
  static bool Before(const float* values, int32_t a, int32_t b) {
    const float va = values[a];
    const float vb = values[b];
    return va > vb || (va == vb && a < b);
  }

  // Orders order_[0, keep) as the top `keep` experts by values[].
  void TopExperts(const float* values, int keep) {
    for (int32_t e = 0; e < shape_.num_experts; ++e) order_[static_cast<size_t>(e)] = e;
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(),
                      [values](int32_t a, int32_t b) { return Before(values, a, b); });
  }

  void PredictDecode(int k, LayerPrediction* p) {
    const int num_experts = shape_.num_experts;
    float* logits = logits_.data();
    // Softmax so the score is a probability; the order is the logits' order.
    float max_logit = logits[0];
    for (int e = 1; e < num_experts; ++e) max_logit = std::max(max_logit, logits[e]);
    float sum = 0.0f;
    for (int e = 0; e < num_experts; ++e) {
      logits[e] = std::exp(logits[e] - max_logit);
      sum += logits[e];
    }
    const float inv_sum = 1.0f / sum;
    for (int e = 0; e < num_experts; ++e) logits[e] *= inv_sum;

    const int keep = std::min(num_experts, per_layer_ > 0 ? per_layer_ : 2 * k);
    TopExperts(logits, keep);
    for (int i = 0; i < keep; ++i) {
      const int32_t e = order_[static_cast<size_t>(i)];
      p->experts.emplace_back(e, logits[e]);
    }
  }

  void PredictPrefill(int n_tokens, int k, LayerPrediction* p) {
    const int num_experts = shape_.num_experts;
    std::fill(counts_.begin(), counts_.end(), 0);
    // The top-k of the logits is the top-k of the softmax: no exp needed.
    for (int t = 0; t < n_tokens; ++t) {
      TopExperts(logits_.data() + static_cast<size_t>(t) * static_cast<size_t>(num_experts), k);
      for (int i = 0; i < k; ++i) ++counts_[static_cast<size_t>(order_[static_cast<size_t>(i)])];
    }
    // Counts reuse logits_'s first row as the sort key (the logits are spent).
    float* key = logits_.data();
    int kept = 0;
    for (int e = 0; e < num_experts; ++e) {
      key[e] = static_cast<float>(counts_[static_cast<size_t>(e)]);
      if (counts_[static_cast<size_t>(e)] > 0) ++kept;
    }
    TopExperts(key, kept);
    for (int i = 0; i < kept; ++i) {
      const int32_t e = order_[static_cast<size_t>(i)];
      p->experts.emplace_back(e, key[e]);
    }
  }

  const ModelShape shape_;  // routers point at weights the caller keeps alive
  const int lookahead_;
  const int per_layer_;
  kernels::ThreadPool* const pool_;  // may be null
  std::vector<float> logits_;        // [max n_tokens][num_experts]
  std::vector<int32_t> order_;       // [num_experts] sort scratch
  std::vector<int32_t> counts_;      // [num_experts] prefill votes
};

}  // namespace

namespace internal {
std::unique_ptr<ExpertPredictor> NewCrossLayerPredictor(const ModelShape& shape, int lookahead,
                                                        int per_layer, kernels::ThreadPool* pool) {
  return std::make_unique<CrossLayerPredictor>(shape, lookahead, per_layer, pool);
}
}  // namespace internal

}  // namespace expertd::predictor
