#ifndef EXPERTD_DAEMON_INFERENCE_SERVICE_H_
#define EXPERTD_DAEMON_INFERENCE_SERVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/config.h"
#include "daemon/engine_loader.h"
#include "engine/batch_decoder.h"
#include "engine/generator.h"
#include "nlohmann/json.hpp"

namespace expertd {

// One token's log-probability under the model, for OpenAI's logprobs.
struct TokenLogprob {
  int32_t token = 0;
  // The token's own text; "bytes:\xNN..." when it is only part of a UTF-8
  // character (as OpenAI writes such tokens).
  std::string text;
  std::optional<float> logprob;  // null for a prompt's first token: nothing predicts it
  std::vector<std::pair<std::string, float>> top;  // the most likely tokens at that position
};

// One completion request as the engine sees it, and its progress as the
// connection that asked for it sees it. The engine thread appends text
// pieces; the connection thread takes them (streaming) or waits for done.
struct CompletionJob {
  // Set by the connection before Submit.
  std::vector<int32_t> prompt;
  GenerateOptions options;
  std::vector<std::string> stop;  // stop strings: generation ends before them
  std::vector<int32_t> stop_token_ids;  // like EOS: generation ends with any of these
  int logprobs = -1;              // alternatives per position to report; -1: no logprobs
  bool prompt_logprobs = false;   // echo with logprobs: the prompt's tokens too
  std::chrono::steady_clock::time_point submitted = std::chrono::steady_clock::now();

  // Set by the connection when its client disconnects; read by the engine,
  // which then cancels the job wherever it is (queued, prefilling, decoding).
  std::atomic<bool> client_gone{false};
  // KV memory reserved for the job while it runs (set by Submit).
  uint64_t kv_bytes = 0;

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
  std::vector<TokenLogprob> prompt_token_logprobs;  // when prompt_logprobs
  std::vector<TokenLogprob> token_logprobs;         // when logprobs >= 0, one per generated token
  SequenceCosts costs;  // rows computed and distinct experts per token (Roster of Experts figures)
};

// What the service has done, as numbers: one snapshot renders both
// /v1/stats and /metrics.
struct ServiceCounters {
  uint64_t requests_completed = 0, requests_failed = 0, requests_rejected = 0, requests_cancelled = 0;
  uint64_t queued = 0, running = 0, roster_requests = 0;
  uint64_t prompt_tokens = 0, completion_tokens = 0;
  double decode_seconds = 0;  // engine time in decode steps
  uint64_t steps = 0, batched_steps = 0, step_sequences = 0, step_rows = 0, largest_batch = 0;
  uint64_t prefill_chunks = 0;
  uint64_t kv_reserved_bytes = 0, kv_budget_bytes = 0;
  // Cross-layer prediction, over every lookahead distance (0/0 without a
  // prefetcher).
  uint64_t predicted_experts = 0, actual_experts = 0, correctly_predicted = 0;
};

// Owns the loaded engine and the thread that runs it. Requests are queued
// (bounded: a full queue is back-pressure, Unavailable) and admitted in
// arrival order while there is room: at most max_batch at a time, and only
// while their KV caches fit kv_budget (a request that could never fit is
// refused at Submit). Each engine iteration decodes the next token of every
// running request as one batch (continuous batching), so an expert loaded
// for one request serves all of them, and then runs one chunk of at most
// prefill_chunk_tokens of the oldest prompt still prefilling (chunked
// prefill): a long prompt delays the running streams by a chunk at a time.
// A job whose client has gone is cancelled wherever it is.
class InferenceService {
 public:
  static absl::StatusOr<std::unique_ptr<InferenceService>> Create(const DaemonConfig& config);
  ~InferenceService();

  // Queues a job; Unavailable when the queue is full or the service stops,
  // InvalidArgument when its KV cache alone would exceed kv_budget.
  absl::Status Submit(std::shared_ptr<CompletionJob> job);
  // The job's client has gone: a queued job is dropped now, a running one
  // ends at the engine's next step or prompt chunk. Either way nobody is
  // answered, and the caller need not wait.
  void Cancel(const std::shared_ptr<CompletionJob>& job);
  // Stops accepting, lets the running and queued jobs finish for up to
  // `timeout`, then cancels what is left. Idempotent.
  void Drain(std::chrono::milliseconds timeout);
  // SIGHUP: new cache budgets, applied live.
  absl::Status ReloadBudgets(const CacheConfig& cache);

  ServiceCounters Counters() const;
  nlohmann::json Stats() const;
  std::string PrometheusMetrics() const;
  const Model& model() const { return *engine_.model; }
  const std::string& model_name() const { return model_name_; }
  const InferenceConfig& limits() const { return config_.inference; }

 private:
  struct Active;  // an admitted request: its sequence, sampler and text state

  explicit InferenceService(const DaemonConfig& config) : config_(config) {}
  void EngineLoop();
  // Takes queued jobs while max_batch and the KV budget allow (dropping
  // those whose client has gone) and counts them running.
  std::vector<std::shared_ptr<CompletionJob>> TakeAdmissible(size_t running_now);
  // Validates an admitted job and sets up its sequence; null when it failed.
  std::unique_ptr<Active> Admit(std::shared_ptr<CompletionJob> job);
  // Runs the next chunk of `active`'s prompt; on its last chunk takes the
  // first token. Returns whether the request is finished (Finish called).
  bool PrefillNextChunk(Active& active);
  // Samples the next token from `logits`, records logprobs and streams the
  // text; returns whether the request is finished.
  bool TakeToken(Active& active, const std::vector<float>& logits);
  // Ends a request: publishes the rest of its text and its figures.
  void Finish(Active& active, absl::Status status);
  // Fails an admitted job that never started.
  void FailJob(CompletionJob& job, absl::Status status);
  // Counts a finished admitted job and returns its KV reservation (mu_ held).
  void CountEndLocked(const CompletionJob& job, const absl::Status& status);
  TokenLogprob MakeLogprob(int32_t token, const float* logits, int top) const;
  void PublishPredictionFigures();

  DaemonConfig config_;
  std::string model_name_;
  LoadedEngine engine_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable std::mutex mu_;  // guards the queue, accepting_/stopping_, running_ and counters_
  std::condition_variable queue_changed_;
  std::deque<std::shared_ptr<CompletionJob>> queue_;
  bool accepting_ = true;
  bool stopping_ = false;
  int running_ = 0;  // admitted requests not yet finished
  ServiceCounters counters_;

  std::unique_ptr<BatchDecoder> decoder_;  // engine thread only: runs every sequence through engine_.forward

  std::thread engine_thread_;  // last: started after everything above exists
};

}  // namespace expertd

#endif  // EXPERTD_DAEMON_INFERENCE_SERVICE_H_
