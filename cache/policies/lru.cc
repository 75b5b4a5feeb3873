// Least recently used: the baseline every other policy is compared with,
// in two forms.
//
// lru: hears of a prefetch only when it loads something (OnInsert); a
// prediction of an expert that is already resident (OnPrefetchHit) leaves it
// where it was, often at the cold end, so it is evicted just before the layer
// that wants it.
// lru-hint: the fair LRU baseline (DESIGN.md §3): a prefetch hint counts as
// a use. Least-Stale marks such an expert current, and in the simulator that
// refresh is where its advantage over plain LRU comes from, so comparing
// lru-hint with least-stale measures the current/stale split itself, not the
// hint.

#include <functional>
#include <memory>
#include <optional>

#include "cache/eviction_policy.h"
#include "cache/policies/policies.h"
#include "cache/policies/policy_util.h"

namespace expertd::cache::policies {
namespace {

class LruPolicy : public EvictionPolicy {
 public:
  LruPolicy(const PolicyOptions& options, bool refresh_on_hint)
      : refresh_on_hint_(refresh_on_hint), keys_(options.num_layers, options.num_experts), order_(keys_.size(), 1) {}

  absl::string_view name() const override { return refresh_on_hint_ ? "lru-hint" : "lru"; }

  // A demand access to a resident key is the use LRU orders by; OnHit that
  // follows it is then a no-op move to the same place.
  void OnAccess(const ExpertKey& key) override { Touch(key); }
  void OnHit(const ExpertKey& key) override { Touch(key); }
  // lru-hint: the expert is about to be used, so most recent, like a use.
  void OnPrefetchHit(const ExpertKey& key) override {
    if (refresh_on_hint_) Touch(key);
  }
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
    if (!order_.Linked(index)) return;  // Not resident: a miss.
    order_.Unlink(kOrder, index);
    order_.PushBack(kOrder, index);
  }

  const bool refresh_on_hint_;
  KeySpace keys_;
  IndexLists order_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLruPolicy(const PolicyOptions& options) {
  return std::make_unique<LruPolicy>(options, /*refresh_on_hint=*/false);
}

std::unique_ptr<EvictionPolicy> NewLruHintPolicy(const PolicyOptions& options) {
  return std::make_unique<LruPolicy>(options, /*refresh_on_hint=*/true);
}

}  // namespace expertd::cache::policies
