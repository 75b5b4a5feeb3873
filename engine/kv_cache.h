#ifndef EXPERTD_ENGINE_KV_CACHE_H_
#define EXPERTD_ENGINE_KV_CACHE_H_

#include <vector>

#include "absl/status/status.h"
#include "engine/model_config.h"

namespace expertd {

// The keys and values of one sequence, per layer, in f32: [position][kv_size]
// rows. Capacity grows by doubling up to max_tokens, so a decode step
// allocates only when it crosses a power of two.
class KvCache {
 public:
  KvCache(const ModelConfig& config, int max_tokens);

  int length() const { return length_; }
  int max_tokens() const { return max_tokens_; }
  int kv_size() const { return kv_size_; }

  // Makes room for `new_tokens` more positions; OutOfRange past max_tokens.
  absl::Status Reserve(int new_tokens);
  // Counts `n` positions, already written through Keys()/Values(), as cached.
  void Commit(int n) { length_ += n; }
  // Forgets every position from `length` on.
  void Truncate(int length);
  size_t memory_bytes() const;

  float* Keys(int layer) { return keys_[layer].data(); }
  float* Values(int layer) { return values_[layer].data(); }
  const float* Keys(int layer) const { return keys_[layer].data(); }
  const float* Values(int layer) const { return values_[layer].data(); }

 private:
  int kv_size_;
  int max_tokens_;
  int capacity_ = 0;
  int length_ = 0;
  std::vector<std::vector<float>> keys_;
  std::vector<std::vector<float>> values_;
};

}  // namespace expertd

#endif  // EXPERTD_ENGINE_KV_CACHE_H_
