// Belady's MIN: evict the entry whose next use is furthest in the future.
// It needs the future, so it runs only where a recorded trace is replayed
// (simulator, bench-cache); its hit rate is the upper bound the online
// policies are reported against (DESIGN.md §3).
//
// The trace is flattened once into "next position of the same key" links.
// The cache reports demand accesses in trace order, so a cursor advanced by
// OnAccess tells where "now" is, and each key's next use moves forward only
// when that key is accessed: O(1) per access plus O(log n) to re-rank it.

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cache/eviction_policy.h"
#include "cache/policies/policies.h"
#include "cache/policies/policy_util.h"

namespace expertd::cache::policies {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

class BeladyPolicy : public EvictionPolicy {
 public:
  BeladyPolicy(const PolicyOptions& options, const AccessTrace& future)
      : keys_(options.num_layers, options.num_experts),
        next_use_(static_cast<size_t>(keys_.size()), kNever),
        resident_(static_cast<size_t>(keys_.size()), false) {
    // Walk the trace backwards so each position links to the next one of its
    // key, and next_use_ ends at each key's first position.
    for (const auto& pass : future.passes) flat_.insert(flat_.end(), pass.begin(), pass.end());
    next_position_.resize(flat_.size());
    for (int64_t p = static_cast<int64_t>(flat_.size()) - 1; p >= 0; --p) {
      const int32_t index = keys_.Index(flat_[p]);
      next_position_[p] = next_use_[index];
      next_use_[index] = p;
    }
  }

  absl::string_view name() const override { return "belady"; }

  // If the cache ever strays from the trace the victims stay resident and
  // evictable, only no longer optimal: each key's next use is advanced past
  // the cursor when that key is accessed.
  void OnAccess(const ExpertKey& key) override {
    ++cursor_;
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    const int64_t old_next = next_use_[index];
    int64_t next = old_next;
    while (next != kNever && next < cursor_) next = next_position_[next];
    next_use_[index] = next;
    if (resident_[index] && next != old_next) order_.Rerank(old_next, next, index);
  }

  void OnHit(const ExpertKey& key) override {}

  void OnInsert(const ExpertKey& key, bool prefetch) override {
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    if (resident_[index]) return;
    resident_[index] = true;
    order_.Insert(next_use_[index], index);
  }

  void OnRemove(const ExpertKey& key) override {
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    if (!resident_[index]) return;
    resident_[index] = false;
    order_.Erase(next_use_[index], index);
  }

  std::optional<ExpertKey> PickVictim(const std::function<bool(const ExpertKey&)>& evictable) override {
    std::optional<int32_t> victim = FirstAccepted(order_.items().rbegin(), order_.items().rend(),
                                                  [&](int32_t index) { return evictable(keys_.Key(index)); });
    if (!victim) return std::nullopt;
    return keys_.Key(*victim);
  }

 private:
  KeySpace keys_;
  std::vector<ExpertKey> flat_;          // The trace, pass after pass.
  std::vector<int64_t> next_position_;   // Per position: next position of its key.
  std::vector<int64_t> next_use_;        // Per key: first position >= cursor_.
  std::vector<bool> resident_;
  RankedSet<int64_t> order_;             // Resident keys by next use.
  int64_t cursor_ = 0;                   // Demand accesses seen so far.
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvictionPolicy>> NewBeladyPolicy(const PolicyOptions& options) {
  if (options.future == nullptr) {
    return absl::InvalidArgumentError(
        "policy \"belady\" is an offline oracle and needs the future accesses (PolicyOptions::future); "
        "use it only when replaying a recorded trace");
  }
  const AccessTrace& future = *options.future;
  if (future.num_layers != options.num_layers || future.num_experts != options.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("policy \"belady\": the future trace has ", future.num_layers,
                                                   " layers and ", future.num_experts, " experts, the model ",
                                                   options.num_layers, " and ", options.num_experts));
  }
  KeySpace keys(options.num_layers, options.num_experts);
  for (size_t p = 0; p < future.passes.size(); ++p) {
    for (size_t i = 0; i < future.passes[p].size(); ++i) {
      if (!keys.Contains(future.passes[p][i])) {
        return absl::InvalidArgumentError(absl::StrCat("policy \"belady\": access ", i, " of pass ", p, " (",
                                                       future.passes[p][i].ToString(),
                                                       ") is outside the model"));
      }
    }
  }
  return std::make_unique<BeladyPolicy>(options, future);
}

}  // namespace expertd::cache::policies
