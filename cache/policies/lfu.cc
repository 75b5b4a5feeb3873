// Least frequently used. An expert's frequency counts its inserts (demand or
// prefetch) and hits over the whole run, and survives its eviction: in MoE the
// frequency is the router's preference for that expert, a property of the
// expert rather than of its stay in the cache. (Counting only the current
// stay, every newcomer starts at one and is the next victim, which halved
// LFU's hit rate on the synthetic OLMoE-shaped traces.) Ties go to the entry
// used least recently.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/policies.h"
#include "cache/policies/policy_util.h"

namespace expertd::cache::policies {
namespace {

class LfuPolicy : public EvictionPolicy {
 public:
  explicit LfuPolicy(const PolicyOptions& options)
      : keys_(options.num_layers, options.num_experts), entries_(static_cast<size_t>(keys_.size())) {}

  absl::string_view name() const override { return "lfu"; }

  void OnHit(const ExpertKey& key) override {
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    Entry& entry = entries_[index];
    if (!entry.resident) return;
    const Rank old_rank = entry.rank;
    entry.rank = Rank{old_rank.first + 1, ++clock_};
    order_.Rerank(old_rank, entry.rank, index);
  }

  void OnInsert(const ExpertKey& key, bool prefetch) override {
    if (!keys_.Contains(key)) return;
    Entry& entry = entries_[keys_.Index(key)];
    if (entry.resident) {
      OnHit(key);
      return;
    }
    entry.resident = true;
    entry.rank = Rank{entry.rank.first + 1, ++clock_};
    order_.Insert(entry.rank, keys_.Index(key));
  }

  void OnRemove(const ExpertKey& key) override {
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    Entry& entry = entries_[index];
    if (!entry.resident) return;
    order_.Erase(entry.rank, index);
    entry.resident = false;
  }

  std::optional<ExpertKey> PickVictim(const std::function<bool(const ExpertKey&)>& evictable) override {
    std::optional<int32_t> victim = FirstAccepted(order_.items().begin(), order_.items().end(),
                                                  [&](int32_t index) { return evictable(keys_.Key(index)); });
    if (!victim) return std::nullopt;
    return keys_.Key(*victim);
  }

 private:
  // (uses so far, clock of the last use): the smallest is the victim. Kept
  // for evicted keys too, which carry their count into their next stay.
  using Rank = std::pair<int64_t, uint64_t>;
  struct Entry {
    Rank rank{0, 0};
    bool resident = false;
  };

  KeySpace keys_;
  std::vector<Entry> entries_;
  RankedSet<Rank> order_;
  uint64_t clock_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLfuPolicy(const PolicyOptions& options) {
  return std::make_unique<LfuPolicy>(options);
}

}  // namespace expertd::cache::policies
