#ifndef EXPERTD_ENGINE_PREFETCHER_H_
#define EXPERTD_ENGINE_PREFETCHER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/layer_observer.h"
#include "model/model.h"
#include "engine/prefetch_target.h"
#include "kernels/cpu/thread_pool.h"
#include "predictor/expert_predictor.h"
#include "predictor/prediction_stats.h"
#include "predictor/prefetch_scheduler.h"

namespace expertd::engine {

struct PrefetcherOptions {
  predictor::PredictorOptions predictor;  // kind, lookahead
  predictor::PrefetchSchedulerOptions scheduler;
  // The next token's first MoE layers, which no prediction within a pass
  // reaches: at the last MoE layer of a decode pass, prefetch the experts
  // this token routed to in the first `next_token_layers` MoE layers
  // (previous-token routing), up to the per-layer budget each, so their
  // loads overlap the output head, sampling and the next token's first
  // attention. 0 = off. [prefetch] next_token_layers.
  int next_token_layers = 0;
  // Where that prediction comes from: "previous-token", this token's own
  // routing of those layers; "last-layer-gate", the last MoE layer's gate
  // input through those layers' routers (Fate's cross-layer gate, across
  // the token boundary). [prefetch] next_token_from.
  std::string next_token_from = "previous-token";
};

// Where the prefetcher reports the predictions it acts on, for recording
// (engine/step_trace_recorder.h): the simulator replays them under the same
// budget instead of guessing with an oracle.
class PredictionSink {
 public:
  virtual ~PredictionSink() = default;
  // Predictions submitted to the scheduler while `at_layer` ran, with the
  // per-layer read budget in force.
  virtual void OnPredictions(int at_layer, absl::Span<const predictor::LayerPrediction> predictions,
                             int budget) = 0;
  // The next pass's layer `for_layer`, predicted at the last MoE layer
  // (next_token_layers), in rank order; up to `budget` reads are issued.
  virtual void OnNextPassPrediction(int at_layer, int for_layer, absl::Span<const int32_t> experts,
                                    int budget) = 0;
};

// Cross-layer speculative prefetch (Fate, with SpecMD's scheduling): at each
// MoE layer, once its gate inputs are known, predicts the experts of the
// next layers and starts their loads (through a PrefetchTarget, the cache
// glue) while this layer's experts compute. Scores every prediction when
// its layer is routed.
class Prefetcher : public LayerObserver {
 public:
  // model, target and pool must outlive the prefetcher.
  static absl::StatusOr<std::unique_ptr<Prefetcher>> Create(const model::Model& model, PrefetchTarget& target,
                                                            const PrefetcherOptions& options,
                                                            kernels::ThreadPool* pool);

  void BeginPass() override;
  void BeginLayer(int layer) override;
  void OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen, int n_tokens,
                int k) override;
  void OnLayerDone(int layer, double layer_seconds) override;

  // Reports every prediction acted on to `sink` (null: none); it must
  // outlive the prefetcher or be unset first.
  void set_prediction_sink(PredictionSink* sink) { sink_ = sink; }

  const predictor::PredictionStats& prediction_stats() const { return prediction_stats_; }
  // The next-token predictions (next_token_layers), scored when the next
  // pass routes those layers, and the reads they issued.
  const predictor::PredictionStats::Figures& next_token_stats() const { return next_token_stats_; }
  uint64_t next_token_reads() const { return next_token_reads_; }
  int next_token_layers() const { return static_cast<int>(first_layers_.size()); }
  absl::string_view next_token_from() const { return next_from_gate_ ? "last-layer-gate" : "previous-token"; }
  predictor::PrefetchScheduler::Stats scheduler_stats() const { return scheduler_->stats(); }
  int per_layer_budget() const { return scheduler_->per_layer_budget(); }
  bool budget_is_fixed() const { return scheduler_->budget_is_fixed(); }
  // The measurements behind a measured budget (0 before the first).
  double mean_layer_seconds() const { return scheduler_->mean_layer_seconds(); }
  double mean_load_bytes_per_second() const { return scheduler_->mean_load_bytes_per_second(); }
  absl::string_view predictor_name() const { return predictor_->name(); }

 private:
  Prefetcher(PrefetchTarget& target, int lookahead) : target_(target), prediction_stats_(lookahead) {}
  // At the last MoE layer of a decode pass: predicts the next token's first
  // layers (from gate_inputs, the last layer's, with last-layer-gate) and
  // issues the predictions.
  void PrefetchNextToken(absl::Span<const float> gate_inputs, int k);
  // `layer`'s router applied to gate_input: its top k experts, best first.
  void PredictFromGate(int layer, absl::Span<const float> gate_input, int k, std::vector<int32_t>* experts);

  PrefetchTarget& target_;
  PredictionSink* sink_ = nullptr;
  predictor::ModelShape shape_;
  std::unique_ptr<predictor::ExpertPredictor> predictor_;
  std::unique_ptr<predictor::PrefetchScheduler> scheduler_;
  predictor::PredictionStats prediction_stats_;
  std::vector<predictor::LayerPrediction> predictions_;  // reused every layer
  // The target's figures already fed to the scheduler.
  PrefetchTarget::Figures seen_;

  // Next-token prediction: the first MoE layers, the last MoE layer, this
  // pass's routing of each first layer, and the prediction made for the
  // next pass (empty: none pending). Indexed like first_layers_.
  std::vector<int> first_layers_;
  bool next_from_gate_ = false;  // next_token_from == "last-layer-gate"
  std::vector<float> next_logits_;  // [num_experts]
  int last_moe_layer_ = -1;
  int max_in_flight_ = 1;
  std::vector<std::vector<int32_t>> routed_;
  std::vector<std::vector<int32_t>> next_predicted_;
  predictor::PredictionStats::Figures next_token_stats_;
  uint64_t next_token_reads_ = 0;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_PREFETCHER_H_
