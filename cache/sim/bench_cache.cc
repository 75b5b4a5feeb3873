#include "cache/sim/bench_cache.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cache/sim/trace_file.h"

namespace expertd::cache {
namespace {

absl::StatusOr<SimulationResult> SimulatePolicy(const std::string& name,
                                                const std::shared_ptr<const AccessTrace>& trace,
                                                const SimulationOptions& options) {
  PolicyOptions policy_options;
  policy_options.num_layers = trace->num_layers;
  policy_options.num_experts = trace->num_experts;
  policy_options.future = trace;
  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = MakeEvictionPolicy(name, policy_options);
  if (!policy.ok()) return policy.status();
  return Simulate(*trace, **policy, options);
}

// The most experts one layer step routes to: the cache must hold them all.
int64_t MaxExpertsPerLayerStep(const AccessTrace& trace) {
  int64_t most = 0;
  for (const std::vector<ExpertKey>& pass : trace.passes) {
    int64_t run = 0;
    for (size_t i = 0; i < pass.size(); ++i) {
      run = (i > 0 && pass[i].layer == pass[i - 1].layer) ? run + 1 : 1;
      most = std::max(most, run);
    }
  }
  return most;
}

}  // namespace

absl::StatusOr<std::vector<CacheBenchmarkRow>> ComputeCacheBenchmark(
    const AccessTrace& trace, absl::Span<const std::string> policies, absl::Span<const double> capacity_percents,
    const CacheBenchmarkOptions& options) {
  const std::vector<std::vector<float>>* access_scores = options.access_scores;
  if (absl::Status status = ValidateAccessTrace(trace); !status.ok()) return status;
  if (trace.passes.empty()) return absl::InvalidArgumentError("bench-cache: the trace has no passes");
  if (access_scores != nullptr && access_scores->size() != trace.passes.size()) {
    return absl::InvalidArgumentError("bench-cache: the router scores do not match the trace's passes");
  }
  for (double accuracy : options.prefetch_accuracies) {
    if (!(accuracy >= 0 && accuracy <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("bench-cache: prefetch accuracy ", accuracy,
                                                     " is not in [0, 1]"));
    }
  }
  if (policies.empty()) return absl::InvalidArgumentError("bench-cache: no policies given");
  if (capacity_percents.empty()) return absl::InvalidArgumentError("bench-cache: no capacities given");

  const int64_t total_experts = int64_t{trace.num_layers} * trace.num_experts;
  const int64_t layer_experts = MaxExpertsPerLayerStep(trace);
  std::vector<int64_t> capacities;
  for (double percent : capacity_percents) {
    if (!(percent > 0 && percent <= 100)) {
      return absl::InvalidArgumentError(absl::StrCat("bench-cache: capacity ", percent, "% is not in (0, 100]"));
    }
    const int64_t slots = std::llround(percent / 100.0 * static_cast<double>(total_experts));
    // As for the daemon's budgets (DESIGN.md §2): a cache that cannot hold
    // one layer's routed experts cannot run that layer.
    if (slots < layer_experts) {
      return absl::InvalidArgumentError(absl::StrCat("bench-cache: capacity ", percent, "% is ", slots,
                                                     " experts, fewer than the ", layer_experts,
                                                     " one layer routes to"));
    }
    capacities.push_back(slots);
  }

  // Belady reads the trace through a shared_ptr; this one does not own it,
  // which is safe because no policy outlives this call.
  const std::shared_ptr<const AccessTrace> shared_trace(std::shared_ptr<const AccessTrace>(), &trace);
  std::vector<CacheBenchmarkRow> rows;
  // (mode, accuracy) of each table set: none first, then the prefetches.
  std::vector<std::pair<PrefetchMode, double>> prefetches = {{PrefetchMode::kNone, 1.0}};
  for (double accuracy : options.prefetch_accuracies) prefetches.push_back({PrefetchMode::kOracleNextLayer, accuracy});
  for (const auto& [mode, accuracy] : prefetches) {
    for (size_t c = 0; c < capacities.size(); ++c) {
      SimulationOptions sim;
      sim.capacity_slots = capacities[c];
      sim.prefetch = mode;
      sim.prefetch_accuracy = accuracy;
      sim.prefetch_seed = options.prefetch_seed;
      sim.access_scores = access_scores;
      absl::StatusOr<SimulationResult> belady = SimulatePolicy("belady", shared_trace, sim);
      if (!belady.ok()) return belady.status();
      for (const std::string& name : policies) {
        CacheBenchmarkRow row;
        row.prefetch = mode;
        row.prefetch_accuracy = accuracy;
        row.capacity_percent = capacity_percents[c];
        row.capacity_slots = capacities[c];
        row.policy = name;
        row.belady_hit_rate = belady->hit_rate();
        if (name == "belady") {
          row.result = *belady;
        } else {
          absl::StatusOr<SimulationResult> result = SimulatePolicy(name, shared_trace, sim);
          if (!result.ok()) return result.status();
          row.result = *result;
        }
        rows.push_back(std::move(row));
      }
    }
  }
  return rows;
}

absl::Status RunCacheBenchmark(const AccessTrace& trace, absl::Span<const std::string> policies,
                               absl::Span<const double> capacity_percents, std::ostream& out,
                               const CacheBenchmarkOptions& options) {
  absl::StatusOr<std::vector<CacheBenchmarkRow>> rows =
      ComputeCacheBenchmark(trace, policies, capacity_percents, options);
  if (!rows.ok()) return rows.status();
  int64_t accesses = 0;
  for (const auto& pass : trace.passes) accesses += static_cast<int64_t>(pass.size());
  out << absl::StrFormat("trace: %d passes, %d layers x %d experts, %d accesses\n", trace.passes.size(),
                         trace.num_layers, trace.num_experts, accesses);
  for (size_t i = 0; i < rows->size(); ++i) {
    const CacheBenchmarkRow& row = (*rows)[i];
    const bool new_table = i == 0 || row.prefetch != (*rows)[i - 1].prefetch ||
                           row.prefetch_accuracy != (*rows)[i - 1].prefetch_accuracy ||
                           row.capacity_slots != (*rows)[i - 1].capacity_slots;
    if (new_table) {
      const std::string prefetch =
          row.prefetch == PrefetchMode::kNone
              ? std::string(PrefetchModeName(row.prefetch))
              : absl::StrFormat("%s (accuracy %g)", PrefetchModeName(row.prefetch), row.prefetch_accuracy);
      out << absl::StrFormat("\nprefetch %s, capacity %g%% (%d of %d experts)\n", prefetch, row.capacity_percent,
                             row.capacity_slots, int64_t{trace.num_layers} * trace.num_experts);
      out << absl::StrFormat("%-16s %9s %9s %11s %10s %10s %9s %10s\n", "policy", "hit rate", "misses",
                             "collisions", "evictions", "prefetched", "useful", "vs belady");
    }
    const SimulationResult& r = row.result;
    const double versus = row.belady_hit_rate > 0 ? r.hit_rate() / row.belady_hit_rate : 0.0;
    out << absl::StrFormat("%-16s %8.2f%% %9d %11d %10d %10d %9d %10.3f\n", row.policy, 100.0 * r.hit_rate(),
                           r.misses, r.collision_misses, r.evictions, r.prefetch_inserts, r.useful_prefetches,
                           versus);
  }
  return absl::OkStatus();
}

absl::Status RunReplayBenchmark(const LoadedTrace& trace, absl::Span<const std::string> policies,
                                absl::Span<const double> capacity_percents, std::ostream& out,
                                const CacheBenchmarkOptions& options) {
  ReplayOptions replay = options.replay;
  const LoadTimeModel measured = MeasuredLoadModel(trace.io, 0);
  LoadTimeModel& io = replay.io;
  if (io.latency_us <= 0) io.latency_us = measured.latency_us;
  if (io.bytes_per_second <= 0) io.bytes_per_second = measured.bytes_per_second;
  if (io.queue_depth <= 0) io.queue_depth = measured.queue_depth;
  if (io.expert_bytes == 0) io.expert_bytes = measured.expert_bytes;
  replay.access_scores = options.access_scores;
  const int64_t total_experts = int64_t{trace.num_layers} * trace.num_experts;
  const int64_t row_experts = MaxExpertsPerRow(trace);
  int64_t predictions = 0;
  for (const TraceStep& step : trace.steps) predictions += static_cast<int64_t>(step.predictions.size());
  out << absl::StrFormat(
      "engine replay: %d steps, %d recorded predictions; loads %.0f us + %d B at %.0f MB/s, queue depth %d; "
      "compute %s; prefetch %s, budget %s\n",
      trace.steps.size(), predictions, io.latency_us, io.expert_bytes, io.bytes_per_second / 1e6, io.queue_depth,
      replay.compute_us_per_layer > 0 ? absl::StrFormat("%.0f us per layer", replay.compute_us_per_layer)
                                      : std::string("as recorded"),
      replay.prefetch ? "as recorded" : "off",
      replay.budget_per_layer > 0 ? absl::StrCat(replay.budget_per_layer) : std::string("as recorded"));
  for (double percent : capacity_percents) {
    if (!(percent > 0 && percent <= 100)) {
      return absl::InvalidArgumentError(absl::StrCat("bench-cache: capacity ", percent, "% is not in (0, 100]"));
    }
    replay.capacity_slots = std::llround(percent / 100.0 * static_cast<double>(total_experts));
    if (replay.capacity_slots < row_experts) {
      // Not an error here: the other capacities still say something.
      out << absl::StrFormat("\nreplay, capacity %g%% (%d of %d experts): fewer than the %d experts one row "
                             "routes to at one layer; skipped\n",
                             percent, replay.capacity_slots, total_experts, row_experts);
      continue;
    }
    absl::StatusOr<ReplayResult> belady = ReplayEngineTrace(trace, "belady", replay);
    if (!belady.ok()) return belady.status();
    out << absl::StrFormat("\nreplay, capacity %g%% (%d of %d experts)\n", percent, replay.capacity_slots,
                           total_experts);
    out << absl::StrFormat("%-16s %9s %8s %8s %11s %12s %11s %10s\n", "policy", "true hit", "hidden", "miss",
                           "collisions", "stall/token", "prefetched", "vs belady");
    for (const std::string& name : policies) {
      absl::StatusOr<ReplayResult> r = name == "belady" ? belady : ReplayEngineTrace(trace, name, replay);
      if (!r.ok()) return r.status();
      const double versus = belady->ready_rate() > 0 ? r->ready_rate() / belady->ready_rate() : 0.0;
      out << absl::StrFormat("%-16s %8.2f%% %7.2f%% %7.2f%% %11d %9.1f us %11d %10.3f\n", name,
                             100.0 * r->hit_rate(), 100.0 * r->hidden_rate(), 100.0 * r->miss_rate(),
                             r->collision_misses, r->stall_us_per_token(), r->prefetch_loads, versus);
    }
  }
  out << "\n";
  return absl::OkStatus();
}

absl::Status RunTraceFileBenchmark(const std::string& path, absl::Span<const std::string> policies,
                                   absl::Span<const double> capacity_percents, std::ostream& out,
                                   CacheBenchmarkOptions options, bool ignore_scores) {
  absl::StatusOr<LoadedTrace> loaded = ReadTraceFile(path);
  if (!loaded.ok()) return loaded.status();
  options.access_scores = loaded->has_scores && !ignore_scores ? &loaded->access_scores : nullptr;
  options.replay.router_scores = !ignore_scores;
  if (loaded->version >= 2) {
    if (absl::Status status = RunReplayBenchmark(*loaded, policies, capacity_percents, out, options); !status.ok()) {
      return status;
    }
    // The oracle tables need a cache that holds a whole step's layer (a
    // prefill chunk routes to many experts at once): smaller ones are left
    // to the replay above.
    const int64_t total_experts = int64_t{loaded->num_layers} * loaded->num_experts;
    const int64_t step_experts = MaxExpertsPerLayerStep(loaded->trace);
    std::vector<double> fitting;
    for (double percent : capacity_percents) {
      if (std::llround(percent / 100.0 * static_cast<double>(total_experts)) >= step_experts) fitting.push_back(percent);
    }
    out << absl::StrFormat("oracle tables (no load times; prefetch from the routing itself; capacities holding the "
                           "%d experts of a step's widest layer):\n",
                           step_experts);
    if (fitting.empty()) return absl::OkStatus();
    return RunCacheBenchmark(loaded->trace, policies, fitting, out, options);
  }
  return RunCacheBenchmark(loaded->trace, policies, capacity_percents, out, options);
}

}  // namespace expertd::cache
