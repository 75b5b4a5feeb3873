#ifndef EXPERTD_CACHE_SIM_POLICY_SIMULATOR_H_
#define EXPERTD_CACHE_SIM_POLICY_SIMULATOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache/eviction_policy.h"

namespace expertd::cache {

enum class PrefetchMode {
  kNone,
  // Before each layer runs, load the experts the trace says the next layer
  // (of this pass, or layer 0 of the next) will use: a perfect predictor, so
  // what is left are the misses the eviction policy causes.
  kOracleNextLayer,
};
absl::string_view PrefetchModeName(PrefetchMode mode);

struct SimulationOptions {
  // Cache size in experts (one slot holds one expert of one layer).
  int64_t capacity_slots = 0;
  PrefetchMode prefetch = PrefetchMode::kNone;
  // kOracleNextLayer only. With 1 the prefetch is exact, and since the
  // running layer's experts are pinned while the next layer's are fetched,
  // every demand access after the first layer hits whatever the policy: the
  // policies differ only once predictions miss. Below 1, each of the next
  // layer's experts is predicted with this probability and otherwise a wrong
  // expert of that layer (uniform among the ones not routed to) is
  // prefetched in its place, as a real predictor would (Fate reports 97%).
  // Deterministic from prefetch_seed.
  double prefetch_accuracy = 1.0;
  uint64_t prefetch_seed = 0;
  // Optional router probabilities, shaped like trace.passes: access_scores[p][i]
  // belongs to access i of pass p. When set, each layer's scores reach the
  // policy through OnRouterScores (experts not routed to count as 0).
  const std::vector<std::vector<float>>* access_scores = nullptr;
};

struct SimulationResult {
  int64_t accesses = 0;
  int64_t hits = 0;
  int64_t misses = 0;
  // Misses on a key evicted earlier in the same pass: it was resident while
  // the pass ran (or was prefetched for it) and was thrown out before its
  // use (SpecMD's collision miss).
  int64_t collision_misses = 0;
  int64_t evictions = 0;
  int64_t prefetch_inserts = 0;
  // Prefetch inserts whose key got a demand hit before being evicted.
  int64_t useful_prefetches = 0;
  // Prefetches skipped because every resident key was pinned.
  int64_t dropped_prefetches = 0;
  // Misses served without caching because every resident key was pinned
  // (capacity below one layer's experts).
  int64_t uncached_misses = 0;
  // Victims the policy named that were not resident or were pinned: a policy
  // bug. The simulator refuses them (the miss goes uncached).
  int64_t invalid_victims = 0;

  double hit_rate() const { return accesses == 0 ? 0.0 : static_cast<double>(hits) / accesses; }
};

// Checks what Simulate relies on: positive shape, every key inside it, and
// layers ascending within each pass.
absl::Status ValidateAccessTrace(const AccessTrace& trace);

// Replays `trace` (which must pass ValidateAccessTrace) through a cache of options.capacity_slots driven by
// `policy` (which must be fresh). Per pass: OnPassStart; per layer:
// OnLayerStart, the layer's router scores if given, the oracle prefetch of
// the next layer if enabled (the current and next layer's experts pinned),
// then each access: OnAccess, then OnHit or — evicting first when full, with
// the layer's already-accessed experts pinned — OnInsert.
SimulationResult Simulate(const AccessTrace& trace, EvictionPolicy& policy, const SimulationOptions& options);

// The most hits any sequence of victim choices achieves on `trace` without
// prefetch, under the simulator's rules (evict only when full; the layer's
// already-accessed experts pinned). Exhaustive search with memoisation, for
// tests of Belady on tiny traces: fails beyond 64 distinct keys or 48
// accesses.
absl::StatusOr<int64_t> BruteForceOptimalHits(const AccessTrace& trace, int64_t capacity_slots);

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_SIM_POLICY_SIMULATOR_H_
