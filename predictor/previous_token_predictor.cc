// Previous-token reuse: a layer tends to route the next token to experts it
// just used (temporal locality), so predict, for layers l+1..l+d, the experts
// each of them chose in the previous pass. A comparison point for the
// cross-layer gate, needing no router products.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "predictor/expert_predictor.h"
#include "predictor/predictors_internal.h"

namespace expertd::predictor {
namespace {

class PreviousTokenPredictor final : public ExpertPredictor {
 public:
  PreviousTokenPredictor(const ModelShape& shape, int lookahead)
      : num_layers_(shape.num_layers),
        num_experts_(shape.num_experts),
        lookahead_(lookahead),
        layer_is_moe_(shape.layer_is_moe),
        last_used_(static_cast<size_t>(shape.num_layers)),
        seen_(static_cast<size_t>(shape.num_layers), false),
        mark_(static_cast<size_t>(shape.num_experts), 0) {
    for (auto& experts : last_used_) experts.reserve(static_cast<size_t>(num_experts_));
  }

  absl::string_view name() const override { return "previous-token"; }

  // Predictions for layer j > l read last_used_[j], which this pass has not
  // overwritten yet (Observe(j) comes after Predict(l)), so no double
  // buffering is needed.
  void Predict(int layer, absl::Span<const float> gate_inputs, int n_tokens, int k,
               std::vector<LayerPrediction>* predictions) override {
    size_t count = 0;
    if (layer >= 0 && layer < num_layers_) {
      const int last = std::min(num_layers_ - 1, layer + lookahead_);
      for (int j = layer + 1; j <= last; ++j) {
        const auto uj = static_cast<size_t>(j);
        if (!layer_is_moe_[uj] || !seen_[uj]) continue;
        predictions->resize(count + 1);
        LayerPrediction& p = (*predictions)[count++];
        p.layer = j;
        p.distance = j - layer;
        p.experts.clear();
        for (int32_t e : last_used_[uj]) p.experts.emplace_back(e, 1.0f);
      }
    }
    predictions->resize(count);
  }

  void Observe(int layer, absl::Span<const int32_t> chosen, int n_tokens, int k) override {
    if (layer < 0 || layer >= num_layers_) return;
    const auto ul = static_cast<size_t>(layer);
    std::vector<int32_t>& used = last_used_[ul];
    used.clear();
    const size_t n = std::min(chosen.size(), static_cast<size_t>(std::max(0, n_tokens) * std::max(0, k)));
    for (size_t i = 0; i < n; ++i) {
      const int32_t e = chosen[i];
      if (e < 0 || e >= num_experts_ || mark_[static_cast<size_t>(e)]) continue;
      mark_[static_cast<size_t>(e)] = 1;
      used.push_back(e);
    }
    for (int32_t e : used) mark_[static_cast<size_t>(e)] = 0;
    // All scores are equal, so order by expert id (the tie rule of the other
    // predictors).
    std::sort(used.begin(), used.end());
    seen_[ul] = true;
  }

 private:
  const int num_layers_;
  const int num_experts_;
  const int lookahead_;
  const std::vector<bool> layer_is_moe_;
  std::vector<std::vector<int32_t>> last_used_;  // [layer] experts of the previous pass, by id
  std::vector<bool> seen_;                       // [layer] observed at least once
  std::vector<uint8_t> mark_;                    // [expert] dedup scratch, all zero between calls
};

}  // namespace

namespace internal {
std::unique_ptr<ExpertPredictor> NewPreviousTokenPredictor(const ModelShape& shape, int lookahead) {
  return std::make_unique<PreviousTokenPredictor>(shape, lookahead);
}
}  // namespace internal

}  // namespace expertd::predictor
