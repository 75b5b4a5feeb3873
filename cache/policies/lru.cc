// Least recently used: the baseline every other policy is compared with.

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
  explicit LruPolicy(const PolicyOptions& options)
      : keys_(options.num_layers, options.num_experts), order_(keys_.size(), 1) {}

  absl::string_view name() const override { return "lru"; }

  // A demand access to a resident key is the use LRU orders by; OnHit that
  // follows it is then a no-op move to the same place.
  void OnAccess(const ExpertKey& key) override { Touch(key); }
  void OnHit(const ExpertKey& key) override { Touch(key); }
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

  KeySpace keys_;
  IndexLists order_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLruPolicy(const PolicyOptions& options) {
  return std::make_unique<LruPolicy>(options);
}

}  // namespace expertd::cache::policies
