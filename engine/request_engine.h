#ifndef EXPERTD_ENGINE_REQUEST_ENGINE_H_
#define EXPERTD_ENGINE_REQUEST_ENGINE_H_

// The request engine: one scheduler over a BatchDecoder and the per-request
// state (sampler, stream decoder, stop filter, logprobs), running on its own
// thread. Whoever asks for text (the daemon's connections; the CLI) submits
// a Request and reads its progress from the Request itself, which is the
// channel between the two threads. The transport (HTTP, the OpenAI schema)
// stays above this; the forward pass (CPU or GPU) below.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/batch_decoder.h"
#include "engine/forward_api.h"
#include "model/model.h"
#include "engine/roster.h"
#include "engine/sampler.h"

namespace expertd::engine {

// How one request generates.
struct GenerateOptions {
  int max_new_tokens = 64;
  ForwardOptions forward;  // experts_per_token (dial-k)
  RosterOptions roster;    // Roster of Experts; samples = 1 is the plain model
  SamplingOptions sampling;
  bool stop_at_eos = true;
};

// One token's log-probability under the model, for OpenAI's logprobs.
struct TokenLogprob {
  int32_t token = 0;
  // The token's own text; "bytes:\xNN..." when it is only part of a UTF-8
  // character (as OpenAI writes such tokens).
  std::string text;
  std::optional<float> logprob;  // null for a prompt's first token: nothing predicts it
  std::vector<std::pair<std::string, float>> top;  // the most likely tokens at that position
};

// One request as the engine runs it, and its progress as the thread that
// asked for it sees it. The engine thread appends text pieces; the asking
// thread takes them (streaming) or waits for done.
struct Request {
  // Set before Submit.
  std::vector<int32_t> prompt;
  GenerateOptions options;
  std::vector<std::string> stop;  // stop strings: generation ends before them
  std::vector<int32_t> stop_token_ids;  // like EOS: generation ends with any of these
  int logprobs = -1;              // alternatives per position to report; -1: no logprobs
  bool prompt_logprobs = false;   // echo with logprobs: the prompt's tokens too
  // Scoring instead of generating (`expertd eval`, `perplexity`; needs
  // max_new_tokens 0): the engine keeps the model's distribution after every
  // prompt position in prompt_scores. With a roster of one sample these are
  // the prefill's logits; with a roster every position after the first is
  // fed as a decode step (teacher forcing), so each row is the roster's
  // aggregate, exactly what generation would sample from there.
  bool score_prompt = false;

  // Set by RequestEngine::Cancel (the asker has gone); read by the engine,
  // which then ends the request wherever it is (queued, prefilling,
  // decoding) with a Cancelled status.
  std::atomic<bool> client_gone{false};
  // Set by Submit.
  std::chrono::steady_clock::time_point submitted = std::chrono::steady_clock::now();
  uint64_t kv_bytes = 0;  // KV memory reserved for the request while it runs

  // Guarded by mu; the engine notifies cv on every change.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> pieces;  // new text not yet taken by the asker
  bool done = false;
  absl::Status status;
  std::string text;  // everything generated (stop string excluded)
  std::vector<int32_t> tokens;  // the ids generated, in order
  int completion_tokens = 0;
  std::string finish_reason;  // "length" | "stop"
  double queue_seconds = 0, prefill_seconds = 0, decode_seconds = 0;
  std::vector<TokenLogprob> prompt_token_logprobs;  // when prompt_logprobs
  std::vector<TokenLogprob> token_logprobs;         // when logprobs >= 0, one per generated token
  // When score_prompt: [prompt][vocab] logits, row t the distribution of
  // token t + 1 (the last row: of the token after the prompt).
  std::vector<float> prompt_scores;
  SequenceCosts costs;  // rows computed and distinct experts per token (Roster of Experts figures)
};

struct SchedulerOptions {
  int max_batch = 8;               // requests running at once (prefilling or decoding)
  int max_queued_requests = 64;    // beyond this, Submit is Unavailable (back-pressure)
  uint64_t kv_budget_bytes = 0;    // KV memory of running requests; 0 = no limit
  int prefill_chunk_tokens = 256;  // prompt tokens run between two decode steps
  int max_roster = 32;             // largest Roster of Experts a request may ask for

  // One request run alone to completion (`expertd run`, Generate()): no
  // batch, the whole prompt in one chunk since nothing else runs between
  // chunks, and no daemon limit on the roster (the model's own bounds only).
  static SchedulerOptions SingleRequest(size_t prompt_tokens);
};

// What the scheduler has done, as numbers.
struct SchedulerCounters {
  uint64_t requests_completed = 0, requests_failed = 0, requests_rejected = 0, requests_cancelled = 0;
  uint64_t queued = 0, running = 0, roster_requests = 0;
  uint64_t prompt_tokens = 0, completion_tokens = 0;
  double decode_seconds = 0;  // engine time in decode steps
  uint64_t steps = 0, batched_steps = 0, step_sequences = 0, step_rows = 0, largest_batch = 0;
  uint64_t prefill_chunks = 0;
  uint64_t kv_reserved_bytes = 0;
};

// Requests are queued (bounded: a full queue is back-pressure) and admitted
// in arrival order while there is room: at most max_batch at a time, and
// only while their KV caches (reserved for prompt + max_tokens positions)
// fit kv_budget; a request that could never fit is refused at Submit. Each
// iteration of the engine thread decodes the next token of every running
// request as one batch (continuous batching), so an expert loaded for one
// request serves all of them, then runs one chunk of at most
// prefill_chunk_tokens of the oldest prompt still prefilling (chunked
// prefill): a long prompt delays the running streams by a chunk at a time,
// not by its whole prefill. A request whose asker has gone is cancelled
// wherever it is.
class RequestEngine {
 public:
  // model and forward must outlive the engine; after_iteration (optional)
  // runs on the engine thread after every iteration (the daemon copies the
  // prefetcher's figures there, which only that thread may read).
  RequestEngine(const model::Model& model, Forward& forward, const SchedulerOptions& options,
                std::function<void()> after_iteration = nullptr);
  ~RequestEngine();
  RequestEngine(const RequestEngine&) = delete;
  RequestEngine& operator=(const RequestEngine&) = delete;

  // Queues a request; Unavailable when the queue is full or the engine
  // drains, InvalidArgument when its KV cache alone would exceed kv_budget.
  absl::Status Submit(std::shared_ptr<Request> request);
  // The asker has gone: a queued request is dropped now, a running one
  // ends at the engine's next step or prompt chunk. Nobody need wait.
  void Cancel(const std::shared_ptr<Request>& request);
  // Stops accepting, lets the running and queued requests finish for up to
  // `timeout`, then cancels what is left. Idempotent.
  void Drain(std::chrono::milliseconds timeout);

  SchedulerCounters Counters() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Active;  // an admitted request: its sequence, sampler and text state

  void Loop();
  // Takes queued requests while max_batch and the KV budget allow (dropping
  // those whose asker has gone) and counts them running (mu_ held).
  std::vector<std::shared_ptr<Request>> TakeAdmissibleLocked(size_t running_now);
  // Validates an admitted request and sets up its sequence; null when it
  // failed (then it is finished).
  std::unique_ptr<Active> Admit(std::shared_ptr<Request> request);
  // Runs the next chunk of `active`'s prompt; on its last chunk takes the
  // first token. Returns whether the request is finished (Finish called).
  bool PrefillNextChunk(Active& active);
  // Samples the next token from `logits`, records logprobs and streams the
  // text; returns whether the request is finished.
  bool TakeToken(Active& active, const std::vector<float>& logits);
  // A scoring request's step: keeps `logits` as the next prompt position's
  // row and feeds that position's token; returns whether every row is in.
  bool TakeScore(Active& active, const std::vector<float>& logits);
  // Ends a request: publishes the rest of its text and its figures.
  void Finish(Active& active, absl::Status status);
  // Fails an admitted request that never started.
  void FailAdmitted(Request& request, absl::Status status);
  // Counts the end of an admitted request and frees its KV reservation.
  void CountEndLocked(const Request& request, const absl::Status& status);
  // Ends a queued request that never ran (mu_ held).
  void DropQueuedLocked(Request& request, absl::Status status);
  TokenLogprob MakeLogprob(int32_t token, const float* logits, int top) const;

  const model::Model& model_;
  const SchedulerOptions options_;
  const std::function<void()> after_iteration_;
  BatchDecoder decoder_;  // engine thread only

  mutable std::mutex mu_;  // guards the queue, accepting_/stopping_, running_ and counters_
  std::condition_variable queue_changed_;
  std::deque<std::shared_ptr<Request>> queue_;
  bool accepting_ = true;
  bool stopping_ = false;
  int running_ = 0;  // admitted requests not yet finished
  SchedulerCounters counters_;

  std::thread thread_;  // last: started after everything above exists
};

// Submits `request` and waits on the calling thread until it ends, handing
// each new text piece to on_piece (optional) as the engine produces it: how
// a caller with nothing else to do (the CLI, a benchmark) runs a request.
// Returns Submit's error, or the request's final status.
absl::Status RunRequest(RequestEngine& engine, const std::shared_ptr<Request>& request,
                        const std::function<void(const std::string&)>& on_piece = nullptr);

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_REQUEST_ENGINE_H_
