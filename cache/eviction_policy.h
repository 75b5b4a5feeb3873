#ifndef EXPERTD_CACHE_EVICTION_POLICY_H_
#define EXPERTD_CACHE_EVICTION_POLICY_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "cache/expert_key.h"

namespace expertd::cache {

// A recorded sequence of demand accesses in the order the engine makes them:
// for each token (forward pass), for each MoE layer in order, the experts
// routed to. Belady's oracle replays it; simulators drive policies with it.
struct AccessTrace {
  int num_layers = 0;
  int num_experts = 0;
  // passes[p][i]: the i-th demand access of pass p, layers ascending.
  std::vector<std::vector<ExpertKey>> passes;
};

// What the cache tells a policy, and the one question it asks. The cache
// calls every method under its own lock, so policies need no locking.
//
// Event order within a pass: OnPassStart, then per MoE layer OnLayerStart,
// then for each routed expert OnAccess followed by OnHit (resident) or, after
// the load, OnInsert. Prefetched experts arrive through OnInsert(key, true)
// without an OnAccess. OnRemove follows every eviction (and budget shrink).
class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  virtual absl::string_view name() const = 0;

  // A forward pass begins: one decode step, or one prefill chunk.
  virtual void OnPassStart() {}
  // The engine is about to run MoE layer `layer` of the current pass.
  virtual void OnLayerStart(int layer) {}
  // A demand access (hit or miss) by the engine.
  virtual void OnAccess(const ExpertKey& key) {}
  virtual void OnHit(const ExpertKey& key) = 0;
  // key became resident; prefetch is true when no demand access asked for it.
  virtual void OnInsert(const ExpertKey& key, bool prefetch) = 0;
  virtual void OnRemove(const ExpertKey& key) = 0;
  // A prefetch asked for `key`, which was already resident, so nothing was
  // loaded. Policies that protect prefetched experts (least-stale,
  // layer-distance) treat it like OnInsert(key, true). Optional.
  virtual void OnPrefetchHit(const ExpertKey& key) {}
  // Router probabilities of a layer for the current token (all experts), for
  // policies that rank by predicted use. Optional.
  virtual void OnRouterScores(int layer, absl::Span<const float> probabilities) {}

  // A victim among the resident keys for which evictable(key) is true (the
  // cache excludes loading and pinned slots this way), or nullopt when none
  // is. Does not remove it: the cache calls OnRemove when it does.
  virtual std::optional<ExpertKey> PickVictim(const std::function<bool(const ExpertKey&)>& evictable) = 0;
};

struct PolicyOptions {
  int num_layers = 0;
  int num_experts = 0;
  // Required by "belady": the accesses the cache will see, in order.
  std::shared_ptr<const AccessTrace> future;
};

// Names: lru, lru-hint (LRU refreshed by prefetch hints), lfu, least-stale,
// layer-distance, belady.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(absl::string_view name,
                                                                   const PolicyOptions& options);
std::vector<std::string> EvictionPolicyNames();

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_EVICTION_POLICY_H_
