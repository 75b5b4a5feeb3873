#include "engine/moe_layer_runner.h"

#include <chrono>

#include "base/status_macros.h"

namespace expertd::engine {

MoeLayerRunner::MoeLayerRunner(const model::ModelConfig& config, ExpertSource& experts)
    : config_(config), experts_(experts), listeners_{&experts}, dispatch_(config) {}

void MoeLayerRunner::SetObserver(LayerObserver* observer) {
  listeners_.assign(1, &experts_);
  if (observer != nullptr) listeners_.push_back(observer);
}

void MoeLayerRunner::SetPlacement(const ExecutionPlacement* placement, uint64_t expert_bytes) {
  placement_ = placement;
  expert_bytes_ = expert_bytes;
}

absl::Status MoeLayerRunner::RunLayers(MoeLayerCompute& compute) {
  for (LayerObserver* listener : listeners_) listener->BeginPass();
  for (int layer = 0; layer < config_.num_layers; ++layer) {
    const auto layer_start = std::chrono::steady_clock::now();
    absl::Status status = compute.Attention(layer);
    if (status.ok()) {
      status = config_.layer_is_moe[layer] ? RunMoeLayer(layer, compute) : compute.DenseFeedForward(layer);
    }
    if (!status.ok()) {
      // Let queued work finish before the pins that protect its experts go.
      (void)compute.Sync();
      plan_.Clear();
      return status;
    }
    if (config_.layer_is_moe[layer]) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - layer_start).count();
      for (LayerObserver* listener : listeners_) listener->OnLayerDone(layer, seconds);
    }
  }
  return absl::OkStatus();
}

absl::Status MoeLayerRunner::RunMoeLayer(int layer, MoeLayerCompute& compute) {
  for (LayerObserver* listener : listeners_) listener->BeginLayer(layer);
  ASSIGN_OR_RETURN(const RouterOutput router, compute.Router(layer));
  dispatch_.Route(layer, router.logits, experts_);
  for (LayerObserver* listener : listeners_) listener->OnRouterScores(layer, dispatch_.layer_scores());
  RETURN_IF_ERROR(compute.Dispatched(layer, dispatch_));

  // Pin the experts that are ready, then ask for the missing ones all at
  // once (read in parallel), and only then let the prefetcher have the
  // remaining slots: the current layer's loads come before speculation, and
  // prefetching can never evict what this layer is about to use.
  plan_.Plan(layer, dispatch_, experts_, placement_, expert_bytes_);
  dispatch_.NotifyObservers(listeners_, layer, router.gate_inputs, config_.hidden_size);

  // Ready experts run first (on a device, queued first, while the CPU's
  // share runs), so a slow load holds up only itself.
  // A pin's copy may still be in flight: the backend waits for it where
  // the expert runs.
  for (ExpertPlan::Pinned& ready : plan_.ready()) {
    RETURN_IF_ERROR(compute.AwaitExpert(ready.handle.ready));
    RETURN_IF_ERROR(compute.RunExpert(dispatch_, ready.expert, ready.handle.weights, ExpertOrigin::kReady));
  }
  for (ExpertPlan::Pinned& host : plan_.on_cpu()) {
    RETURN_IF_ERROR(compute.AwaitExpert(host.handle.ready));
    RETURN_IF_ERROR(compute.RunExpert(dispatch_, host.expert, host.handle.weights, ExpertOrigin::kHostCopy));
  }
  // What has run frees its slots before we wait for loads; a pin may go
  // only once the work reading it is done.
  RETURN_IF_ERROR(compute.Sync());
  plan_.ReleasePins();
  for (int e : plan_.pending()) {
    ASSIGN_OR_RETURN(ExpertHandle expert, experts_.Acquire(layer, e));
    RETURN_IF_ERROR(compute.AwaitExpert(expert.ready));
    const absl::Status ran = compute.RunExpert(dispatch_, e, expert.weights, ExpertOrigin::kLoaded);
    const absl::Status synced = compute.Sync();  // before the pin goes, even after an error
    RETURN_IF_ERROR(ran);
    RETURN_IF_ERROR(synced);
  }
  return compute.Combine(layer, dispatch_);
}

}  // namespace expertd::engine
