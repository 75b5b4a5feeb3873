#ifndef EXPERTD_CACHE_STEP_TRACE_H_
#define EXPERTD_CACHE_STEP_TRACE_H_

// What the engine did, step by step, as a routing trace records it (format:
// cache/sim/TRACE_FORMAT.md, v2): the experts each row routed to, the
// predictions the prefetcher submitted, and each layer's compute time. The
// engine fills these (engine/step_trace_recorder.h); cache/sim writes, reads
// and replays them. Plain data, so the engine need not link the simulator.

#include <cstdint>
#include <vector>

namespace expertd::cache {

// The routing of one token (v1) or one row of a step (v2) at one MoE layer:
// experts in rank order (highest router probability first) and, optionally,
// their probabilities.
struct TraceRecord {
  int32_t token = 0;  // v1: the token's position; v2: the row within its step
  int32_t layer = 0;
  std::vector<int32_t> experts;
  std::vector<float> scores;  // Empty, or one per expert.
};

// Predictions the prefetcher submitted while `at_layer` ran, for `for_layer`
// of the same step (next_step false: the prefetch scheduler issues them,
// nearest layer first) or of the next step (next_step true: the next token's
// first layers, issued at once). Candidates in descending score; `budget` is
// the per-layer read budget in force then: the replay issues at most that
// many reads for the layer, skipping candidates already resident or loading,
// as the engine's scheduler does.
struct TracePrediction {
  int32_t at_layer = 0;
  int32_t for_layer = 0;
  bool next_step = false;
  int32_t budget = 1;
  std::vector<int32_t> experts;
  std::vector<float> scores;  // Empty, or one per expert.
};

// A layer's compute time in one step, without the time it stalled for
// expert loads (what the prefetcher's budget is measured against).
struct TraceLayerCompute {
  int32_t layer = 0;
  double compute_us = 0;
};

// The router's score of every expert of one layer in one step, as the
// engine gave them to the cache's policies (LayerObserver::OnRouterScores:
// per expert, the highest probability any row gave it), so a replay ranks
// with the same scores (layer-distance).
struct TraceLayerScores {
  int32_t layer = 0;
  std::vector<float> scores;  // one per expert of the layer
};

// One engine step (one forward pass): a prefill chunk, or one batched decode
// step of several rows. Its accesses are the distinct experts its rows route
// to, per layer.
struct TraceStep {
  int32_t rows = 0;
  // Time from the previous step's last MoE layer to this step's start (the
  // output head, sampling, the scheduler), when recorded; -1: not recorded.
  // The next token's first-layer prefetches land in it.
  double gap_us = -1;
  std::vector<TraceRecord> records;  // layers ascending; token = row
  std::vector<TraceLayerScores> router_scores;  // empty: not recorded
  std::vector<TracePrediction> predictions;
  std::vector<TraceLayerCompute> compute;
};

// The run's I/O figures, for the replay's load-time model (0 = unknown).
struct TraceIoFigures {
  uint64_t expert_bytes = 0;
  double read_bytes_per_second = 0;  // with loads overlapping
  double load_us = 0;                // mean latency of one expert load
};

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_STEP_TRACE_H_
