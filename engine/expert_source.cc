#include "engine/expert_source.h"

#include "absl/strings/str_cat.h"

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
  const std::byte* base = pin.data();
  const auto view = [&](const io::BundleMatrix& m) {
    return WeightMatrix{bundle_.dtype, base + m.offset_bytes, m.rows, m.cols};
  };
  ExpertHandle handle;
  handle.weights.gate = view(bundle_.gate);
  handle.weights.up = view(bundle_.up);
  handle.weights.down = view(bundle_.down);
  handle.pin = std::move(pin);
  return handle;
}

}  // namespace expertd
