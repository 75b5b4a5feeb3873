#ifndef EXPERTD_ENGINE_KV_CACHE_H_
#define EXPERTD_ENGINE_KV_CACHE_H_

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/model_config.h"

namespace expertd::engine {

// Where a KV cache keeps its rows: host memory for the CPU pass, device
// memory for the GPU pass (engine/cuda/cuda_forward.h), which reads and
// writes them in place.
class KvMemory {
 public:
  virtual ~KvMemory() = default;
  // Whether the CPU can read the rows (the CPU pass accepts only these).
  virtual bool on_host() const = 0;
  // `floats` zeroed floats, freed when the last reference goes.
  virtual absl::StatusOr<std::shared_ptr<float>> Allocate(size_t floats) = 0;
  // Copies `floats` floats between two allocations of this memory.
  virtual absl::Status Copy(float* dst, const float* src, size_t floats) = 0;
};

// Plain host memory: the default.
KvMemory& HostKvMemory();

// The keys and values of one sequence, per layer, in f32: [position][kv_size]
// rows. With multi-head latent attention (ModelConfig::mla) the key rows
// hold each position's latent and rotated RoPE key, and there are no value
// rows (Values() is null): the latent is the cache, not per-head K and V.
// Capacity grows by doubling up to max_tokens, so a decode step
// allocates only when it crosses a power of two.
class KvCache {
 public:
  // memory must outlive the cache; null is HostKvMemory().
  KvCache(const model::ModelConfig& config, int max_tokens, KvMemory* memory = nullptr);

  // The most memory a cache of max_tokens positions ever holds (capacity
  // grows by doubling but stops at max_tokens): what admission reserves.
  static size_t BytesFor(const model::ModelConfig& config, int max_tokens);

  int length() const { return length_; }
  int max_tokens() const { return max_tokens_; }
  int kv_size() const { return kv_size_; }
  const KvMemory& memory() const { return *memory_; }

  // Makes room for `new_tokens` more positions; OutOfRange past max_tokens,
  // the memory's error (out of device memory) when it cannot grow. On error
  // the cache is as it was.
  absl::Status Reserve(int new_tokens);
  // Counts `n` positions, already written through Keys()/Values(), as cached.
  void Commit(int n) { length_ += n; }
  // Forgets every position from `length` on.
  void Truncate(int length);
  size_t memory_bytes() const;

  // Rows in the cache's memory: device pointers for device memory.
  float* Keys(int layer) { return keys_[layer].get(); }
  float* Values(int layer) { return values_.empty() ? nullptr : values_[layer].get(); }
  const float* Keys(int layer) const { return keys_[layer].get(); }
  const float* Values(int layer) const { return values_.empty() ? nullptr : values_[layer].get(); }

 private:
  KvMemory* memory_;
  int kv_size_;
  int max_tokens_;
  int capacity_ = 0;
  int length_ = 0;
  std::vector<std::shared_ptr<float>> keys_;
  std::vector<std::shared_ptr<float>> values_;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_KV_CACHE_H_
