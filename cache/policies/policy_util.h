#ifndef EXPERTD_CACHE_POLICIES_POLICY_UTIL_H_
#define EXPERTD_CACHE_POLICIES_POLICY_UTIL_H_

// Building blocks shared by the policies in this folder. Internal to
// cache/policies: nothing outside the folder includes this header.

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "cache/expert_key.h"

namespace expertd::cache::policies {

// Dense numbering of the keys of one model: index = layer * num_experts +
// expert. Policies keep per-key state in flat arrays indexed this way, so no
// event hashes. Keys outside the model are not indexable; the policies ignore
// them (the cache never holds such keys).
class KeySpace {
 public:
  KeySpace(int num_layers, int num_experts) : num_layers_(num_layers), num_experts_(num_experts) {}

  int num_layers() const { return num_layers_; }
  int num_experts() const { return num_experts_; }
  int32_t size() const { return num_layers_ * num_experts_; }
  bool Contains(const ExpertKey& key) const {
    return key.layer >= 0 && key.layer < num_layers_ && key.expert >= 0 && key.expert < num_experts_;
  }
  int32_t Index(const ExpertKey& key) const { return key.layer * num_experts_ + key.expert; }
  ExpertKey Key(int32_t index) const { return ExpertKey{index / num_experts_, index % num_experts_}; }

 private:
  int num_layers_;
  int num_experts_;
};

// Intrusive doubly linked lists over a fixed array of key indices; each index
// is in at most one list at a time. Nodes do not record which list holds
// them: the caller knows (Least-Stale derives it from a pass epoch), which is
// what makes SpliceBack O(1) — turning every current entry stale at a pass
// start touches two list heads, not every entry. No operation allocates.
class IndexLists {
 public:
  static constexpr int32_t kNone = -1;

  IndexLists(int32_t num_indices, int num_lists)
      : nodes_(static_cast<size_t>(num_indices)), heads_(static_cast<size_t>(num_lists)) {}

  bool Linked(int32_t index) const { return nodes_[index].linked; }
  int32_t Front(int list) const { return heads_[list].front; }
  int32_t Next(int32_t index) const { return nodes_[index].next; }

  void PushBack(int list, int32_t index) {
    Node& node = nodes_[index];
    Head& head = heads_[list];
    node.linked = true;
    node.prev = head.back;
    node.next = kNone;
    if (head.back == kNone) {
      head.front = index;
    } else {
      nodes_[head.back].next = index;
    }
    head.back = index;
  }

  // `list` must be the list that holds `index`.
  void Unlink(int list, int32_t index) {
    Node& node = nodes_[index];
    if (!node.linked) return;
    Head& head = heads_[list];
    if (node.prev == kNone) {
      head.front = node.next;
    } else {
      nodes_[node.prev].next = node.next;
    }
    if (node.next == kNone) {
      head.back = node.prev;
    } else {
      nodes_[node.next].prev = node.prev;
    }
    node = Node{};
  }

  // Moves all of `from` to the back of `to`, keeping order.
  void SpliceBack(int to, int from) {
    Head& src = heads_[from];
    if (src.front == kNone) return;
    Head& dst = heads_[to];
    if (dst.back == kNone) {
      dst.front = src.front;
    } else {
      nodes_[dst.back].next = src.front;
      nodes_[src.front].prev = dst.back;
    }
    dst.back = src.back;
    src = Head{};
  }

  // First index of `list`, front to back, for which `accept` holds.
  std::optional<int32_t> FindFirst(int list, const std::function<bool(int32_t)>& accept) const {
    for (int32_t i = heads_[list].front; i != kNone; i = nodes_[i].next) {
      if (accept(i)) return i;
    }
    return std::nullopt;
  }

 private:
  struct Node {
    int32_t prev = kNone;
    int32_t next = kNone;
    bool linked = false;
  };
  struct Head {
    int32_t front = kNone;
    int32_t back = kNone;
  };
  std::vector<Node> nodes_;
  std::vector<Head> heads_;
};

// An ordered set of (rank, key index). Re-ranking and removal recycle the
// set's nodes (std::set node handles), so once the set has held as many
// entries as the cache has slots, no event allocates. O(log n) per change.
template <typename Rank>
class RankedSet {
 public:
  using Item = std::pair<Rank, int32_t>;
  using Set = std::set<Item>;

  void Insert(const Rank& rank, int32_t index) {
    if (spare_.empty()) {
      set_.insert(Item{rank, index});
      return;
    }
    typename Set::node_type node = std::move(spare_.back());
    spare_.pop_back();
    node.value() = Item{rank, index};
    set_.insert(std::move(node));
  }

  void Erase(const Rank& rank, int32_t index) {
    auto it = set_.find(Item{rank, index});
    if (it != set_.end()) spare_.push_back(set_.extract(it));
  }

  void Rerank(const Rank& old_rank, const Rank& new_rank, int32_t index) {
    auto it = set_.find(Item{old_rank, index});
    if (it == set_.end()) return;
    typename Set::node_type node = set_.extract(it);
    node.value().first = new_rank;
    set_.insert(std::move(node));
  }

  // Moves every item of `other` into this set without allocating.
  void MergeFrom(RankedSet& other) { set_.merge(other.set_); }

  bool empty() const { return set_.empty(); }
  const Set& items() const { return set_; }

 private:
  Set set_;
  std::vector<typename Set::node_type> spare_;
};

// The first item of `items` (iterated from `begin` to `end`) whose key is
// accepted. Victim searches share this: walk the policy's order, skip pinned.
template <typename It>
std::optional<int32_t> FirstAccepted(It begin, It end, const std::function<bool(int32_t)>& accept) {
  for (It it = begin; it != end; ++it) {
    if (accept(it->second)) return it->second;
  }
  return std::nullopt;
}

}  // namespace expertd::cache::policies

#endif  // EXPERTD_CACHE_POLICIES_POLICY_UTIL_H_
