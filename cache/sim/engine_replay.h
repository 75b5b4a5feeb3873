#ifndef EXPERTD_CACHE_SIM_ENGINE_REPLAY_H_
#define EXPERTD_CACHE_SIM_ENGINE_REPLAY_H_

// Replays a recorded engine trace (TRACE_FORMAT.md v2) the way the engine
// ran it: one pass per engine step; per layer, the distinct experts its
// rows routed to; prefetches from the predictions the engine's prefetcher
// submitted, under the budget it had; and loads that take time, so a
// prefetch that has not landed when its layer runs is a miss that stalls.
// Every access counts once, as the engine's cache counts it
// (cache/expert_cache.h TierStats): hit, hidden (ready because a prefetch
// brought it) or miss (with its stall).
//
// The engine's order per MoE layer (engine/moe_layer_runner.cc) is kept:
// the layer's ready experts are pinned first (ExpertPlan's TryAcquire), then
// its missing ones are loaded (StartLoad: they may evict only what the layer
// does not use), then the layer's predictions are submitted and pumped, then
// the experts compute: the ready ones first, then each loaded one once it
// lands. A missed expert's stall is the time from when compute asks for it to
// when it lands.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/eviction_policy.h"
#include "cache/sim/trace_file.h"

namespace expertd::cache {

// Expert loads: each waits latency_us, then transfers its bytes, up to
// parallel_transfers of them at once sharing bytes_per_second equally (an
// SSD serves overlapping reads in parallel, but not all of them); at most
// queue_depth loads in flight, the rest wait in order. Defaults: this project's development machine, where
// the daemon measured 947 MB/s of expert reads with loads overlapping
// (`expertd run` stats, "reads ... /s with loads overlapping") and the
// reader defaults to 32 io_uring entries (io_bench measures the same reader
// per queue depth); 80 us is a typical NVMe 4 KiB-read latency. A trace's
// recorded figures replace them (MeasuredLoadModel) unless a flag sets them.
struct LoadTimeModel {
  double latency_us = 80.0;
  double bytes_per_second = 947e6;
  int queue_depth = 32;
  // Transfers that share the bandwidth at once, the earliest issued first;
  // later ones wait their turn; 0: every load in flight shares it. 4 is
  // fitted against the engine on the development machine (bench/README,
  // "simulator against the engine"): with every load sharing, the replay's
  // transfers landed together and a prefetch issued just after its layer's
  // own loads was always in time, putting the replay's misses 1-5.5 points
  // under the engine's at 6/16/32 slots; with 4, within 3 (1, 2 and 3 were
  // pessimistic by up to 15). The run's mean reads in flight (Little's law on
  // its figures) was ~4.4.
  int parallel_transfers = 4;
  uint64_t expert_bytes = 0;  // 0: the trace's expert_bytes
};

// The load model of a recorded run (TraceIoFigures, the trace's header): its
// read throughput with loads overlapping as the bandwidth, its mean load
// time less one expert's transfer as the latency, the reader's queue depth.
// A figure the trace lacks keeps LoadTimeModel's default.
LoadTimeModel MeasuredLoadModel(const TraceIoFigures& io, int queue_depth);

struct ReplayOptions {
  int64_t capacity_slots = 0;
  // Replay the trace's recorded predictions (prefetch); false: none.
  bool prefetch = true;
  // Reads per predicted layer per step; 0: the budget recorded with each
  // prediction.
  int budget_per_layer = 0;
  // Reads in flight (demand and prefetch) above which no prefetch is issued:
  // the engine's [prefetch] max_in_flight.
  int max_prefetch_in_flight = 16;
  // A full cache frees a wrong guess (an unclaimed prefetch whose layer has
  // run) before the policy's victim, as the engine's tiers do
  // (ExpertCacheOptions::wrong_guesses_first).
  bool wrong_guesses_first = true;
  LoadTimeModel io;
  // Compute time of every MoE layer; 0: the trace's recorded per-layer
  // times (a layer without one takes default_compute_us).
  double compute_us_per_layer = 0;
  double default_compute_us = 100.0;
  // Time between steps outside the MoE layers' compute (output head,
  // sampling, the scheduler): where the next token's first layers' loads
  // overlap. < 0: as recorded (TraceStep::gap_us; 0 where not recorded).
  double step_gap_us = -1;
  // Router scores shaped like the trace's passes (LoadedTrace::access_scores)
  // for policies that rank by them, or null. A step's recorded per-layer
  // scores of every expert (TraceStep::router_scores), when there are any
  // and router_scores is set, are what the engine gave its policies and
  // take their place.
  const std::vector<std::vector<float>>* access_scores = nullptr;
  bool router_scores = true;
};

struct ReplayResult {
  int64_t steps = 0;
  int64_t rows = 0;  // tokens processed: the steps' rows
  int64_t accesses = 0;
  int64_t hits = 0;    // ready, not brought by an unclaimed prefetch
  int64_t hidden = 0;  // ready because a prefetch brought it
  int64_t misses = 0;  // not ready: a demand load, or a load (prefetch) still in flight
  int64_t late_prefetches = 0;  // misses that found a prefetch of their expert in flight
  // Misses on an expert evicted earlier in the same step (SpecMD's collision
  // miss; the engine's TierStats::collision_misses).
  int64_t collision_misses = 0;
  double stall_us = 0;          // summed waits of the misses
  int64_t demand_loads = 0;
  int64_t prefetch_loads = 0;
  int64_t prefetch_skipped_resident = 0;  // candidates already resident or loading
  int64_t prefetch_dropped = 0;  // no slot could be freed, or never issued before their layer ran
  int64_t evictions = 0;
  int64_t uncached_misses = 0;  // every slot busy: loaded for this layer only
  double elapsed_us = 0;        // simulated time of the whole replay

  double hit_rate() const { return Share(hits); }
  double hidden_rate() const { return Share(hidden); }
  double miss_rate() const { return Share(misses); }
  // Ready when asked, either way: 1 - miss_rate.
  double ready_rate() const { return Share(hits + hidden); }
  double stall_us_per_token() const { return rows == 0 ? 0.0 : stall_us / rows; }

 private:
  double Share(int64_t n) const { return accesses == 0 ? 0.0 : static_cast<double>(n) / accesses; }
};

// The most experts one row routes to at one layer: the smallest cache the
// replay (like the engine, whose budget must hold one layer's experts per
// token) accepts. A step whose rows together route to more, as a prefill
// chunk does, still runs: what cannot stay cached is loaded for its layer
// only (ReplayResult::uncached_misses), as the engine reads it and waits.
int64_t MaxExpertsPerRow(const LoadedTrace& trace);

// Replays `trace` (any version; a v1 trace has no predictions or compute
// times) through a cache of options.capacity_slots driven by `policy`,
// which must be fresh (for belady, built with trace.trace as its future).
// Fails on a capacity below MaxExpertsPerRow, or a load
// model without bytes (neither options.io.expert_bytes nor the trace's).
absl::StatusOr<ReplayResult> ReplayEngineTrace(const LoadedTrace& trace, EvictionPolicy& policy,
                                               const ReplayOptions& options);

// The same, with the policy made by name (belady gets the trace's future).
absl::StatusOr<ReplayResult> ReplayEngineTrace(const LoadedTrace& trace, absl::string_view policy,
                                               const ReplayOptions& options);

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_SIM_ENGINE_REPLAY_H_
