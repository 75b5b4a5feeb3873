// Layer-distance: Least-Stale with the layer cycle made explicit (ours; the
// "Beyond the paper" section of shared/SPEC-least-stale.md).
//
// Within a pass the engine runs layers 0..L-1 in order, so the next demand
// for (layer j, expert e) comes no sooner than (j - current) mod L layers from
// now; an expert of the layer just computed is the furthest from use. Among
// stale entries (as in Least-Stale), the victim is the one whose layer is
// furthest ahead in the cycle; ties go to the lower latest router score for
// that expert (an expert the router barely wanted is less likely to be routed
// to next time), then to the older entry. Current entries are ranked the same
// way and only when no stale entry is evictable.
//
// Entries live in one ordered set per (group, layer), ranked by (score, age);
// a victim search walks the L layers in distance order and takes the first
// evictable entry, so it costs O(L) plus the pinned entries it skips, never a
// scan of the cache.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "cache/eviction_policy.h"
#include "cache/policies/policies.h"
#include "cache/policies/policy_util.h"

namespace expertd::cache::policies {
namespace {

class LayerDistancePolicy : public EvictionPolicy {
 public:
  explicit LayerDistancePolicy(const PolicyOptions& options)
      : keys_(options.num_layers, options.num_experts),
        entries_(static_cast<size_t>(keys_.size())),
        stale_(static_cast<size_t>(options.num_layers)),
        current_(static_cast<size_t>(options.num_layers)) {}

  absl::string_view name() const override { return "layer-distance"; }

  // Every current entry goes stale. std::set::merge moves nodes without
  // allocating; the cost is O(resident) once per pass, the same order as the
  // router scores a pass delivers.
  void OnPassStart() override {
    for (int layer = 0; layer < keys_.num_layers(); ++layer) stale_[layer].MergeFrom(current_[layer]);
    ++pass_;
  }

  void OnLayerStart(int layer) override {
    if (layer >= 0 && layer < keys_.num_layers()) current_layer_ = layer;
  }

  void OnHit(const ExpertKey& key) override {
    if (keys_.Contains(key) && entries_[keys_.Index(key)].resident) MarkCurrent(keys_.Index(key));
  }
  void OnInsert(const ExpertKey& key, bool prefetch) override {
    if (keys_.Contains(key)) MarkCurrent(keys_.Index(key));
  }
  void OnPrefetchHit(const ExpertKey& key) override { OnHit(key); }

  void OnRemove(const ExpertKey& key) override {
    if (!keys_.Contains(key)) return;
    const int32_t index = keys_.Index(key);
    Entry& entry = entries_[index];
    if (!entry.resident) return;
    SetOf(key.layer, entry).Erase(entry.rank, index);
    entry.resident = false;
  }

  void OnRouterScores(int layer, absl::Span<const float> probabilities) override {
    if (layer < 0 || layer >= keys_.num_layers()) return;
    const size_t count = std::min(probabilities.size(), static_cast<size_t>(keys_.num_experts()));
    for (size_t e = 0; e < count; ++e) {
      const int32_t index = keys_.Index(ExpertKey{layer, static_cast<int32_t>(e)});
      Entry& entry = entries_[index];
      // NaN would break the set's strict weak ordering.
      const float score = std::isnan(probabilities[e]) ? 0.0f : probabilities[e];
      if (entry.resident && entry.rank.first != score) {
        const Rank old_rank = entry.rank;
        entry.rank.first = score;
        SetOf(layer, entry).Rerank(old_rank, entry.rank, index);
      } else {
        entry.rank.first = score;
      }
    }
  }

  std::optional<ExpertKey> PickVictim(const std::function<bool(const ExpertKey&)>& evictable) override {
    auto accept = [&](int32_t index) { return evictable(keys_.Key(index)); };
    for (std::vector<RankedSet<Rank>>* group : {&stale_, &current_}) {
      // Distance L-1 (the layer just computed) down to 0 (the layer running).
      for (int distance = keys_.num_layers() - 1; distance >= 0; --distance) {
        const RankedSet<Rank>& set = (*group)[(current_layer_ + distance) % keys_.num_layers()];
        std::optional<int32_t> victim = FirstAccepted(set.items().begin(), set.items().end(), accept);
        if (victim) return keys_.Key(*victim);
      }
    }
    return std::nullopt;
  }

 private:
  // (latest router score, clock when it became resident or current).
  using Rank = std::pair<float, uint64_t>;
  struct Entry {
    Rank rank{0.0f, 0};
    uint64_t epoch = 0;  // The pass in which it last became current.
    bool resident = false;
  };

  RankedSet<Rank>& SetOf(int layer, const Entry& entry) {
    return entry.epoch == pass_ ? current_[layer] : stale_[layer];
  }

  void MarkCurrent(int32_t index) {
    Entry& entry = entries_[index];
    const int layer = keys_.Key(index).layer;
    if (entry.resident) {
      if (entry.epoch == pass_) return;  // Keeps its age, as in Least-Stale.
      stale_[layer].Erase(entry.rank, index);
    }
    entry.resident = true;
    entry.epoch = pass_;
    entry.rank.second = ++clock_;
    current_[layer].Insert(entry.rank, index);
  }

  KeySpace keys_;
  std::vector<Entry> entries_;
  std::vector<RankedSet<Rank>> stale_;    // Indexed by layer.
  std::vector<RankedSet<Rank>> current_;  // Indexed by layer.
  uint64_t pass_ = 1;                     // Epoch 0 is never current.
  uint64_t clock_ = 0;
  int current_layer_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> NewLayerDistancePolicy(const PolicyOptions& options) {
  return std::make_unique<LayerDistancePolicy>(options);
}

}  // namespace expertd::cache::policies
