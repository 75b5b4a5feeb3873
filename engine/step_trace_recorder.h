#ifndef EXPERTD_ENGINE_STEP_TRACE_RECORDER_H_
#define EXPERTD_ENGINE_STEP_TRACE_RECORDER_H_

// Records what the engine does, step by step (trace format v2,
// cache/sim/TRACE_FORMAT.md), so the cache simulator can replay the engine
// rather than an oracle: per forward pass, every row's routing per MoE
// layer, the predictions the prefetcher submitted while each layer ran
// (with the per-layer budget then), and each layer's compute time without
// its stalls.
//
// It stands in front of the pass's layer observer (the prefetcher, or none)
// and forwards every event to it; the prefetcher reports its predictions
// through PredictionSink. One thread (the one running forward passes)
// drives it.

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "cache/expert_cache.h"
#include "cache/step_trace.h"
#include "engine/layer_observer.h"
#include "engine/prefetcher.h"

namespace expertd::engine {

class StepTraceRecorder : public LayerObserver, public PredictionSink {
 public:
  // inner: the observer events go on to (may be null). cache: where the
  // layers' stalls are read (may be null: compute times then include them).
  // Both must outlive the recorder.
  StepTraceRecorder(LayerObserver* inner, const cache::ExpertCache* cache);

  void BeginPass() override;
  void BeginLayer(int layer) override;
  void OnRouterScores(int layer, absl::Span<const float> scores) override;
  void OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen, int n_tokens,
                int k) override;
  void OnLayerDone(int layer, double layer_seconds) override;

  void OnPredictions(int at_layer, absl::Span<const predictor::LayerPrediction> predictions, int budget) override;
  void OnNextPassPrediction(int at_layer, int for_layer, absl::Span<const int32_t> experts, int budget) override;

  // The steps recorded so far, handed over (the recorder starts afresh).
  std::vector<cache::TraceStep> TakeSteps();

 private:
  uint64_t StallNs() const;

  LayerObserver* inner_;
  const cache::ExpertCache* cache_;
  std::vector<cache::TraceStep> steps_;
  uint64_t stall_ns_at_layer_start_ = 0;
  // When the last MoE layer of the previous pass finished (gap_us of the
  // next step); unset before the first.
  std::optional<std::chrono::steady_clock::time_point> last_layer_done_;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_STEP_TRACE_RECORDER_H_
