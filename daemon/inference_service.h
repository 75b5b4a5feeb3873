#ifndef EXPERTD_DAEMON_INFERENCE_SERVICE_H_
#define EXPERTD_DAEMON_INFERENCE_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/config.h"
#include "runtime/runtime.h"
#include "engine/request_engine.h"
#include "nlohmann/json.hpp"

namespace expertd::daemon {

// What the service has done, as numbers: one snapshot renders both
// /v1/stats and /metrics.
struct ServiceCounters {
  engine::SchedulerCounters scheduler;
  uint64_t kv_budget_bytes = 0;
  // Cross-layer prediction, over every lookahead distance (0/0 without a
  // prefetcher).
  uint64_t predicted_experts = 0, actual_experts = 0, correctly_predicted = 0;
  // The prefetch budget now (reads per predicted layer and pass), whether
  // the config fixed it, and what a measured one comes from.
  int prefetch_budget_per_layer = 0;
  bool prefetch_budget_fixed = false;
  double mean_layer_seconds = 0, load_bytes_per_second = 0;
  // The next token's first MoE layers from this token's routing (0 layers:
  // off).
  int next_token_layers = 0;
  uint64_t next_token_predicted = 0, next_token_actual = 0, next_token_correct = 0;
};

// Owns the loaded engine and the request engine that runs it
// (engine/request_engine.h: admission by count and KV memory, chunked
// prefill, continuous batching, cancellation), live cache budgets, and the
// daemon's statistics.
class InferenceService {
 public:
  static absl::StatusOr<std::unique_ptr<InferenceService>> Create(const DaemonConfig& config);
  ~InferenceService();

  // The request engine's Submit, Cancel and Drain (see there).
  absl::Status Submit(std::shared_ptr<engine::Request> request) { return requests_->Submit(std::move(request)); }
  void Cancel(const std::shared_ptr<engine::Request>& request) { requests_->Cancel(request); }
  void Drain(std::chrono::milliseconds timeout) { requests_->Drain(timeout); }
  // SIGHUP: new cache budgets, applied live.
  absl::Status ReloadBudgets(const CacheConfig& cache);

  ServiceCounters Counters() const;
  nlohmann::json Stats() const;
  std::string PrometheusMetrics() const;
  const model::Model& model() const { return runtime_->model(); }
  const std::string& model_name() const { return model_name_; }
  const InferenceConfig& limits() const { return config_.inference; }

 private:
  explicit InferenceService(const DaemonConfig& config) : config_(config) {}
  // On the engine thread after each iteration: the prefetcher's figures,
  // which only that thread may read, copied for the stats.
  void PublishPredictionFigures();

  DaemonConfig config_;
  std::string model_name_;
  std::unique_ptr<runtime::Runtime> runtime_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable std::mutex prediction_mu_;  // guards the figures below
  uint64_t predicted_experts_ = 0, actual_experts_ = 0, correctly_predicted_ = 0;
  int prefetch_budget_per_layer_ = 0;
  bool prefetch_budget_fixed_ = false;
  double mean_layer_seconds_ = 0, load_bytes_per_second_ = 0;
  int next_token_layers_ = 0;
  predictor::PredictionStats::Figures next_token_;

  std::unique_ptr<engine::RequestEngine> requests_;  // last: its thread runs runtime_'s forward pass
};

}  // namespace expertd::daemon

#endif  // EXPERTD_DAEMON_INFERENCE_SERVICE_H_
