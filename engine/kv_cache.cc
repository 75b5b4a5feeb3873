#include "engine/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace expertd {

KvCache::KvCache(const ModelConfig& config, int max_tokens)
    : kv_size_(config.kv_size()),
      max_tokens_(max_tokens),
      keys_(config.num_layers),
      values_(config.num_layers) {}

absl::Status KvCache::Reserve(int new_tokens) {
  const int needed = length_ + new_tokens;
  if (needed > max_tokens_) {
    return absl::OutOfRangeError(absl::StrCat("sequence of ", needed, " tokens exceeds the context limit of ",
                                              max_tokens_, " tokens"));
  }
  if (needed <= capacity_) return absl::OkStatus();
  const int capacity = std::min(max_tokens_, std::max({needed, 2 * capacity_, 64}));
  for (auto& k : keys_) k.resize(static_cast<size_t>(capacity) * kv_size_);
  for (auto& v : values_) v.resize(static_cast<size_t>(capacity) * kv_size_);
  capacity_ = capacity;
  return absl::OkStatus();
}

void KvCache::Truncate(int length) { length_ = std::clamp(length, 0, length_); }

size_t KvCache::memory_bytes() const {
  return 2 * keys_.size() * static_cast<size_t>(capacity_) * kv_size_ * sizeof(float);
}

}  // namespace expertd
