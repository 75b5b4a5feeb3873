#ifndef EXPERTD_PREDICTOR_EXPERT_PREDICTOR_H_
#define EXPERTD_PREDICTOR_EXPERT_PREDICTOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::predictor {

// Predicted experts of one future MoE layer, best first.
struct LayerPrediction {
  int layer = 0;
  int distance = 0;  // layer - the layer the prediction was made at (>= 1)
  // (expert, score) in descending score. Decode: the predictor's probability;
  // prefill: how many of the batch's tokens predicted the expert (SPEC-prefetch
  // rule 3), so both order the same way.
  std::vector<std::pair<int32_t, float>> experts;
};

// What the model looks like to a predictor.
struct ModelShape {
  int num_layers = 0;
  int num_experts = 0;
  int hidden_size = 0;
  std::vector<bool> layer_is_moe;               // [num_layers]
  std::vector<kernels::WeightMatrix> routers;   // [num_layers]; empty matrix for dense layers
  // [num_layers] or empty: each router's bias ([num_experts] floats; gpt-oss),
  // null where it has none.
  std::vector<const float*> router_biases;
};

// Guesses which experts the next MoE layers will route to, from what is
// known at layer l. The engine calls, per forward pass: BeginPass, then for
// every MoE layer in order, Predict (once the layer's gate inputs are known,
// before its experts run) and Observe (its true routing).
class ExpertPredictor {
 public:
  virtual ~ExpertPredictor() = default;
  virtual absl::string_view name() const = 0;
  virtual void BeginPass() {}
  // gate_inputs: [n_tokens][hidden], the post-attention-norm hidden states
  // of MoE layer `layer`. k: experts per token in use. Fills predictions for
  // up to `lookahead` following MoE layers (fewer near the last layer).
  virtual void Predict(int layer, absl::Span<const float> gate_inputs, int n_tokens, int k,
                       std::vector<LayerPrediction>* predictions) = 0;
  // The experts layer `layer` actually chose: [n_tokens][k].
  virtual void Observe(int layer, absl::Span<const int32_t> chosen, int n_tokens, int k) {}
};

struct PredictorOptions {
  std::string kind = "cross-layer";  // none | cross-layer | previous-token
  int lookahead = 1;                  // d
  // Experts predicted per future layer: decode keeps the top `per_layer`
  // (0 = 2 * k) by score; prefill keeps every expert some token predicted.
  int per_layer = 0;
};

// The router matrices in `shape` must outlive the predictor.
absl::StatusOr<std::unique_ptr<ExpertPredictor>> MakePredictor(const PredictorOptions& options,
                                                               const ModelShape& shape, kernels::ThreadPool* pool);

}  // namespace expertd::predictor

#endif  // EXPERTD_PREDICTOR_EXPERT_PREDICTOR_H_
