#ifndef EXPERTD_ENGINE_LAYER_OBSERVER_H_
#define EXPERTD_ENGINE_LAYER_OBSERVER_H_

#include <cstdint>

#include "absl/types/span.h"

namespace expertd::engine {

// A layer-cycle listener: what the forward pass tells the expert source (the
// cache's policies) and whoever looks ahead of it (the prefetcher). Called
// by the MoE layer runner only (engine/moe_layer_runner.h): BeginPass per
// pass, then per MoE layer in order, BeginLayer, then OnRouted once the
// layer's routing and gate inputs are known (before its experts run), then
// OnLayerDone with the layer's compute time.
class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  virtual void BeginPass() {}
  virtual void BeginLayer(int layer) {}
  // gate_inputs: [n_tokens][hidden]; chosen: [n_tokens][k].
  virtual void OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen,
                        int n_tokens, int k) {}
  virtual void OnLayerDone(int layer, double compute_seconds) {}
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_LAYER_OBSERVER_H_
