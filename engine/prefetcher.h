#ifndef EXPERTD_ENGINE_PREFETCHER_H_
#define EXPERTD_ENGINE_PREFETCHER_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "cache/expert_cache.h"
#include "engine/layer_observer.h"
#include "engine/model.h"
#include "kernels/cpu/thread_pool.h"
#include "predictor/expert_predictor.h"
#include "predictor/prediction_stats.h"
#include "predictor/prefetch_scheduler.h"

namespace expertd {

struct PrefetcherOptions {
  predictor::PredictorOptions predictor;  // kind, lookahead
  predictor::PrefetchSchedulerOptions scheduler;
};

// Cross-layer speculative prefetch (Fate, with SpecMD's scheduling): at each
// MoE layer, once its gate inputs are known, predicts the experts of the
// next layers and starts their loads into the cache while this layer's
// experts compute. Scores every prediction when its layer is routed.
class Prefetcher : public LayerObserver {
 public:
  // model, cache and pool must outlive the prefetcher.
  static absl::StatusOr<std::unique_ptr<Prefetcher>> Create(const Model& model, cache::ExpertCache& cache,
                                                            const PrefetcherOptions& options,
                                                            kernels::ThreadPool* pool);

  void BeginPass() override;
  void BeginLayer(int layer) override;
  void OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen, int n_tokens,
                int k) override;
  void OnLayerDone(int layer, double layer_seconds) override;

  const predictor::PredictionStats& prediction_stats() const { return prediction_stats_; }
  predictor::PrefetchScheduler::Stats scheduler_stats() const { return scheduler_->stats(); }
  int per_layer_budget() const { return scheduler_->per_layer_budget(); }
  bool budget_is_fixed() const { return scheduler_->budget_is_fixed(); }
  // The measurements behind a measured budget (0 before the first).
  double mean_layer_seconds() const { return scheduler_->mean_layer_seconds(); }
  double mean_load_bytes_per_second() const { return scheduler_->mean_load_bytes_per_second(); }
  absl::string_view predictor_name() const { return predictor_->name(); }

 private:
  Prefetcher(cache::ExpertCache& cache, int lookahead) : cache_(cache), prediction_stats_(lookahead) {}

  cache::ExpertCache& cache_;
  predictor::ModelShape shape_;
  std::unique_ptr<predictor::ExpertPredictor> predictor_;
  std::unique_ptr<predictor::PrefetchScheduler> scheduler_;
  predictor::PredictionStats prediction_stats_;
  std::vector<predictor::LayerPrediction> predictions_;  // reused every layer
  // The cache's read figures already fed to the scheduler.
  uint64_t bytes_loaded_seen_ = 0;
  uint64_t read_busy_ns_seen_ = 0;
  uint64_t stall_ns_seen_ = 0;  // the compute tier's wait_ns
};

}  // namespace expertd

#endif  // EXPERTD_ENGINE_PREFETCHER_H_
