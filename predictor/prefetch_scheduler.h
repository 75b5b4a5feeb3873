#ifndef EXPERTD_PREDICTOR_PREFETCH_SCHEDULER_H_
#define EXPERTD_PREDICTOR_PREFETCH_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/types/span.h"
#include "predictor/expert_predictor.h"

namespace expertd::predictor {

struct PrefetchSchedulerOptions {
  // Prefetch reads allowed in flight at once (in_flight() counts them); kept
  // below the device queue depth so demand loads are never stuck behind a
  // wall of speculative reads (SPEC-prefetch rule 4).
  int max_in_flight = 16;
  // Reads issued per predicted layer per pass; 0 = measured (see
  // per_layer_budget()). The config's [prefetch] budget_per_layer.
  int fixed_budget_per_layer = 0;
  // Bytes one expert load reads (a cache slot): converts the measured
  // throughput into loads. 0 = unknown: the measured budget stays 1.
  uint64_t expert_bytes = 0;
  // Upper clamp of the measured budget from the cache's size (0 = none):
  // the reads for the predicted layers must fit beside the running layer's
  // experts, or prefetches evict each other and everything reused across
  // tokens (the Prefetcher sets (slots - k) / lookahead).
  int max_budget_per_layer = 0;
  // Upper clamp of the measured budget (the model's experts per layer);
  // 0 = no upper clamp.
  int num_experts = 0;
  // Decode: a prediction scoring below this (the predictor's probability)
  // is not prefetched. Prefill's scores are token counts (>= 1), so a
  // threshold below 1 never drops them. 0: no threshold.
  float min_score = 0;
  // Weight of a new sample in the moving averages of the timings.
  double ema_weight = 0.25;
};

// Turns predictions into prefetch reads (SPEC-prefetch rule 2, after SpecMD):
// in descending score, nearest layer first, at most a transfer budget of
// reads per predicted layer, and never more than max_in_flight at once.
//
// Budget accounting: the budget counts reads actually issued for a layer in
// the current pass. An expert that issue() reports resident or already
// loading costs no transfer, so it does not use budget and the next
// candidate by score takes its place.
//
// Not thread-safe: one thread (the engine's forward pass) drives it. The
// callbacks run on that thread, inside Pump.
class PrefetchScheduler {
 public:
  // issue(layer, expert): start an async load; false when the expert is
  // resident or already loading (ExpertCache::Prefetch). in_flight(): reads
  // now in flight (ExpertCache::reads_in_flight).
  PrefetchScheduler(PrefetchSchedulerOptions options, std::function<bool(int layer, int expert)> issue,
                    std::function<int()> in_flight);

  // New forward pass: drops everything queued, resets per-layer budgets.
  void BeginPass();
  // Layer `layer` starts computing: drops queued prefetches for layers
  // <= layer, since the running layer demand-loads what it needs at higher
  // priority and a late prefetch would only compete with it.
  void BeginLayer(int layer);
  // Queues predictions. A newer prediction for a layer replaces that
  // layer's still-queued candidates (it was made nearer to the layer, and
  // Fate's accuracy falls with distance); reads already issued for the layer
  // stay and keep counting against its budget. Predictions for layers
  // <= the current layer are ignored. Duplicates and experts already tried
  // for the layer this pass are skipped.
  void Submit(absl::Span<const LayerPrediction> predictions);
  // Issues queued prefetches, nearest layer first then score, while
  // in_flight() < max_in_flight and the layer's budget lasts.
  void Pump();

  // Figures feeding the measured budget: one layer's compute time (without
  // the time it stalled for loads: prefetches overlap compute, and counting
  // stalls would grow the budget with the misses it causes), and the
  // file's read throughput while loads overlap (bytes loaded per second of
  // time with at least one read in flight; TierStats::read_busy_ns).
  void RecordLayerCompute(double seconds);
  void RecordLoadThroughput(double bytes_per_second);
  // fixed_budget_per_layer when set; else the expert loads the file
  // delivers during one layer, floor(avg layer compute * avg throughput /
  // expert_bytes), clamped to [1, min(num_experts, max_budget_per_layer)];
  // 1 until both have a sample.
  // Throughput, not one load's latency: up to max_in_flight reads overlap,
  // so latency alone (the budget's old basis) said "1 per layer" on every
  // measured run. The floor of 1 keeps one early read per layer even when a
  // load outlasts a layer: it still finishes sooner than a demand load.
  int per_layer_budget() const;
  // Whether per_layer_budget() is fixed_budget_per_layer.
  bool budget_is_fixed() const { return options_.fixed_budget_per_layer > 0; }
  // The averages behind the measured budget (0 before a sample).
  double mean_layer_seconds() const { return avg_layer_compute_s_; }
  double mean_load_bytes_per_second() const { return avg_load_bytes_per_s_; }

  struct Stats {
    uint64_t queued = 0;            // candidates accepted by Submit
    uint64_t issued = 0;            // issue() returned true: a read started
    uint64_t dropped_stale = 0;     // queued, never issued before its layer ran or the pass ended
    uint64_t skipped_resident = 0;  // issue() returned false: no read needed
    uint64_t replaced = 0;          // queued, superseded by a newer prediction for the layer
    uint64_t below_min_score = 0;   // predictions Submit dropped for scoring under min_score
  };
  Stats stats() const { return stats_; }
  // Candidates waiting to be issued.
  size_t queued_now() const { return queue_.size(); }

 private:
  struct Item {
    int layer;
    int32_t expert;
    float score;
  };
  struct LayerState {
    int issued = 0;                // reads issued for the layer this pass
    std::vector<int32_t> tried;    // experts issue() was called for this pass
  };
  LayerState& StateOf(int layer);
  bool Tried(int layer, int32_t expert);
  // Removes queued items matching pred, counting them into *counter.
  template <typename Pred>
  void DropQueued(Pred pred, uint64_t* counter);

  const PrefetchSchedulerOptions options_;
  const std::function<bool(int, int)> issue_;
  const std::function<int()> in_flight_;
  // Ordered by (layer ascending, score descending, expert ascending): the
  // order Pump issues in.
  std::vector<Item> queue_;
  std::vector<LayerState> layers_;  // [layer], grown on first sight of a layer
  int current_layer_ = -1;          // layer now computing; -1 between passes
  double avg_layer_compute_s_ = 0.0;
  double avg_load_bytes_per_s_ = 0.0;
  Stats stats_;
};

}  // namespace expertd::predictor

#endif  // EXPERTD_PREDICTOR_PREFETCH_SCHEDULER_H_
