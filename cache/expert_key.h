#ifndef EXPERTD_CACHE_EXPERT_KEY_H_
#define EXPERTD_CACHE_EXPERT_KEY_H_

#include <cstdint>
#include <string>

namespace expertd::cache {

// The unit of caching: one routed expert of one MoE layer (its gate, up and
// down projections travel together).
struct ExpertKey {
  int32_t layer = 0;
  int32_t expert = 0;

  friend bool operator==(const ExpertKey& a, const ExpertKey& b) {
    return a.layer == b.layer && a.expert == b.expert;
  }
  friend bool operator!=(const ExpertKey& a, const ExpertKey& b) { return !(a == b); }
  friend bool operator<(const ExpertKey& a, const ExpertKey& b) {
    return a.layer != b.layer ? a.layer < b.layer : a.expert < b.expert;
  }
  template <typename H>
  friend H AbslHashValue(H h, const ExpertKey& key) {
    return H::combine(std::move(h), key.layer, key.expert);
  }
  std::string ToString() const { return "layer " + std::to_string(layer) + " expert " + std::to_string(expert); }
};

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_EXPERT_KEY_H_
