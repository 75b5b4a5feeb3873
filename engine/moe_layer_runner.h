#ifndef EXPERTD_ENGINE_MOE_LAYER_RUNNER_H_
#define EXPERTD_ENGINE_MOE_LAYER_RUNNER_H_

// The layer cycle of a forward pass, written once for every backend (CPU,
// CUDA). Per pass: BeginPass to the layer-cycle listeners, then per layer
// attention, and per MoE layer: BeginLayer, the router, routing (dial-k,
// Roster noise, traces; engine/moe_dispatch.h), OnRouterScores, the expert
// plan (pins the ready experts, starts the missing ones' loads, execution
// placement; engine/expert_plan.h), OnRouted, the ready experts run, their pins go,
// the pending ones are acquired and run as their loads land, the combine,
// and OnLayerDone with the layer's time. The backend (MoeLayerCompute)
// supplies only the arithmetic and where it happens; the order of cache,
// prefetcher and compute events is the runner's, so both backends drive
// the cache and the prefetcher identically.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/readiness.h"
#include "engine/execution_placement.h"
#include "engine/expert_plan.h"
#include "engine/expert_source.h"
#include "engine/layer_observer.h"
#include "model/model_config.h"
#include "model/model_weights.h"
#include "engine/moe_dispatch.h"

namespace expertd::engine {

// How a routed expert handed to MoeLayerCompute::RunExpert got there.
enum class ExpertOrigin {
  kReady,     // in the source's compute tier when the layer was planned
  kHostCopy,  // a compute-tier miss held in DRAM that execution placement
              // gave to the CPU: the weights are in host memory
  kLoaded,    // in the compute tier after waiting for its load
};

// A MoE layer's routing inputs, in host memory (routing runs on the host:
// the cache must know the chosen experts anyway).
struct RouterOutput {
  const float* logits = nullptr;       // [rows][num_experts]
  const float* gate_inputs = nullptr;  // [rows][hidden]: what the experts read
};

// The steps a backend supplies; the runner calls them per layer or per
// expert, never per token row, so a virtual call costs nothing measurable.
// Every call covers the pass's rows (MoeLayerRunner::BeginPass).
class MoeLayerCompute {
 public:
  virtual ~MoeLayerCompute() = default;
  // Attention of `layer` added to the residual, then the post-attention
  // norm: the feed-forward block's input.
  virtual absl::Status Attention(int layer) = 0;
  // A dense layer's MLP, added to the residual.
  virtual absl::Status DenseFeedForward(int layer) = 0;
  // The MoE layer's router logits and gate inputs on the host.
  virtual absl::StatusOr<RouterOutput> Router(int layer) = 0;
  // The layer's routing is final (dispatch); no expert has run yet.
  virtual absl::Status Dispatched(int layer, const MoeDispatch& dispatch) { return absl::OkStatus(); }
  // Makes the expert's weights safe to read for the RunExpert that follows:
  // its cache slot may still be filling (a device copy in flight). Default:
  // the host waits; a device backend instead makes its stream wait (no host
  // block per expert).
  virtual absl::Status AwaitExpert(const cache::Readiness& ready) { return ready.Wait(); }
  // Runs `expert` on the rows that chose it (dispatch.SlotsOf), writing each
  // slot's own output row, so the combine sums them in rank order whatever
  // order experts run in. The weights stay valid until the next Sync()
  // returns, and not after: work queued on them must be done by then.
  virtual absl::Status RunExpert(const MoeDispatch& dispatch, int expert, const model::FeedForwardWeights& weights,
                                 ExpertOrigin origin) = 0;
  // Waits for queued work that reads expert weights (a device stream); the
  // pins protecting them go once it returns, even when it fails.
  virtual absl::Status Sync() { return absl::OkStatus(); }
  // Adds each row's slot outputs, weighted, in rank order, and the shared
  // expert, to the residual.
  virtual absl::Status Combine(int layer, const MoeDispatch& dispatch) = 0;
};

class MoeLayerRunner {
 public:
  // experts must outlive the runner.
  MoeLayerRunner(const model::ModelConfig& config, ExpertSource& experts);

  // The pass's layer-cycle listeners are the expert source (the cache's
  // policies need the cycle) and `observer` (the prefetcher), in that
  // order; null removes the observer.
  void SetObserver(LayerObserver* observer);
  // Execution placement for a device compute tier: a miss DRAM holds may
  // run on the CPU when cheaper (engine/expert_plan.h). null: never.
  // expert_bytes: one cached expert's weights. placement must outlive the
  // runner.
  void SetPlacement(const ExecutionPlacement* placement, uint64_t expert_bytes);

  // The rows of the pass about to run (they must outlive it); the number
  // of routed slots is then dispatch().num_slots(), for sizing scratch.
  void BeginPass(absl::Span<const RowPlan> rows) { dispatch_.BeginPass(rows); }
  // Runs every layer for the rows of BeginPass. On error, queued work is
  // waited for (Sync) before the layer's pins go.
  absl::Status RunLayers(MoeLayerCompute& compute);

  const MoeDispatch& dispatch() const { return dispatch_; }

 private:
  absl::Status RunMoeLayer(int layer, MoeLayerCompute& compute);

  const model::ModelConfig& config_;
  ExpertSource& experts_;
  // The layer-cycle listeners, in call order: experts_, then the observer.
  std::vector<LayerObserver*> listeners_;
  const ExecutionPlacement* placement_ = nullptr;
  uint64_t expert_bytes_ = 0;
  MoeDispatch dispatch_;
  ExpertPlan plan_;  // the current MoE layer's experts: ready (pinned) and pending
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_MOE_LAYER_RUNNER_H_
