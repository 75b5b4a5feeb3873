// LRU that also takes prefetch hints: the fair LRU baseline (DESIGN.md §3).
//
// Plain LRU (lru.cc) hears of a prefetch only when it loads something
// (OnInsert); a prediction of an expert that is already resident
// (OnPrefetchHit) leaves it where it was, often at the cold end, so it is
// evicted just before the layer that wants it. Least-Stale marks such an
// expert current, and in the simulator that refresh is where its advantage
// over LRU comes from. This policy is LRU with that one change: a prefetch
// hint counts as a use, so comparing it with least-stale measures the
// current/stale split itself, not the hint.

#include <functional>
#include <memory>
#include <optional>

#include "cache/eviction_policy.h"
#include "cache/policies/policies.h"
#include "cache/policies/policy_util.h"

namespace expertd::cache::policies {
namespace {

class LruHintPolicy : public EvictionPolicy {
 public:
  explicit LruHintPolicy(const PolicyOptions& options)
      : keys_(options.num_layers, options.num_experts), order_(keys_.size(), 1) {}

  absl::string_view name() const override { return "lru-hint"; }

  void OnAccess(const ExpertKey& key) override { Touch(key); }
  void OnHit(const ExpertKey& key) override { Touch(key); }
  // The expert is about to be used: most recent, like a use.
  void OnPrefetchHit(const ExpertKey& key) override { Touch(key); }
  void OnInsert(const ExpertKey& key, bool prefetch) override {
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    order_.Unlink(kOrder, index);
    order_.PushBack(kOrder, index);
  }
  void OnRemove(const ExpertKey& key) override {
    if (keys_.Contains(key)) order_.Unlink(kOrder, keys_.Index(key));
  }

  std::optional<ExpertKey> PickVictim(const std::function<bool(const ExpertKey&)>& evictable) override {
    std::optional<int32_t> victim =
        order_.FindFirst(kOrder, [&](int32_t index) { return evictable(keys_.Key(index)); });
    if (!victim) return std::nullopt;
    return keys_.Key(*victim);
  }

 private:
  // One list, least recent at the front.
  static constexpr int kOrder = 0;

  void Touch(const ExpertKey& key) {
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    if (!order_.Linked(index)) return;  // not resident
    order_.Unlink(kOrder, index);
    order_.PushBack(kOrder, index);
  }

  KeySpace keys_;
  IndexLists order_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLruHintPolicy(const PolicyOptions& options) {
  return std::make_unique<LruHintPolicy>(options);
}

}  // namespace expertd::cache::policies
