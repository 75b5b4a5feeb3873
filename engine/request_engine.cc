#include "engine/request_engine.h"

#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/stop_filter.h"
#include "spdlog/spdlog.h"
#include "tokenizer/token_decoder.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace expertd::engine {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

SchedulerOptions SchedulerOptions::SingleRequest(size_t prompt_tokens) {
  SchedulerOptions options;
  options.max_batch = 1;
  options.prefill_chunk_tokens = std::max(1, static_cast<int>(prompt_tokens));
  options.max_roster = 0;
  return options;
}

RequestEngine::RequestEngine(const model::Model& model, Forward& forward, const SchedulerOptions& options,
                             std::function<void()> after_iteration)
    : model_(model), options_(options), after_iteration_(std::move(after_iteration)), decoder_(model, forward) {
  thread_ = std::thread([this] { Loop(); });
}

RequestEngine::~RequestEngine() {
  Drain(std::chrono::milliseconds(0));
  if (thread_.joinable()) thread_.join();
}

SchedulerCounters RequestEngine::Counters() const {
  std::lock_guard lock(mu_);
  SchedulerCounters counters = counters_;
  counters.queued = queue_.size();
  counters.running = static_cast<uint64_t>(running_);
  return counters;
}

// An admitted request, owned by the engine thread. Its KV cache holds at
// most prompt + max_tokens positions: exactly what admission reserved.
struct RequestEngine::Active {
  Active(std::shared_ptr<Request> r, const model::Model& model, KvMemory& kv_memory)
      : request(std::move(r)),
        sequence(model, static_cast<int>(request->prompt.size()) + request->options.max_new_tokens,
                 request->options.forward.experts_per_token, request->options.roster, &kv_memory),
        sampler(request->options.sampling),
        decoder(model.tokenizer()),
        filter(request->stop) {}

  std::shared_ptr<Request> request;
  DecodingSequence sequence;
  Sampler sampler;
  tokenizer::StreamDecoder decoder;
  StopStringFilter filter;
  bool prefilled = false;
  // Echo with logprobs, or scoring: every prompt position's logits, gathered
  // over the chunks (or, teacher-forced, over the steps).
  std::vector<float> prompt_logits;
  // A scoring request with a roster: only the first prompt token is
  // prefilled; the others are fed one per decode step.
  bool teacher_forced = false;
  size_t scored_rows = 0;  // teacher-forced: rows of prompt_logits so far
  std::chrono::steady_clock::time_point prefill_started;
  double prefill_seconds = 0;  // engine time in this request's chunks
  int32_t next_token = 0;  // sampled, fed to the model at the next step
  int generated = 0;
  bool eos = false;
  std::chrono::steady_clock::time_point first_token_at;
};

absl::Status RequestEngine::Submit(std::shared_ptr<Request> request) {
  if (request->options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be >= 0, got ", request->options.max_new_tokens));
  }
  const int64_t positions = static_cast<int64_t>(request->prompt.size()) + request->options.max_new_tokens;
  request->kv_bytes = KvCache::BytesFor(model_.config(),
                                    static_cast<int>(std::min<int64_t>(positions, std::numeric_limits<int>::max())));
  std::lock_guard lock(mu_);
  if (!accepting_) {
    ++counters_.requests_rejected;
    return absl::UnavailableError("shutting down: no new requests");
  }
  const uint64_t budget = options_.kv_budget_bytes;
  if (budget > 0 && request->kv_bytes > budget) {
    ++counters_.requests_rejected;
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", request->prompt.size(), " tokens) plus max_tokens ", request->options.max_new_tokens,
                     " needs ", request->kv_bytes, " bytes of KV cache, more than the whole KV budget "
                     "(inference.kv_budget) of ", budget, " bytes: ask for fewer tokens"));
  }
  if (static_cast<int>(queue_.size()) >= options_.max_queued_requests) {
    ++counters_.requests_rejected;
    return absl::UnavailableError(absl::StrCat("too many requests queued (", queue_.size(), ", ", running_,
                                               " running, KV cache ", counters_.kv_reserved_bytes, " of ",
                                               budget, " bytes reserved); retry later"));
  }
  request->submitted = std::chrono::steady_clock::now();
  queue_.push_back(std::move(request));
  queue_changed_.notify_all();
  return absl::OkStatus();
}

void RequestEngine::Cancel(const std::shared_ptr<Request>& request) {
  request->client_gone = true;
  std::lock_guard lock(mu_);
  auto queued = std::find(queue_.begin(), queue_.end(), request);
  if (queued != queue_.end()) {
    DropQueuedLocked(*request, absl::CancelledError("the client went away while the request was queued"));
    queue_.erase(queued);
  }
  queue_changed_.notify_all();
}

void RequestEngine::DropQueuedLocked(Request& request, absl::Status status) {
  ++counters_.requests_cancelled;
  std::lock_guard request_lock(request.mu);
  request.done = true;
  request.status = std::move(status);
  request.cv.notify_all();
}

void RequestEngine::Drain(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  accepting_ = false;
  queue_changed_.wait_for(lock, timeout, [&] { return queue_.empty() && running_ == 0; });
  // Whatever is left is cancelled: queued requests fail here, running ones at
  // the engine's next step or chunk.
  for (auto& request : queue_) DropQueuedLocked(*request, absl::CancelledError("shutting down"));
  queue_.clear();
  stopping_ = true;
  queue_changed_.notify_all();
}

void RequestEngine::CountEndLocked(const Request& request, const absl::Status& status) {
  --running_;
  counters_.kv_reserved_bytes -= request.kv_bytes;
  if (status.ok()) {
    ++counters_.requests_completed;
  } else if (absl::IsCancelled(status)) {
    ++counters_.requests_cancelled;
  } else {
    ++counters_.requests_failed;
  }
  queue_changed_.notify_all();  // Drain waits for running_, admission for KV memory
}

void RequestEngine::FailAdmitted(Request& request, absl::Status status) {
  {
    std::lock_guard lock(mu_);
    CountEndLocked(request, status);
  }
  std::lock_guard lock(request.mu);
  request.done = true;
  request.status = std::move(status);
  request.cv.notify_all();
}

std::vector<std::shared_ptr<Request>> RequestEngine::TakeAdmissibleLocked(size_t running_now) {
  std::vector<std::shared_ptr<Request>> admitted;
  const size_t max_batch = static_cast<size_t>(std::max(1, options_.max_batch));
  const uint64_t budget = options_.kv_budget_bytes;
  while (!queue_.empty()) {
    std::shared_ptr<Request>& head = queue_.front();
    if (head->client_gone.load()) {
      // Nobody waits for it: never run it.
      DropQueuedLocked(*head, absl::CancelledError("the client went away while the request was queued"));
      queue_.pop_front();
      continue;
    }
    if (running_now + admitted.size() >= max_batch) break;
    // In arrival order: a large request at the head waits for memory rather
    // than being overtaken for ever by small ones.
    if (budget > 0 && counters_.kv_reserved_bytes + head->kv_bytes > budget) break;
    counters_.kv_reserved_bytes += head->kv_bytes;
    admitted.push_back(std::move(head));
    queue_.pop_front();
  }
  running_ += static_cast<int>(admitted.size());
  return admitted;
}

void RequestEngine::Loop() {
  pthread_setname_np(pthread_self(), "expertd-engine");
  // Requests whose prompt is still running, oldest first, and those
  // decoding. Both are the engine thread's alone.
  std::deque<std::unique_ptr<Active>> prefilling;
  std::vector<std::unique_ptr<Active>> decoding;
  std::vector<DecodingSequence*> sequences;
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  auto cancel_gone = [&](auto& list) {
    for (auto& a : list) {
      if (a != nullptr && a->request->client_gone.load()) {
        Finish(*a, absl::CancelledError("the client went away"));
        a.reset();
      }
    }
    std::erase(list, nullptr);
  };
  while (true) {
    std::vector<std::shared_ptr<Request>> admitted;
    bool stopping = false;
    {
      std::unique_lock lock(mu_);
      queue_changed_.wait(lock, [&] {
        // Wake for work that can start now, not for a queue that waits for
        // memory: the end of a running request notifies.
        const bool admissible = !queue_.empty() && running_ < std::max(1, options_.max_batch);
        return stopping_ || admissible || !prefilling.empty() || !decoding.empty();
      });
      stopping = stopping_;
      if (!stopping) admitted = TakeAdmissibleLocked(prefilling.size() + decoding.size());
    }
    if (stopping) {
      for (auto& a : prefilling) Finish(*a, absl::CancelledError("shutting down"));
      for (auto& a : decoding) Finish(*a, absl::CancelledError("shutting down"));
      return;
    }
    for (auto& request : admitted) {
      if (std::unique_ptr<Active> a = Admit(std::move(request))) prefilling.push_back(std::move(a));
    }
    cancel_gone(prefilling);
    cancel_gone(decoding);

    if (!decoding.empty()) {
      sequences.clear();
      tokens.clear();
      for (auto& a : decoding) {
        sequences.push_back(&a->sequence);
        tokens.push_back(a->next_token);
      }
      const auto step_start = std::chrono::steady_clock::now();
      const absl::Status status = decoder_.Step(sequences, tokens, &logits);
      const double step_seconds = SecondsBetween(step_start, std::chrono::steady_clock::now());
      {
        std::lock_guard lock(mu_);
        ++counters_.steps;
        if (decoding.size() > 1) ++counters_.batched_steps;
        counters_.step_sequences += decoding.size();
        counters_.step_rows += decoder_.last_step_rows();
        counters_.largest_batch = std::max<uint64_t>(counters_.largest_batch, decoding.size());
        counters_.decode_seconds += step_seconds;
      }
      if (!status.ok()) {
        // A failed step (an expert that cannot be read) fails every sequence
        // in it: none of them advanced.
        spdlog::error("engine: decode step of {} requests failed: {}", decoding.size(), status.ToString());
        for (auto& a : decoding) Finish(*a, status);
        decoding.clear();
      }
      for (size_t i = 0; i < decoding.size(); ++i) {
        Active& a = *decoding[i];
        if (a.teacher_forced ? TakeScore(a, logits[i]) : TakeToken(a, logits[i])) {
          Finish(a, a.request->client_gone.load() ? absl::CancelledError("the client went away") : absl::OkStatus());
          decoding[i].reset();
        }
      }
      std::erase(decoding, nullptr);
    }
    // One chunk of the oldest prompt, between two decode steps.
    if (!prefilling.empty()) {
      std::unique_ptr<Active>& front = prefilling.front();
      const bool finished = PrefillNextChunk(*front);
      if (finished) {
        prefilling.pop_front();
      } else if (front->prefilled) {
        decoding.push_back(std::move(front));
        prefilling.pop_front();
      }
    }
    if (after_iteration_) after_iteration_();
  }
}

std::unique_ptr<RequestEngine::Active> RequestEngine::Admit(std::shared_ptr<Request> request) {
  request->queue_seconds = SecondsBetween(request->submitted, std::chrono::steady_clock::now());
  const model::Model& model = model_;
  const int context = model.config().max_position_embeddings;
  absl::Status valid = ValidateRosterOptions(request->options.roster, model.config(), options_.max_roster);
  if (const int k = request->options.forward.experts_per_token; valid.ok() && (k < 0 || k > model.config().num_experts)) {
    valid = absl::InvalidArgumentError(absl::StrCat("experts_per_token must be in 1 .. ", model.config().num_experts,
                                                    " (the model's experts), got ", k));
  }
  if (valid.ok() && static_cast<int64_t>(request->prompt.size()) + request->options.max_new_tokens > context) {
    valid = absl::OutOfRangeError(absl::StrCat("prompt (", request->prompt.size(), " tokens) plus max_tokens ",
                                               request->options.max_new_tokens, " exceeds the model's context of ",
                                               context));
  }
  if (valid.ok() && request->prompt.empty()) valid = absl::InvalidArgumentError("the prompt is empty");
  if (valid.ok()) valid = ValidateSamplingOptions(request->options.sampling, model.config().vocab_size);
  if (valid.ok() && request->score_prompt && request->options.max_new_tokens != 0) {
    valid = absl::InvalidArgumentError(
        absl::StrCat("a scoring request generates nothing: max_new_tokens must be 0, got ",
                     request->options.max_new_tokens));
  }
  if (valid.ok() && request->score_prompt && request->prompt_logprobs) {
    valid = absl::InvalidArgumentError("a scoring request returns every position's logits: ask for prompt logprobs "
                                       "or scores, not both");
  }
  if (!valid.ok()) {
    FailAdmitted(*request, valid);
    return nullptr;
  }
  auto active = std::make_unique<Active>(std::move(request), model, decoder_.kv_memory());
  active->teacher_forced = active->request->score_prompt && active->sequence.samples() > 1;
  active->prefill_started = std::chrono::steady_clock::now();
  return active;
}

bool RequestEngine::PrefillNextChunk(Active& active) {
  Request& r = *active.request;
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> next_logits;
  // Teacher-forced scoring prefills the first token alone (a roster step);
  // the rest of the prompt goes through decode steps (TakeScore).
  const absl::Span<const int32_t> prompt =
      active.teacher_forced ? absl::MakeConstSpan(r.prompt).first(1) : absl::MakeConstSpan(r.prompt);
  const bool keep_prompt_logits = r.prompt_logprobs || (r.score_prompt && !active.teacher_forced);
  absl::StatusOr<bool> done =
      decoder_.PrefillChunk(active.sequence, prompt, std::max(1, options_.prefill_chunk_tokens), &next_logits,
                            keep_prompt_logits ? &active.prompt_logits : nullptr);
  active.prefill_seconds += SecondsBetween(start, std::chrono::steady_clock::now());
  {
    std::lock_guard lock(mu_);
    ++counters_.prefill_chunks;
  }
  if (!done.ok()) {
    spdlog::warn("engine: prefill of a {}-token prompt failed: {}", r.prompt.size(), done.status().ToString());
    Finish(active, done.status());
    return true;
  }
  if (!*done) return false;
  active.prefilled = true;
  // The request's prefill time counts the engine's time in its chunks, not the
  // decode steps of others run between them.
  r.prefill_seconds = active.prefill_seconds;
  if (r.prompt_logprobs) {
    const int vocab = model_.config().vocab_size;
    std::vector<TokenLogprob> scored;
    for (size_t t = 0; t < r.prompt.size(); ++t) {
      scored.push_back(t == 0 ? MakeLogprob(r.prompt[0], nullptr, 0)
                              : MakeLogprob(r.prompt[t], active.prompt_logits.data() + (t - 1) * vocab,
                                            std::max(0, r.logprobs)));
    }
    active.prompt_logits = {};
    std::lock_guard lock(r.mu);
    r.prompt_token_logprobs = std::move(scored);
    r.cv.notify_all();  // a stream echoing the prompt waits for these
  }
  const bool finished = active.teacher_forced ? TakeScore(active, next_logits) : r.options.max_new_tokens == 0 ||
                                                                                     TakeToken(active, next_logits);
  if (finished) {
    Finish(active, r.client_gone.load() ? absl::CancelledError("the client went away") : absl::OkStatus());
    return true;
  }
  return false;
}


TokenLogprob RequestEngine::MakeLogprob(int32_t token, const float* logits, int top) const {
  const tokenizer::Tokenizer& tokenizer = model_.tokenizer();
  auto text_of = [&](int32_t id) {
    std::string text = tokenizer.Decode({id}, /*skip_special=*/false);
    if (tokenizer::ReplaceInvalidUtf8(text) == text) return text;
    std::string bytes = "bytes:";
    for (unsigned char c : text) absl::StrAppend(&bytes, absl::StrFormat("\\x%02x", c));
    return bytes;
  };
  TokenLogprob result;
  result.token = token;
  result.text = text_of(token);
  if (logits == nullptr) return result;
  const int vocab = model_.config().vocab_size;
  const float max_logit = *std::max_element(logits, logits + vocab);
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  const double log_sum = max_logit + std::log(sum);
  result.logprob = static_cast<float>(logits[token] - log_sum);
  if (top > 0) {
    std::vector<int32_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    const int n = std::min(top, vocab);
    std::partial_sort(order.begin(), order.begin() + n, order.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    for (int i = 0; i < n; ++i) result.top.emplace_back(text_of(order[i]), static_cast<float>(logits[order[i]] - log_sum));
  }
  return result;
}

bool RequestEngine::TakeToken(Active& active, const std::vector<float>& logits) {
  Request& request = *active.request;
  const int32_t next = active.sampler.Sample(logits);
  if (active.generated++ == 0) active.first_token_at = std::chrono::steady_clock::now();
  active.next_token = next;
  const std::optional<int32_t> eos = model_.eos_id();
  active.eos = (request.options.stop_at_eos && eos && next == *eos) ||
               std::find(request.stop_token_ids.begin(), request.stop_token_ids.end(), next) != request.stop_token_ids.end();
  std::optional<TokenLogprob> logprob;
  if (request.logprobs >= 0) logprob = MakeLogprob(next, logits.data(), request.logprobs);
  const std::string piece = active.filter.Add(active.decoder.Next(next));
  {
    std::lock_guard lock(request.mu);
    ++request.completion_tokens;
    request.tokens.push_back(next);
    if (logprob) request.token_logprobs.push_back(std::move(*logprob));
    if (!piece.empty()) {  // empty: the token ended inside a UTF-8 character
      request.text += piece;
      request.pieces.push_back(piece);
      request.cv.notify_all();
    }
  }
  return active.eos || active.filter.stopped() || active.generated >= request.options.max_new_tokens ||
         request.client_gone.load();
}

bool RequestEngine::TakeScore(Active& active, const std::vector<float>& logits) {
  const Request& request = *active.request;
  active.prompt_logits.insert(active.prompt_logits.end(), logits.begin(), logits.end());
  if (++active.scored_rows == request.prompt.size()) return true;
  active.next_token = request.prompt[active.scored_rows];
  return request.client_gone.load();
}

void RequestEngine::Finish(Active& active, absl::Status status) {
  Request& request = *active.request;
  const auto now = std::chrono::steady_clock::now();
  std::string rest;
  if (status.ok() && !active.filter.stopped()) rest = active.filter.Add(active.decoder.Flush()) + active.filter.Flush();
  {
    // The service's counters first: a client that sees its answer and then
    // asks for /v1/stats finds its request counted.
    std::lock_guard lock(mu_);
    CountEndLocked(request, status);
    if (status.ok()) {
      counters_.prompt_tokens += request.prompt.size();
      counters_.completion_tokens += active.generated;
      if (active.sequence.samples() > 1) ++counters_.roster_requests;
    }
  }
  std::lock_guard lock(request.mu);
  if (!rest.empty()) {
    request.text += rest;
    request.pieces.push_back(std::move(rest));
  }
  request.done = true;
  request.status = status;
  if (!active.prefilled) request.prefill_seconds = active.prefill_seconds;
  request.decode_seconds = active.generated > 0 ? SecondsBetween(active.first_token_at, now) : 0.0;
  request.costs = active.sequence.costs();
  if (status.ok() && request.score_prompt) request.prompt_scores = std::move(active.prompt_logits);
  if (status.ok()) request.finish_reason = active.eos || active.filter.stopped() ? "stop" : "length";
  request.cv.notify_all();
}

absl::Status RunRequest(RequestEngine& engine, const std::shared_ptr<Request>& request,
                        const std::function<void(const std::string&)>& on_piece) {
  if (absl::Status submitted = engine.Submit(request); !submitted.ok()) return submitted;
  std::unique_lock lock(request->mu);
  while (true) {
    request->cv.wait(lock, [&] { return request->done || !request->pieces.empty(); });
    // Finish publishes the last pieces and `done` under one lock: once done
    // is seen, every piece is in hand.
    const bool done = request->done;
    std::deque<std::string> pieces;
    pieces.swap(request->pieces);
    if (on_piece && !pieces.empty()) {
      lock.unlock();
      for (const std::string& piece : pieces) on_piece(piece);
      lock.lock();
    }
    if (done) return request->status;
  }
}

}  // namespace expertd::engine
