#ifndef EXPERTD_CACHE_SIM_BENCH_CACHE_H_
#define EXPERTD_CACHE_SIM_BENCH_CACHE_H_

// The eviction-policy benchmark behind `expertd bench-cache` and the
// standalone bench_cache tool: every policy replayed on the same trace at
// each capacity, without prefetch and with oracle next-layer prefetch, and
// reported against Belady's hit rate on that trace (DESIGN.md §3).

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/eviction_policy.h"
#include "cache/sim/engine_replay.h"
#include "cache/sim/policy_simulator.h"
#include "cache/sim/trace_file.h"

namespace expertd::cache {

// ReplayOptions whose load model is all 0s: "from the trace's header".
inline ReplayOptions MeasuredReplayDefaults() {
  ReplayOptions options;
  options.io.latency_us = 0;
  options.io.bytes_per_second = 0;
  options.io.queue_depth = 0;
  return options;
}

struct CacheBenchmarkOptions {
  // Router scores shaped like trace.passes (LoadedTrace::access_scores), or
  // null.
  const std::vector<std::vector<float>>* access_scores = nullptr;
  // One table set per accuracy of the next-layer prefetch
  // (SimulationOptions::prefetch_accuracy), after the one without prefetch.
  std::vector<double> prefetch_accuracies = {1.0, 0.9};
  uint64_t prefetch_seed = 0;
  // For a recorded engine trace (v2): the replay's settings besides the
  // capacity (engine_replay.h). Load-model figures left at 0 come from the
  // trace's header (MeasuredLoadModel), else LoadTimeModel's defaults.
  ReplayOptions replay = MeasuredReplayDefaults();
};

struct CacheBenchmarkRow {
  PrefetchMode prefetch = PrefetchMode::kNone;
  double prefetch_accuracy = 1.0;
  double capacity_percent = 0;  // Of all experts of all layers.
  int64_t capacity_slots = 0;
  std::string policy;
  SimulationResult result;
  double belady_hit_rate = 0;  // Same trace, capacity and prefetch mode.
};

// Rows in order: prefetch (none, then each accuracy), then capacity, then
// policy as given. Fails on an invalid trace, an unknown policy, a capacity
// outside (0, 100] percent or below one layer's routed experts, or an
// accuracy outside [0, 1].
absl::StatusOr<std::vector<CacheBenchmarkRow>> ComputeCacheBenchmark(const AccessTrace& trace,
                                                                     absl::Span<const std::string> policies,
                                                                     absl::Span<const double> capacity_percents,
                                                                     const CacheBenchmarkOptions& options = {});

// ComputeCacheBenchmark, printed as one table per (prefetch mode, capacity).
absl::Status RunCacheBenchmark(const AccessTrace& trace, absl::Span<const std::string> policies,
                               absl::Span<const double> capacity_percents, std::ostream& out,
                               const CacheBenchmarkOptions& options = {});

// The engine replay of a recorded trace (engine_replay.h) at each capacity,
// every policy and Belady with the same prefetches, printed as one table per
// capacity: true hit rate (hits / accesses), hidden, miss, stall per token.
absl::Status RunReplayBenchmark(const LoadedTrace& trace, absl::Span<const std::string> policies,
                                absl::Span<const double> capacity_percents, std::ostream& out,
                                const CacheBenchmarkOptions& options = {});

// A recorded trace file (cache/sim/TRACE_FORMAT.md) through
// RunCacheBenchmark: the one path `expertd bench-cache` and tools/bench_cache
// share, so a policy scores the same in both. The file's router scores, when
// it has them, reach the policies (layer-distance ranks by them) unless
// ignore_scores; options.access_scores is set here. A v2 trace (the
// engine's steps) is replayed as the engine ran it (RunReplayBenchmark)
// before the oracle tables.
absl::Status RunTraceFileBenchmark(const std::string& path, absl::Span<const std::string> policies,
                                   absl::Span<const double> capacity_percents, std::ostream& out,
                                   CacheBenchmarkOptions options = {}, bool ignore_scores = false);

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_SIM_BENCH_CACHE_H_
