#include "engine/step_trace_recorder.h"

#include <algorithm>
#include <utility>

namespace expertd::engine {

StepTraceRecorder::StepTraceRecorder(LayerObserver* inner, const cache::ExpertCache* cache)
    : inner_(inner), cache_(cache) {}

uint64_t StepTraceRecorder::StallNs() const {
  if (cache_ == nullptr) return 0;
  return cache_->stats().compute().wait_ns;
}

void StepTraceRecorder::BeginPass() {
  steps_.emplace_back();
  if (last_layer_done_) {
    steps_.back().gap_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - *last_layer_done_).count();
  }
  if (inner_ != nullptr) inner_->BeginPass();
}

void StepTraceRecorder::BeginLayer(int layer) {
  stall_ns_at_layer_start_ = StallNs();
  if (inner_ != nullptr) inner_->BeginLayer(layer);
}

void StepTraceRecorder::OnRouterScores(int layer, absl::Span<const float> scores) {
  if (steps_.empty()) steps_.emplace_back();  // a pass begun before recording started
  steps_.back().router_scores.push_back({.layer = layer, .scores = {scores.begin(), scores.end()}});
  if (inner_ != nullptr) inner_->OnRouterScores(layer, scores);
}

void StepTraceRecorder::OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen,
                                 int n_tokens, int k) {
  if (steps_.empty()) steps_.emplace_back();  // a pass begun before recording started
  cache::TraceStep& step = steps_.back();
  step.rows = std::max(step.rows, n_tokens);
  for (int t = 0; t < n_tokens; ++t) {
    cache::TraceRecord record;
    record.token = t;
    record.layer = layer;
    // A row with a smaller dial-k is padded by repeating its first expert.
    for (int j = 0; j < k; ++j) {
      const int32_t expert = chosen[static_cast<size_t>(t) * k + j];
      if (std::find(record.experts.begin(), record.experts.end(), expert) == record.experts.end()) {
        record.experts.push_back(expert);
      }
    }
    step.records.push_back(std::move(record));
  }
  // The prefetcher's predictions for this layer arrive through the sink
  // from inside this call.
  if (inner_ != nullptr) inner_->OnRouted(layer, gate_inputs, chosen, n_tokens, k);
}

void StepTraceRecorder::OnLayerDone(int layer, double layer_seconds) {
  const uint64_t stalled_ns = StallNs() - stall_ns_at_layer_start_;
  if (!steps_.empty()) {
    steps_.back().compute.push_back(
        {.layer = layer, .compute_us = std::max(0.0, layer_seconds * 1e6 - stalled_ns / 1e3)});
  }
  if (inner_ != nullptr) inner_->OnLayerDone(layer, layer_seconds);
  last_layer_done_ = std::chrono::steady_clock::now();
}

void StepTraceRecorder::OnPredictions(int at_layer, absl::Span<const predictor::LayerPrediction> predictions,
                                      int budget) {
  if (steps_.empty()) return;
  for (const predictor::LayerPrediction& p : predictions) {
    if (p.experts.empty() || p.layer <= at_layer) continue;
    cache::TracePrediction recorded;
    recorded.at_layer = at_layer;
    recorded.for_layer = p.layer;
    recorded.budget = std::max(1, budget);
    for (const auto& [expert, score] : p.experts) {
      if (std::find(recorded.experts.begin(), recorded.experts.end(), expert) != recorded.experts.end()) continue;
      recorded.experts.push_back(expert);
      recorded.scores.push_back(score);
    }
    steps_.back().predictions.push_back(std::move(recorded));
  }
}

void StepTraceRecorder::OnNextPassPrediction(int at_layer, int for_layer, absl::Span<const int32_t> experts,
                                             int budget) {
  if (steps_.empty() || experts.empty()) return;
  cache::TracePrediction recorded;
  recorded.at_layer = at_layer;
  recorded.for_layer = for_layer;
  recorded.next_step = true;
  recorded.budget = std::max(1, budget);
  for (int32_t expert : experts) {
    if (std::find(recorded.experts.begin(), recorded.experts.end(), expert) == recorded.experts.end()) {
      recorded.experts.push_back(expert);
    }
  }
  steps_.back().predictions.push_back(std::move(recorded));
}

std::vector<cache::TraceStep> StepTraceRecorder::TakeSteps() {
  std::vector<cache::TraceStep> steps = std::move(steps_);
  steps_.clear();
  // A step with no MoE routing (none in this model's pass) says nothing.
  std::erase_if(steps, [](const cache::TraceStep& s) { return s.records.empty(); });
  return steps;
}

}  // namespace expertd::engine
