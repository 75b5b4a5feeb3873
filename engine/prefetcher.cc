#include "engine/prefetcher.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

#include "base/status_macros.h"

namespace expertd::engine {

absl::StatusOr<std::unique_ptr<Prefetcher>> Prefetcher::Create(const model::Model& model, PrefetchTarget& target,
                                                               const PrefetcherOptions& options,
                                                               kernels::ThreadPool* pool) {
  const model::ModelConfig& config = model.config();
  auto prefetcher = std::unique_ptr<Prefetcher>(new Prefetcher(target, std::max(1, options.predictor.lookahead)));
  predictor::ModelShape& shape = prefetcher->shape_;
  shape.num_layers = config.num_layers;
  shape.num_experts = config.num_experts;
  shape.hidden_size = config.hidden_size;
  shape.layer_is_moe = config.layer_is_moe;
  for (const model::LayerWeights& layer : model.weights().layers) {
    shape.routers.push_back(layer.router);
    // gpt-oss's router biases: without them the cross-layer gate would
    // rank the next layers' experts by a different score than the router.
    shape.router_biases.push_back(layer.router_bias.empty() ? nullptr : layer.router_bias.data());
  }
  ASSIGN_OR_RETURN(prefetcher->predictor_, predictor::MakePredictor(options.predictor, shape, pool));
  predictor::PrefetchSchedulerOptions scheduler_options = options.scheduler;
  scheduler_options.num_experts = config.num_experts;
  scheduler_options.expert_bytes = target.expert_bytes();
  // Room for the predicted layers' reads beside the running layer's k
  // experts, in the compute tier (budgets resized later keep this cap).
  scheduler_options.max_budget_per_layer =
      std::max(1, (target.compute_slots() - config.experts_per_token) / std::max(1, options.predictor.lookahead));
  for (int l = 0; l < config.num_layers; ++l) {
    if (!config.layer_is_moe[l]) continue;
    prefetcher->last_moe_layer_ = l;
    if (static_cast<int>(prefetcher->first_layers_.size()) < options.next_token_layers) {
      prefetcher->first_layers_.push_back(l);
    }
  }
  if (options.next_token_from != "previous-token" && options.next_token_from != "last-layer-gate") {
    return absl::InvalidArgumentError(absl::StrCat("next-token prediction from '", options.next_token_from,
                                                   "': use previous-token or last-layer-gate"));
  }
  prefetcher->next_from_gate_ = options.next_token_from == "last-layer-gate";
  prefetcher->next_logits_.resize(config.num_experts);
  prefetcher->routed_.resize(prefetcher->first_layers_.size());
  prefetcher->next_predicted_.resize(prefetcher->first_layers_.size());
  prefetcher->max_in_flight_ = scheduler_options.max_in_flight;
  prefetcher->scheduler_ = std::make_unique<predictor::PrefetchScheduler>(
      scheduler_options, [&target](int layer, int expert) { return target.StartPrefetch(layer, expert); },
      [&target] { return target.reads_in_flight(); });
  return prefetcher;
}

void Prefetcher::BeginPass() {
  predictor_->BeginPass();
  prediction_stats_.BeginPass();
  scheduler_->BeginPass();
}

void Prefetcher::BeginLayer(int layer) {
  scheduler_->BeginLayer(layer);
  scheduler_->Pump();
}

void Prefetcher::OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen,
                          int n_tokens, int k) {
  prediction_stats_.Score(layer, chosen);
  for (size_t i = 0; i < first_layers_.size(); ++i) {
    if (first_layers_[i] != layer) continue;
    if (!next_predicted_[i].empty()) {
      const predictor::PredictionStats::Figures f = predictor::PredictionStats::Compare(next_predicted_[i], chosen);
      next_token_stats_.predicted += f.predicted;
      next_token_stats_.actual += f.actual;
      next_token_stats_.correct += f.correct;
      next_predicted_[i].clear();
    }
    // Only a decode step's routing is one token's: prefill predicts nothing.
    routed_[i].clear();
    if (n_tokens == 1) routed_[i].assign(chosen.begin(), chosen.end());
  }
  predictor_->Observe(layer, chosen, n_tokens, k);
  predictions_.clear();
  predictor_->Predict(layer, gate_inputs, n_tokens, k, &predictions_);
  prediction_stats_.Record(predictions_);
  if (sink_ != nullptr) sink_->OnPredictions(layer, predictions_, scheduler_->per_layer_budget());
  scheduler_->Submit(predictions_);
  scheduler_->Pump();
  if (layer == last_moe_layer_ && n_tokens == 1) PrefetchNextToken(gate_inputs, k);
}

void Prefetcher::PrefetchNextToken(absl::Span<const float> gate_inputs, int k) {
  const int budget = scheduler_->per_layer_budget();
  for (size_t i = 0; i < first_layers_.size(); ++i) {
    if (next_from_gate_) {
      PredictFromGate(first_layers_[i], gate_inputs, k, &next_predicted_[i]);
    } else {
      next_predicted_[i] = routed_[i];  // chosen is in rank order: best first
    }
    if (sink_ != nullptr) sink_->OnNextPassPrediction(last_moe_layer_, first_layers_[i], next_predicted_[i], budget);
    int issued = 0;
    for (int32_t expert : next_predicted_[i]) {
      if (issued >= budget || target_.reads_in_flight() >= max_in_flight_) break;
      if (target_.StartPrefetch(first_layers_[i], expert)) {
        ++issued;
        ++next_token_reads_;
      }
    }
  }
}

void Prefetcher::PredictFromGate(int layer, absl::Span<const float> gate_input, int k,
                                 std::vector<int32_t>* experts) {
  const auto l = static_cast<size_t>(layer);
  kernels::MatMul(shape_.routers[l], gate_input.data(), 1, next_logits_.data(), nullptr);
  if (l < shape_.router_biases.size() && shape_.router_biases[l] != nullptr) {
    for (size_t e = 0; e < next_logits_.size(); ++e) next_logits_[e] += shape_.router_biases[l][e];
  }
  // The top k by logit (the softmax's order), lower id first on ties.
  experts->resize(next_logits_.size());
  std::iota(experts->begin(), experts->end(), 0);
  const int keep = std::min<int>(k, static_cast<int>(experts->size()));
  std::partial_sort(experts->begin(), experts->begin() + keep, experts->end(), [this](int32_t a, int32_t b) {
    return next_logits_[a] > next_logits_[b] || (next_logits_[a] == next_logits_[b] && a < b);
  });
  experts->resize(keep);
}

void Prefetcher::OnLayerDone(int layer, double layer_seconds) {
  const PrefetchTarget::Figures now = target_.figures();
  // The layer's compute: its time less what it stalled for loads in the
  // compute tier. Prefetches overlap compute; a stall is I/O already.
  const double stalled_seconds = (now.compute_stall_ns - seen_.compute_stall_ns) / 1e9;
  scheduler_->RecordLayerCompute(layer_seconds - stalled_seconds);
  // The file's throughput since the last layer, over the time reads were in
  // flight: with loads overlapping this is what the budget can spend, where
  // one load's latency would count each overlapping load in full.
  if (now.read_busy_ns > seen_.read_busy_ns && now.bytes_read > seen_.bytes_read) {
    scheduler_->RecordLoadThroughput(static_cast<double>(now.bytes_read - seen_.bytes_read) /
                                     ((now.read_busy_ns - seen_.read_busy_ns) / 1e9));
  }
  seen_ = now;
  scheduler_->Pump();
}

}  // namespace expertd::engine
