// The baseline: predicts nothing, so every expert a layer needs that is not
// resident is demand-loaded (load-on-demand in Fate's comparison).

#include <memory>
#include <vector>

#include "predictor/expert_predictor.h"
#include "predictor/predictors_internal.h"

namespace expertd::predictor {
namespace {

class NonePredictor final : public ExpertPredictor {
 public:
  absl::string_view name() const override { return "none"; }
  void Predict(int layer, absl::Span<const float> gate_inputs, int n_tokens, int k,
               std::vector<LayerPrediction>* predictions) override {
    predictions->clear();
  }
};

}  // namespace

namespace internal {
std::unique_ptr<ExpertPredictor> NewNonePredictor() { return std::make_unique<NonePredictor>(); }
}  // namespace internal

}  // namespace expertd::predictor
