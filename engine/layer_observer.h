#ifndef EXPERTD_ENGINE_LAYER_OBSERVER_H_
#define EXPERTD_ENGINE_LAYER_OBSERVER_H_

#include <cstdint>

#include "absl/types/span.h"

namespace expertd::engine {

// A layer-cycle listener: what the forward pass tells the expert source (the
// cache's policies) and whoever looks ahead of it (the prefetcher). Called
// by the MoE layer runner only (engine/moe_layer_runner.h): BeginPass per
// pass, then per MoE layer in order, BeginLayer, then OnRouterScores and
// OnRouted once the layer's routing and gate inputs are known (before its
// experts run), then OnLayerDone with the layer's compute time.
class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  virtual void BeginPass() {}
  virtual void BeginLayer(int layer) {}
  // The layer's router scores, one per expert: the highest probability any
  // row of the step gave it (one row's probabilities in decode). For
  // score-aware eviction (layer-distance), before the layer asks for its
  // experts; recorded in routing traces so a replay scores the same.
  virtual void OnRouterScores(int layer, absl::Span<const float> scores) {}
  // gate_inputs: [n_tokens][hidden]; chosen: [n_tokens][k].
  virtual void OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen,
                        int n_tokens, int k) {}
  virtual void OnLayerDone(int layer, double compute_seconds) {}
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_LAYER_OBSERVER_H_
