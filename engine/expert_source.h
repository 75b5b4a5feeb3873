#ifndef EXPERTD_ENGINE_EXPERT_SOURCE_H_
#define EXPERTD_ENGINE_EXPERT_SOURCE_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cache/expert_cache.h"
#include "cache/readiness.h"
#include "engine/layer_observer.h"
#include "model/model_weights.h"
#include "engine/prefetch_target.h"
#include "io/expert_bundle.h"
#include "io/expert_file.h"

namespace expertd::engine {

// A routed expert's weights, valid while the handle lives (it may pin a
// cache slot), and readable once `ready` says so: a device slot's copy may
// still be in flight when the handle is given out. The compute waits on it
// where it runs (MoeLayerCompute::AwaitExpert: a host Wait, or a device
// stream waiting on the copy's event).
struct ExpertHandle {
  model::FeedForwardWeights weights;
  cache::ExpertCache::Pin pin;  // empty for resident weights
  cache::Readiness ready;       // the pin's; ready at once for resident weights
};

// Where the forward pass gets routed experts from. It is also the first
// layer-cycle listener of the pass (engine/moe_layer_runner.h): the cache's
// policies need BeginPass and BeginLayer.
class ExpertSource : public LayerObserver {
 public:
  virtual absl::StatusOr<ExpertHandle> Acquire(int layer, int expert) = 0;
  // The expert if it can be computed on right now, without waiting for a
  // load; nullopt otherwise (then Acquire it later).
  virtual std::optional<ExpertHandle> TryAcquire(int layer, int expert) = 0;
  // The expert's weights in host memory when they are there now, for a
  // device compute tier's miss that the CPU can compute instead (execution
  // placement); nullopt when there is no such copy.
  virtual std::optional<ExpertHandle> TryAcquireHostCopy(int layer, int expert) { return std::nullopt; }
  // Whether TryAcquireHostCopy would succeed now: a pure query (no
  // statistics, no policy event), so asking does not count an access.
  virtual bool HasHostCopy(int layer, int expert) const { return false; }
  // Starts bringing in an expert that Acquire will ask for shortly.
  virtual void StartLoad(int layer, int expert) {}
  // Whether Acquire would return at once (no load): for cache-aware routing.
  virtual bool IsReady(int layer, int expert) const { return true; }
  // Copies into the device tier completed so far, for execution placement's
  // estimate of a copy's cost (none without a device tier).
  virtual cache::DeviceCopyStats device_copies() const { return {}; }
  // Whether the compute tier is a device tier (pins point at device memory).
  virtual bool has_device_tier() const { return false; }
};

// Every expert resident: views into the model's weight memory.
class ResidentExperts : public ExpertSource {
 public:
  explicit ResidentExperts(const model::ModelWeights& weights) : weights_(weights) {}
  absl::StatusOr<ExpertHandle> Acquire(int layer, int expert) override;
  std::optional<ExpertHandle> TryAcquire(int layer, int expert) override;

 private:
  const model::ModelWeights& weights_;
};

// Experts through the tiered cache, from a packed expert file: the cache
// glue, for the layer runner (ExpertSource) and the prefetcher
// (PrefetchTarget). Each expert's views follow its own bundle (its
// matrices' dtypes and sizes, from the file's index), so a slot may hold
// q4_k/q4_k/q6_k on one layer and q4_k throughout on the next.
class CachedExperts : public ExpertSource, public PrefetchTarget {
 public:
  // file: the one the cache reads; only its index is read, here.
  // bf16_activations: set on every view (kernels::WeightMatrix), as the
  // model's own matrices have it (model::WeightLoadOptions).
  CachedExperts(cache::ExpertCache& cache, const io::ExpertFile& file, bool bf16_activations = false);
  absl::StatusOr<ExpertHandle> Acquire(int layer, int expert) override;
  std::optional<ExpertHandle> TryAcquire(int layer, int expert) override;
  std::optional<ExpertHandle> TryAcquireHostCopy(int layer, int expert) override;
  bool HasHostCopy(int layer, int expert) const override { return cache_.HasHostCopy({layer, expert}); }
  void StartLoad(int layer, int expert) override { cache_.StartLoad({layer, expert}, /*prefetch=*/false); }
  bool IsReady(int layer, int expert) const override { return cache_.IsReady({layer, expert}); }
  void BeginPass() override { cache_.BeginPass(); }
  void BeginLayer(int layer) override { cache_.BeginLayer(layer); }
  void OnRouterScores(int layer, absl::Span<const float> scores) override { cache_.OnRouterScores(layer, scores); }
  void OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen, int n_tokens,
                int k) override {
    cache_.LayerRouted(layer);
  }
  cache::DeviceCopyStats device_copies() const override { return cache_.stats().device_copies; }
  bool has_device_tier() const override { return cache_.has_device_tier(); }

  // PrefetchTarget: reads into DRAM, copied on into a device tier.
  bool StartPrefetch(int layer, int expert) override { return cache_.Prefetch({layer, expert}); }
  int reads_in_flight() const override { return cache_.reads_in_flight(); }
  Figures figures() const override;
  uint64_t expert_bytes() const override { return cache_.slot_bytes(); }
  int compute_slots() const override;

 private:
  ExpertHandle Views(cache::ExpertCache::Pin pin) const;

  cache::ExpertCache& cache_;
  const bool bf16_activations_;
  int num_experts_ = 0;
  // [layer * num_experts + expert]: where gate, up and down lie in the
  // expert's slot; default (empty) for an expert the file does not hold,
  // which the cache never pins.
  std::vector<io::BundleLayout> bundles_;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_EXPERT_SOURCE_H_
