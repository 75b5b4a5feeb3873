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
  std::vector<TokenLogprob> prompt_token_logprobs;  // when prompt_logprobs
  std::vector<TokenLogprob> token_logprobs;         // when logprobs >= 0, one per generated token
  SequenceCosts costs;  // rows computed and distinct experts per token (Roster of Experts figures)
};

// Owns the loaded engine and the thread that runs it. Requests are queued
// (bounded: a full queue is back-pressure, Unavailable) and admitted in
// arrival order up to max_batch at a time; each engine step then decodes
// the next token of every admitted request as one batch (continuous
// batching), so an expert loaded for one request serves all of them. A new
// request's prompt runs as soon as it is admitted, between steps.
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
  struct Active;  // an admitted request: its sequence, sampler and text state

  explicit InferenceService(const DaemonConfig& config) : config_(config) {}
  void EngineLoop();
  // Prefills an admitted job and takes its first token; null when the job
  // already finished (error, max_tokens 0, first token ended it).
  std::unique_ptr<Active> Admit(std::shared_ptr<CompletionJob> job);
  // Samples the next token from `logits`, records logprobs and streams the
  // text; returns whether the request is finished.
  bool TakeToken(Active& active, const std::vector<float>& logits);
  // Ends a request: publishes the rest of its text and its figures.
  void Finish(Active& active, absl::Status status);
  // Fails an admitted job that never started.
  void FailJob(CompletionJob& job, absl::Status status);
  TokenLogprob MakeLogprob(int32_t token, const float* logits, int top) const;

  DaemonConfig config_;
  std::string model_name_;
  LoadedEngine engine_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();

  mutable std::mutex mu_;  // guards the queue and the counters below
  std::condition_variable queue_changed_;
  std::deque<std::shared_ptr<CompletionJob>> queue_;
  bool accepting_ = true;
  bool stopping_ = false;
  int running_ = 0;  // admitted requests not yet finished
  uint64_t requests_done_ = 0, requests_failed_ = 0, requests_rejected_ = 0;
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  double decode_seconds_ = 0;  // engine time in decode steps
  uint64_t steps_ = 0, batched_steps_ = 0, step_sequences_ = 0, step_rows_ = 0;
  int largest_batch_ = 0;
  uint64_t roster_requests_ = 0;

  std::unique_ptr<BatchDecoder> decoder_;  // engine thread only: runs every sequence through engine_.forward

  std::thread engine_thread_;  // last: started after everything above exists
};

}  // namespace expertd

#endif  // EXPERTD_DAEMON_INFERENCE_SERVICE_H_
