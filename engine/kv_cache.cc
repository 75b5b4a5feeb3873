#include "engine/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace expertd::engine {
namespace {

class HostMemory : public KvMemory {
 public:
  bool on_host() const override { return true; }
  absl::StatusOr<std::shared_ptr<float>> Allocate(size_t floats) override {
    return std::shared_ptr<float>(new float[floats](), std::default_delete<float[]>());
  }
  absl::Status Copy(float* dst, const float* src, size_t floats) override {
    std::memcpy(dst, src, floats * sizeof(float));
    return absl::OkStatus();
  }
};

}  // namespace

KvMemory& HostKvMemory() {
  // Stateless, so one shared instance is no shared mutable state.
  static HostMemory memory;
  return memory;
}

KvCache::KvCache(const model::ModelConfig& config, int max_tokens, KvMemory* memory)
    : memory_(memory != nullptr ? memory : &HostKvMemory()),
      kv_size_(config.kv_size()),
      max_tokens_(max_tokens),
      keys_(config.num_layers),
      values_(config.kv_has_values() ? config.num_layers : 0) {}

absl::Status KvCache::Reserve(int new_tokens) {
  const int needed = length_ + new_tokens;
  if (needed > max_tokens_) {
    return absl::OutOfRangeError(absl::StrCat("sequence of ", needed, " tokens exceeds the context limit of ",
                                              max_tokens_, " tokens"));
  }
  if (needed <= capacity_) return absl::OkStatus();
  const int capacity = std::min(max_tokens_, std::max({needed, 2 * capacity_, 64}));
  const size_t floats = static_cast<size_t>(capacity) * kv_size_;
  const size_t kept = static_cast<size_t>(length_) * kv_size_;
  // Build every new array before replacing any, so a failure (out of device
  // memory) leaves the cache as it was.
  std::vector<std::shared_ptr<float>> keys(keys_.size());
  std::vector<std::shared_ptr<float>> values(values_.size());
  for (size_t layer = 0; layer < keys_.size(); ++layer) {
    for (auto [from, to] : {std::pair{&keys_, &keys}, std::pair{&values_, &values}}) {
      if (layer >= from->size()) continue;  // no value rows (multi-head latent attention)
      absl::StatusOr<std::shared_ptr<float>> block = memory_->Allocate(floats);
      if (!block.ok()) {
        return absl::Status(block.status().code(), absl::StrCat("growing a KV cache to ", capacity,
                                                                " tokens: ", block.status().message()));
      }
      if (kept > 0) {
        if (absl::Status s = memory_->Copy(block->get(), (*from)[layer].get(), kept); !s.ok()) return s;
      }
      (*to)[layer] = std::move(*block);
    }
  }
  keys_ = std::move(keys);
  values_ = std::move(values);
  capacity_ = capacity;
  return absl::OkStatus();
}

void KvCache::Truncate(int length) { length_ = std::clamp(length, 0, length_); }

size_t KvCache::BytesFor(const model::ModelConfig& config, int max_tokens) {
  return (config.kv_has_values() ? 2 : 1) * static_cast<size_t>(config.num_layers) * static_cast<size_t>(std::max(0, max_tokens)) *
         static_cast<size_t>(config.kv_size()) * sizeof(float);
}

size_t KvCache::memory_bytes() const {
  return (keys_.size() + values_.size()) * static_cast<size_t>(capacity_) * kv_size_ * sizeof(float);
}

}  // namespace expertd::engine
