#include "engine/expert_source.h"

#include "absl/strings/str_cat.h"
#include "base/dtype.h"

namespace expertd {

absl::StatusOr<ExpertHandle> ResidentExperts::Acquire(int layer, int expert) {
  ExpertHandle handle;
  handle.weights = weights_.layers[layer].experts[expert];
  if (handle.weights.gate.data == nullptr) {
    // Model::Load with resident_experts = false keeps only the dense weights.
    return absl::FailedPreconditionError(absl::StrCat(
        "layer ", layer, " expert ", expert, " is not in memory: the model was loaded without its experts; "
        "run it through the expert cache (a DRAM budget) or load it with resident experts"));
  }
  return handle;
}

std::optional<ExpertHandle> ResidentExperts::TryAcquire(int layer, int expert) {
  absl::StatusOr<ExpertHandle> handle = Acquire(layer, expert);
  if (!handle.ok()) return std::nullopt;  // Acquire then reports why
  return std::move(*handle);
}

absl::StatusOr<ExpertHandle> CachedExperts::Acquire(int layer, int expert) {
  auto pin = cache_.Acquire({layer, expert});
  if (!pin.ok()) return pin.status();
  return Views(std::move(*pin));
}

std::optional<ExpertHandle> CachedExperts::TryAcquire(int layer, int expert) {
  auto pin = cache_.TryAcquire({layer, expert});
  if (!pin) return std::nullopt;
  return Views(std::move(*pin));
}

std::optional<ExpertHandle> CachedExperts::TryAcquireHostCopy(int layer, int expert) {
  auto pin = cache_.TryAcquireHostCopy({layer, expert});
  if (!pin) return std::nullopt;
  return Views(std::move(*pin));
}

ExpertHandle CachedExperts::Views(cache::ExpertCache::Pin pin) const {
  // A bundle is gate [ffn][hidden] | up [ffn][hidden] | down [hidden][ffn].
  const DType dtype = layout_.dtype;
  const int64_t hidden = layout_.hidden_size;
  const int64_t ffn = layout_.intermediate_size;
  const size_t matrix_bytes = static_cast<size_t>(DTypeBytes(dtype, hidden * ffn));
  const std::byte* base = pin.data();
  ExpertHandle handle;
  handle.weights.gate = {dtype, base, ffn, hidden};
  handle.weights.up = {dtype, base + matrix_bytes, ffn, hidden};
  handle.weights.down = {dtype, base + 2 * matrix_bytes, hidden, ffn};
  handle.pin = std::move(pin);
  return handle;
}

}  // namespace expertd
