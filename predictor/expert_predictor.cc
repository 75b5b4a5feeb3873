#include "predictor/expert_predictor.h"

#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "predictor/predictors_internal.h"

namespace expertd::predictor {
namespace {

absl::Status ValidateShape(const ModelShape& shape, bool needs_routers) {
  if (shape.num_layers < 1 || shape.num_experts < 1) {
    return absl::InvalidArgumentError(absl::StrCat("predictor: model shape needs num_layers >= 1 and num_experts >= 1, got ",
                                                   shape.num_layers, " layers and ", shape.num_experts, " experts"));
  }
  if (shape.layer_is_moe.size() != static_cast<size_t>(shape.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("predictor: layer_is_moe has ", shape.layer_is_moe.size(),
                                                   " entries, expected one per layer (", shape.num_layers, ")"));
  }
  if (!needs_routers) return absl::OkStatus();
  if (shape.hidden_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("predictor: hidden_size must be >= 1, got ", shape.hidden_size));
  }
  if (shape.routers.size() != static_cast<size_t>(shape.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("predictor: ", shape.routers.size(),
                                                   " router matrices, expected one per layer (", shape.num_layers,
                                                   ")"));
  }
  if (!shape.router_biases.empty() && shape.router_biases.size() != static_cast<size_t>(shape.num_layers)) {
    return absl::InvalidArgumentError(absl::StrCat("predictor: ", shape.router_biases.size(),
                                                   " router biases, expected none or one per layer (",
                                                   shape.num_layers, ")"));
  }
  for (int l = 0; l < shape.num_layers; ++l) {
    if (!shape.layer_is_moe[static_cast<size_t>(l)]) continue;
    const kernels::WeightMatrix& r = shape.routers[static_cast<size_t>(l)];
    if (r.data == nullptr || r.rows != shape.num_experts || r.cols != shape.hidden_size) {
      return absl::InvalidArgumentError(absl::StrCat("predictor: router of MoE layer ", l, " is [", r.rows, " x ",
                                                     r.cols, "]", r.data == nullptr ? " with no data" : "",
                                                     ", expected [", shape.num_experts, " x ", shape.hidden_size,
                                                     "] (num_experts x hidden_size)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ExpertPredictor>> MakePredictor(const PredictorOptions& options,
                                                               const ModelShape& shape, kernels::ThreadPool* pool) {
  if (options.lookahead < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("predictor: lookahead must be >= 1 (layers ahead to predict), got ", options.lookahead));
  }
  if (options.per_layer < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("predictor: per_layer must be >= 0 (0 = 2 * k), got ", options.per_layer));
  }
  if (options.kind == "none") return internal::NewNonePredictor();
  if (options.kind == "previous-token") {
    if (absl::Status s = ValidateShape(shape, /*needs_routers=*/false); !s.ok()) return s;
    return internal::NewPreviousTokenPredictor(shape, options.lookahead);
  }
  if (options.kind == "cross-layer") {
    if (absl::Status s = ValidateShape(shape, /*needs_routers=*/true); !s.ok()) return s;
    return internal::NewCrossLayerPredictor(shape, options.lookahead, options.per_layer, pool);
  }
  return absl::InvalidArgumentError(absl::StrCat("predictor: unknown kind \"", options.kind,
                                                 "\"; choose one of: none, cross-layer, previous-token"));
}

}  // namespace expertd::predictor
