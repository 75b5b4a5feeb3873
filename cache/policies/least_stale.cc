// Least-Stale (SpecMD, arXiv 2602.03921; shared/SPEC-least-stale.md).
//
// A forward pass visits the MoE layers front to back, so an expert of a layer
// already computed in this pass cannot be used again until the next pass,
// while an expert just prefetched for the next layer is needed at once. LRU
// gets this backwards; Least-Stale splits entries into current (touched in
// this pass) and stale (touched only earlier) and evicts stale ones first.
//
// Both groups are FIFO lists ordered by when the entry became resident or
// current. A pass start appends the whole current list to the stale list
// (O(1)): entries that went stale earlier stay in front. Whether an entry is
// current is "its epoch equals the pass counter", so the flip touches no
// entry.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "cache/eviction_policy.h"
#include "cache/policies/policies.h"
#include "cache/policies/policy_util.h"

namespace expertd::cache::policies {
namespace {

class LeastStalePolicy : public EvictionPolicy {
 public:
  explicit LeastStalePolicy(const PolicyOptions& options)
      : keys_(options.num_layers, options.num_experts),
        lists_(keys_.size(), 2),
        epoch_(static_cast<size_t>(keys_.size()), 0) {}

  absl::string_view name() const override { return "least-stale"; }

  void OnPassStart() override {
    lists_.SpliceBack(kStale, kCurrent);
    ++pass_;
  }

  // Spec rule 3: a hit, an insert and a prefetch insert mark the entry current.
  void OnHit(const ExpertKey& key) override {
    if (keys_.Contains(key) && lists_.Linked(keys_.Index(key))) MarkCurrent(keys_.Index(key));
  }
  void OnInsert(const ExpertKey& key, bool prefetch) override {
    if (keys_.Contains(key)) MarkCurrent(keys_.Index(key));
  }
  // A prefetch that found its expert resident is a prefetch insert that
  // needed no I/O: the expert is about to be used, so it must be protected.
  void OnPrefetchHit(const ExpertKey& key) override { OnHit(key); }

  void OnRemove(const ExpertKey& key) override {
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    if (lists_.Linked(index)) lists_.Unlink(ListOf(index), index);
  }

  // Spec rule 4: the oldest evictable stale entry, else the oldest current.
  std::optional<ExpertKey> PickVictim(const std::function<bool(const ExpertKey&)>& evictable) override {
    auto accept = [&](int32_t index) { return evictable(keys_.Key(index)); };
    std::optional<int32_t> victim = lists_.FindFirst(kStale, accept);
    if (!victim) victim = lists_.FindFirst(kCurrent, accept);
    if (!victim) return std::nullopt;
    return keys_.Key(*victim);
  }

 private:
  static constexpr int kStale = 0;
  static constexpr int kCurrent = 1;

  int ListOf(int32_t index) const { return epoch_[index] == pass_ ? kCurrent : kStale; }

  // An entry already current keeps its place: the FIFO order is of when it
  // became current, not of its latest use.
  void MarkCurrent(int32_t index) {
    if (lists_.Linked(index)) {
      if (ListOf(index) == kCurrent) return;
      lists_.Unlink(kStale, index);
    }
    epoch_[index] = pass_;
    lists_.PushBack(kCurrent, index);
  }

  KeySpace keys_;
  IndexLists lists_;
  // The pass in which each entry last became current. Starts at 1 so that a
  // fresh policy's entries (epoch 0) are not mistaken for current ones.
  std::vector<uint64_t> epoch_;
  uint64_t pass_ = 1;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLeastStalePolicy(const PolicyOptions& options) {
  return std::make_unique<LeastStalePolicy>(options);
}

}  // namespace expertd::cache::policies
