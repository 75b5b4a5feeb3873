#include "engine/expert_source.h"

#include "absl/strings/str_cat.h"

namespace expertd::engine {

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

CachedExperts::CachedExperts(cache::ExpertCache& cache, const io::ExpertFile& file, bool bf16_activations)
    : cache_(cache), bf16_activations_(bf16_activations), num_experts_(static_cast<int>(file.layout().num_experts)) {
  bundles_.resize(static_cast<size_t>(file.layout().num_layers) * file.layout().num_experts);
  for (int layer = 0; layer < static_cast<int>(file.layout().num_layers); ++layer) {
    for (int expert = 0; expert < num_experts_; ++expert) {
      absl::StatusOr<io::BundleLayout> bundle = file.Bundle(layer, expert);
      if (bundle.ok()) bundles_[static_cast<size_t>(layer) * num_experts_ + expert] = *bundle;
    }
  }
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

PrefetchTarget::Figures CachedExperts::figures() const {
  const cache::CacheStats stats = cache_.stats();
  Figures figures;
  figures.bytes_read = stats.dram.bytes_loaded;
  figures.read_busy_ns = stats.dram.read_busy_ns;
  figures.compute_stall_ns = stats.compute().wait_ns;
  return figures;
}

int CachedExperts::compute_slots() const {
  return cache_.stats().compute().slots;
}

ExpertHandle CachedExperts::Views(cache::ExpertCache::Pin pin) const {
  const std::byte* base = pin.data();
  // The cache pins only experts the file holds (it reads them by Find).
  const io::BundleLayout& bundle = bundles_[static_cast<size_t>(pin.key().layer) * num_experts_ + pin.key().expert];
  const auto view = [&](const io::BundleMatrix& m) {
    kernels::WeightMatrix matrix{m.dtype, base + m.offset_bytes, m.rows, m.cols};
    matrix.bf16_activations = bf16_activations_;
    return matrix;
  };
  ExpertHandle handle;
  handle.weights.gate = view(bundle.gate);
  handle.weights.up = view(bundle.up);
  handle.weights.down = view(bundle.down);
  handle.ready = pin.readiness();
  handle.pin = std::move(pin);
  return handle;
}

}  // namespace expertd::engine
