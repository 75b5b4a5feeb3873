#ifndef EXPERTD_DAEMON_INFERENCE_SERVICE_H_
#define EXPERTD_DAEMON_INFERENCE_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/config.h"
#include "daemon/engine_loader.h"
#include "engine/generator.h"
#include "nlohmann/json.hpp"

namespace expertd {

// One completion request as the engine sees it, and its progress as the
// connection that asked for it sees it. The engine thread appends text
// pieces; the connection thread takes them (streaming) or waits for done.
struct CompletionJob {
  // Set by the connection before Submit.
  std::vector<int32_t> prompt;
  GenerateOptions options;
  std::vector<std::string> stop;  // stop strings: generation ends before them

  // Set by the connection when its client disconnects; read by the engine.
  std::atomic<bool> client_gone{false};

  // Guarded by mu; the engine notifies cv on every change.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> pieces;  // new text not yet taken by the connection
  bool done = false;
  absl::Status status;
  std::string text;  // everything generated (stop string excluded)
  int completion_tokens = 0;
  std::string finish_reason;  // "length" | "stop"
  double queue_seconds = 0, prefill_seconds = 0, decode_seconds = 0;
};

// Owns the loaded engine and the thread that runs it. Requests are queued
// (bounded: a full queue is back-pressure, Unavailable) and run one at a
// time, in arrival order.
class InferenceService {
 public:
  static absl::StatusOr<std::unique_ptr<InferenceService>> Create(const DaemonConfig& config);
  ~InferenceService();

  // Queues a job; Unavailable when the queue is full or the service stops.
  absl::Status Submit(std::shared_ptr<CompletionJob> job);
  // Stops accepting, lets the running and queued jobs finish for up to
  // `timeout`, then cancels what is left. Idempotent.
  void Drain(std::chrono::milliseconds timeout);
  // SIGHUP: new cache budgets, applied live.
  absl::Status ReloadBudgets(const CacheConfig& cache);

  nlohmann::json Stats() const;
  std::string PrometheusMetrics() const;
  const Model& model() const { return *engine_.model; }
  const std::string& model_name() const { return model_name_; }
  const InferenceConfig& limits() const { return config_.inference; }

 private:
  explicit InferenceService(const DaemonConfig& config) : config_(config) {}
  void EngineLoop();
  void Run(CompletionJob& job);

  DaemonConfig config_;
  std::string model_name_;
  LoadedEngine engine_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable std::mutex mu_;  // guards the queue and the counters below
  std::condition_variable queue_changed_;
  std::deque<std::shared_ptr<CompletionJob>> queue_;
  bool accepting_ = true;
  bool stopping_ = false;
  bool busy_ = false;
  uint64_t requests_done_ = 0, requests_failed_ = 0, requests_rejected_ = 0;
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  double decode_seconds_ = 0;

  std::thread engine_thread_;  // last: started after everything above exists
};

}  // namespace expertd

#endif  // EXPERTD_DAEMON_INFERENCE_SERVICE_H_
