#include "daemon/inference_service.h"

#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/stop_filter.h"
#include "engine/utf8.h"
#include "base/status_macros.h"
#include "engine/tokenizer.h"
#include "spdlog/spdlog.h"

namespace expertd {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

nlohmann::json TierJson(const cache::TierStats& t) {
  return {{"policy", t.policy},         {"slots", t.slots},
          {"hits", t.hits},             {"misses", t.misses},
          {"hit_rate", t.hit_rate()},   {"collision_misses", t.collision_misses},
          {"evictions", t.evictions},   {"loads", t.loads},
          {"prefetches", t.prefetches}, {"prefetch_hits", t.prefetch_hits},
          {"bytes_loaded", t.bytes_loaded}, {"wait_seconds", t.wait_ns / 1e9},
          {"load_errors", t.load_errors}, {"checksum_failures", t.checksum_failures}};
}

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceService>> InferenceService::Create(const DaemonConfig& config) {
  auto service = std::unique_ptr<InferenceService>(new InferenceService(config));
  EngineFlags flags;
  flags.model_dir = config.model.path;
  flags.experts_per_token = config.inference.default_experts_per_token;
  flags.threads = config.inference.threads;
  if (config.cache.dram_budget_bytes > 0) {
    flags.dram_budget = absl::StrCat(config.cache.dram_budget_bytes);
    flags.device_budget = absl::StrCat(config.cache.device_budget_bytes);
  }
  flags.policy = config.cache.policy;
  flags.shallow_layers = config.cache.shallow_layers;
  flags.expert_file = config.io.expert_file;
  flags.direct_io = config.io.direct_io;
  flags.prefetch = config.prefetch.kind;
  flags.lookahead = config.prefetch.lookahead;
  flags.max_prefetches_in_flight = config.prefetch.max_in_flight;
  flags.prefetch_to_device = config.prefetch.to_device;
  flags.gpu = config.device.gpu;
  flags.cuda_device = config.device.cuda_device;
  flags.execution_placement = config.device.execution_placement;
  ASSIGN_OR_RETURN(service->engine_, LoadEngine(flags));
  service->decoder_ = std::make_unique<BatchDecoder>(*service->engine_.model, *service->engine_.forward);
  service->model_name_ = std::filesystem::path(config.model.path).filename().string();
  if (service->model_name_.empty()) service->model_name_ = config.model.path;
  service->engine_thread_ = std::thread([raw = service.get()] { raw->EngineLoop(); });
  return service;
}

InferenceService::~InferenceService() {
  Drain(std::chrono::milliseconds(0));
  if (engine_thread_.joinable()) engine_thread_.join();
}

// An admitted request, owned by the engine thread. Its KV cache holds at
// most prompt + max_tokens positions: exactly what admission reserved.
struct InferenceService::Active {
  Active(std::shared_ptr<CompletionJob> j, const Model& model, KvMemory& kv_memory)
      : job(std::move(j)),
        sequence(model, static_cast<int>(job->prompt.size()) + job->options.max_new_tokens,
                 job->options.forward.experts_per_token, job->options.roster, &kv_memory),
        sampler(job->options.sampling),
        decoder(model.tokenizer()),
        filter(job->stop) {}

  std::shared_ptr<CompletionJob> job;
  DecodingSequence sequence;
  Sampler sampler;
  StreamDecoder decoder;
  StopStringFilter filter;
  bool prefilled = false;
  std::vector<float> prompt_logits;  // echo with logprobs: every prompt position's, gathered over the chunks
  std::chrono::steady_clock::time_point prefill_started;
  double prefill_seconds = 0;  // engine time in this request's chunks
  int32_t next_token = 0;  // sampled, fed to the model at the next step
  int generated = 0;
  bool eos = false;
  std::chrono::steady_clock::time_point first_token_at;
};

absl::Status InferenceService::Submit(std::shared_ptr<CompletionJob> job) {
  const int64_t positions = static_cast<int64_t>(job->prompt.size()) + job->options.max_new_tokens;
  job->kv_bytes = KvCache::BytesFor(engine_.model->config(),
                                    static_cast<int>(std::min<int64_t>(positions, std::numeric_limits<int>::max())));
  std::lock_guard lock(mu_);
  if (!accepting_) {
    ++counters_.requests_rejected;
    return absl::UnavailableError("the daemon is shutting down");
  }
  const uint64_t budget = config_.inference.kv_budget_bytes;
  if (budget > 0 && job->kv_bytes > budget) {
    ++counters_.requests_rejected;
    return absl::InvalidArgumentError(
        absl::StrCat("prompt (", job->prompt.size(), " tokens) plus max_tokens ", job->options.max_new_tokens,
                     " needs ", job->kv_bytes, " bytes of KV cache, more than the daemon's whole "
                     "inference.kv_budget of ", budget, " bytes: ask for fewer tokens"));
  }
  if (static_cast<int>(queue_.size()) >= config_.server.max_queued_requests) {
    ++counters_.requests_rejected;
    return absl::UnavailableError(absl::StrCat("too many requests queued (", queue_.size(), ", ", running_,
                                               " running, KV cache ", counters_.kv_reserved_bytes, " of ",
                                               budget, " bytes reserved); retry later"));
  }
  job->submitted = std::chrono::steady_clock::now();
  queue_.push_back(std::move(job));
  queue_changed_.notify_all();
  return absl::OkStatus();
}

void InferenceService::Cancel(const std::shared_ptr<CompletionJob>& job) {
  job->client_gone = true;
  std::lock_guard lock(mu_);
  auto queued = std::find(queue_.begin(), queue_.end(), job);
  if (queued != queue_.end()) {
    queue_.erase(queued);
    ++counters_.requests_cancelled;
    std::lock_guard job_lock(job->mu);
    job->done = true;
    job->status = absl::CancelledError("the client went away while the request was queued");
    job->cv.notify_all();
  }
  queue_changed_.notify_all();
}

void InferenceService::Drain(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  accepting_ = false;
  queue_changed_.wait_for(lock, timeout, [&] { return queue_.empty() && running_ == 0; });
  // Whatever is left is cancelled: queued jobs fail here, running ones at
  // the engine's next step or chunk.
  for (auto& job : queue_) {
    ++counters_.requests_cancelled;
    std::lock_guard job_lock(job->mu);
    job->done = true;
    job->status = absl::CancelledError("the daemon is shutting down");
    job->cv.notify_all();
  }
  queue_.clear();
  stopping_ = true;
  queue_changed_.notify_all();
}

void InferenceService::CountEndLocked(const CompletionJob& job, const absl::Status& status) {
  --running_;
  counters_.kv_reserved_bytes -= job.kv_bytes;
  if (status.ok()) {
    ++counters_.requests_completed;
  } else if (absl::IsCancelled(status)) {
    ++counters_.requests_cancelled;
  } else {
    ++counters_.requests_failed;
  }
  queue_changed_.notify_all();  // Drain waits for running_, admission for KV memory
}

void InferenceService::FailJob(CompletionJob& job, absl::Status status) {
  {
    std::lock_guard lock(mu_);
    CountEndLocked(job, status);
  }
  std::lock_guard lock(job.mu);
  job.done = true;
  job.status = std::move(status);
  job.cv.notify_all();
}

std::vector<std::shared_ptr<CompletionJob>> InferenceService::TakeAdmissible(size_t running_now) {
  // mu_ is held by the caller.
  std::vector<std::shared_ptr<CompletionJob>> admitted;
  const size_t max_batch = static_cast<size_t>(std::max(1, config_.inference.max_batch));
  const uint64_t budget = config_.inference.kv_budget_bytes;
  while (!queue_.empty()) {
    std::shared_ptr<CompletionJob>& head = queue_.front();
    if (head->client_gone.load()) {
      // Nobody waits for it: never run it.
      ++counters_.requests_cancelled;
      std::lock_guard job_lock(head->mu);
      head->done = true;
      head->status = absl::CancelledError("the client went away while the request was queued");
      head->cv.notify_all();
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

void InferenceService::EngineLoop() {
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
      if (a != nullptr && a->job->client_gone.load()) {
        Finish(*a, absl::CancelledError("the client went away"));
        a.reset();
      }
    }
    std::erase(list, nullptr);
  };
  while (true) {
    std::vector<std::shared_ptr<CompletionJob>> admitted;
    bool stopping = false;
    {
      std::unique_lock lock(mu_);
      queue_changed_.wait(lock, [&] {
        // Wake for work that can start now, not for a queue that waits for
        // memory: the end of a running request notifies.
        const bool admissible = !queue_.empty() && running_ < std::max(1, config_.inference.max_batch);
        return stopping_ || admissible || !prefilling.empty() || !decoding.empty();
      });
      stopping = stopping_;
      if (!stopping) admitted = TakeAdmissible(prefilling.size() + decoding.size());
    }
    if (stopping) {
      for (auto& a : prefilling) Finish(*a, absl::CancelledError("the daemon is shutting down"));
      for (auto& a : decoding) Finish(*a, absl::CancelledError("the daemon is shutting down"));
      return;
    }
    for (auto& job : admitted) {
      if (std::unique_ptr<Active> a = Admit(std::move(job))) prefilling.push_back(std::move(a));
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
      const absl::Status status = decoder_->Step(sequences, tokens, &logits);
      const double step_seconds = SecondsBetween(step_start, std::chrono::steady_clock::now());
      {
        std::lock_guard lock(mu_);
        ++counters_.steps;
        if (decoding.size() > 1) ++counters_.batched_steps;
        counters_.step_sequences += decoding.size();
        counters_.step_rows += decoder_->last_step_rows();
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
        if (TakeToken(a, logits[i])) {
          Finish(a, a.job->client_gone.load() ? absl::CancelledError("the client went away") : absl::OkStatus());
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
    PublishPredictionFigures();
  }
}

std::unique_ptr<InferenceService::Active> InferenceService::Admit(std::shared_ptr<CompletionJob> job) {
  job->queue_seconds = SecondsBetween(job->submitted, std::chrono::steady_clock::now());
  const Model& model = *engine_.model;
  const int context = model.config().max_position_embeddings;
  absl::Status valid = ValidateRosterOptions(job->options.roster, model.config(), config_.inference.max_roster);
  if (valid.ok() && static_cast<int64_t>(job->prompt.size()) + job->options.max_new_tokens > context) {
    valid = absl::OutOfRangeError(absl::StrCat("prompt (", job->prompt.size(), " tokens) plus max_tokens ",
                                               job->options.max_new_tokens, " exceeds the model's context of ",
                                               context));
  }
  if (valid.ok() && job->prompt.empty()) valid = absl::InvalidArgumentError("the prompt is empty");
  if (valid.ok()) valid = ValidateSamplingOptions(job->options.sampling);
  if (!valid.ok()) {
    FailJob(*job, valid);
    return nullptr;
  }
  auto active = std::make_unique<Active>(std::move(job), model, decoder_->kv_memory());
  active->prefill_started = std::chrono::steady_clock::now();
  return active;
}

bool InferenceService::PrefillNextChunk(Active& active) {
  CompletionJob& j = *active.job;
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> next_logits;
  absl::StatusOr<bool> done =
      decoder_->PrefillChunk(active.sequence, j.prompt, std::max(1, config_.inference.prefill_chunk_tokens),
                             &next_logits, j.prompt_logprobs ? &active.prompt_logits : nullptr);
  active.prefill_seconds += SecondsBetween(start, std::chrono::steady_clock::now());
  {
    std::lock_guard lock(mu_);
    ++counters_.prefill_chunks;
  }
  if (!done.ok()) {
    spdlog::warn("engine: prefill of a {}-token prompt failed: {}", j.prompt.size(), done.status().ToString());
    Finish(active, done.status());
    return true;
  }
  if (!*done) return false;
  active.prefilled = true;
  // The job's prefill time counts the engine's time in its chunks, not the
  // decode steps of others run between them.
  j.prefill_seconds = active.prefill_seconds;
  if (j.prompt_logprobs) {
    const int vocab = engine_.model->config().vocab_size;
    std::vector<TokenLogprob> scored;
    for (size_t t = 0; t < j.prompt.size(); ++t) {
      scored.push_back(t == 0 ? MakeLogprob(j.prompt[0], nullptr, 0)
                              : MakeLogprob(j.prompt[t], active.prompt_logits.data() + (t - 1) * vocab,
                                            std::max(0, j.logprobs)));
    }
    active.prompt_logits = {};
    std::lock_guard lock(j.mu);
    j.prompt_token_logprobs = std::move(scored);
    j.cv.notify_all();  // a stream echoing the prompt waits for these
  }
  if (j.options.max_new_tokens == 0 || TakeToken(active, next_logits)) {
    Finish(active, j.client_gone.load() ? absl::CancelledError("the client went away") : absl::OkStatus());
    return true;
  }
  return false;
}

void InferenceService::PublishPredictionFigures() {
  if (engine_.prefetcher == nullptr) return;
  // The prefetcher is the engine thread's; its figures reach other threads
  // through this copy.
  uint64_t predicted = 0, actual = 0, correct = 0;
  for (const auto& f : engine_.prefetcher->prediction_stats().by_distance()) {
    predicted += f.predicted;
    actual += f.actual;
    correct += f.correct;
  }
  std::lock_guard lock(mu_);
  counters_.predicted_experts = predicted;
  counters_.actual_experts = actual;
  counters_.correctly_predicted = correct;
}

TokenLogprob InferenceService::MakeLogprob(int32_t token, const float* logits, int top) const {
  const Tokenizer& tokenizer = engine_.model->tokenizer();
  auto text_of = [&](int32_t id) {
    std::string text = tokenizer.Decode({id}, /*skip_special=*/false);
    if (ReplaceInvalidUtf8(text) == text) return text;
    std::string bytes = "bytes:";
    for (unsigned char c : text) absl::StrAppend(&bytes, absl::StrFormat("\\x%02x", c));
    return bytes;
  };
  TokenLogprob result;
  result.token = token;
  result.text = text_of(token);
  if (logits == nullptr) return result;
  const int vocab = engine_.model->config().vocab_size;
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

bool InferenceService::TakeToken(Active& active, const std::vector<float>& logits) {
  CompletionJob& job = *active.job;
  const int32_t next = active.sampler.Sample(logits);
  if (active.generated++ == 0) active.first_token_at = std::chrono::steady_clock::now();
  active.next_token = next;
  const std::optional<int32_t> eos = engine_.model->eos_id();
  active.eos = (job.options.stop_at_eos && eos && next == *eos) ||
               std::find(job.stop_token_ids.begin(), job.stop_token_ids.end(), next) != job.stop_token_ids.end();
  std::optional<TokenLogprob> logprob;
  if (job.logprobs >= 0) logprob = MakeLogprob(next, logits.data(), job.logprobs);
  const std::string piece = active.filter.Add(active.decoder.Next(next));
  {
    std::lock_guard lock(job.mu);
    ++job.completion_tokens;
    if (logprob) job.token_logprobs.push_back(std::move(*logprob));
    if (!piece.empty()) {  // empty: the token ended inside a UTF-8 character
      job.text += piece;
      job.pieces.push_back(piece);
      job.cv.notify_all();
    }
  }
  return active.eos || active.filter.stopped() || active.generated >= job.options.max_new_tokens ||
         job.client_gone.load();
}

void InferenceService::Finish(Active& active, absl::Status status) {
  CompletionJob& job = *active.job;
  const auto now = std::chrono::steady_clock::now();
  std::string rest;
  if (status.ok() && !active.filter.stopped()) rest = active.filter.Add(active.decoder.Flush()) + active.filter.Flush();
  {
    // The service's counters first: a client that sees its answer and then
    // asks for /v1/stats finds its request counted.
    std::lock_guard lock(mu_);
    CountEndLocked(job, status);
    if (status.ok()) {
      counters_.prompt_tokens += job.prompt.size();
      counters_.completion_tokens += active.generated;
      if (active.sequence.samples() > 1) ++counters_.roster_requests;
    }
  }
  std::lock_guard lock(job.mu);
  if (!rest.empty()) {
    job.text += rest;
    job.pieces.push_back(std::move(rest));
  }
  job.done = true;
  job.status = status;
  if (!active.prefilled) job.prefill_seconds = active.prefill_seconds;
  job.decode_seconds = active.generated > 0 ? SecondsBetween(active.first_token_at, now) : 0.0;
  job.costs = active.sequence.costs();
  if (status.ok()) job.finish_reason = active.eos || active.filter.stopped() ? "stop" : "length";
  job.cv.notify_all();
}

absl::Status InferenceService::ReloadBudgets(const CacheConfig& cache) {
  if (engine_.cache == nullptr) {
    if (cache.dram_budget_bytes == 0) return absl::OkStatus();
    return absl::FailedPreconditionError(
        "the daemon started with every expert resident; restart it to enable offloading");
  }
  if (cache.dram_budget_bytes == 0) {
    return absl::InvalidArgumentError("cache.dram_budget = 0 (no offloading) needs a restart");
  }
  RETURN_IF_ERROR(engine_.cache->Resize(cache.dram_budget_bytes, cache.device_budget_bytes));
  config_.cache.dram_budget_bytes = cache.dram_budget_bytes;
  config_.cache.device_budget_bytes = cache.device_budget_bytes;
  return absl::OkStatus();
}

ServiceCounters InferenceService::Counters() const {
  std::lock_guard lock(mu_);
  ServiceCounters counters = counters_;
  counters.queued = queue_.size();
  counters.running = static_cast<uint64_t>(running_);
  counters.kv_budget_bytes = config_.inference.kv_budget_bytes;
  return counters;
}

nlohmann::json InferenceService::Stats() const {
  const ServiceCounters c = Counters();
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  nlohmann::json stats;
  stats["requests"] = {{"completed", c.requests_completed}, {"failed", c.requests_failed},
                       {"rejected", c.requests_rejected},   {"cancelled", c.requests_cancelled},
                       {"queued", c.queued},                {"running", c.running},
                       {"roster", c.roster_requests}};
  // Continuous batching: how many requests each decode step carried.
  stats["batching"] = {{"max_batch", config_.inference.max_batch},
                       {"steps", c.steps},
                       {"batched_steps", c.batched_steps},
                       {"mean_sequences_per_step", ratio(c.step_sequences, c.steps)},
                       {"mean_rows_per_step", ratio(c.step_rows, c.steps)},
                       {"largest_batch", c.largest_batch},
                       {"prefill_chunks", c.prefill_chunks},
                       {"prefill_chunk_tokens", config_.inference.prefill_chunk_tokens}};
  stats["kv_cache"] = {{"reserved_bytes", c.kv_reserved_bytes}, {"budget_bytes", c.kv_budget_bytes}};
  stats["tokens"] = {{"prompt", c.prompt_tokens},
                     {"completion", c.completion_tokens},
                     {"decode_tokens_per_second", ratio(c.completion_tokens, c.decode_seconds)}};
  stats["model"] = {{"name", model_name_},
                    {"architecture", engine_.model->config().architecture_name},
                    {"layers", engine_.model->config().num_layers},
                    {"experts", engine_.model->config().num_experts},
                    {"experts_per_token", engine_.model->config().experts_per_token},
                    {"runs_on", engine_.on_gpu ? "gpu" : "cpu"}};
  stats["uptime_seconds"] = SecondsBetween(started_, std::chrono::steady_clock::now());
  if (engine_.cache != nullptr) {
    const cache::CacheStats cache = engine_.cache->stats();
    stats["cache"]["dram"] = TierJson(cache.dram);
    if (cache.device.slots > 0) stats["cache"]["device"] = TierJson(cache.device);
    stats["cache"]["slot_bytes"] = engine_.cache->slot_bytes();
  } else {
    stats["cache"] = nullptr;  // every expert resident
  }
  if (engine_.prefetcher != nullptr) {
    stats["prefetch"] = {{"predicted", c.predicted_experts},
                         {"correct", c.correctly_predicted},
                         {"actual", c.actual_experts},
                         {"precision", ratio(c.correctly_predicted, c.predicted_experts)},
                         {"recall", ratio(c.correctly_predicted, c.actual_experts)}};
  }
  return stats;
}

namespace {

// Prometheus text exposition, one family at a time: HELP and TYPE once,
// then a sample per label set. Integers print as integers (a counter of
// 588939000 bytes, not 5.88939e+08).
class MetricsText {
 public:
  template <typename T>
  void One(const char* name, const char* type, const char* help, T value) {
    Family(name, type, help, std::vector<std::pair<std::string, T>>{{"", value}});
  }
  template <typename T>
  void Family(const char* name, const char* type, const char* help,
              const std::vector<std::pair<std::string, T>>& samples) {
    absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
    for (const auto& [labels, value] : samples) absl::StrAppend(&out_, name, labels, " ", Number(value), "\n");
  }
  std::string Take() { return std::move(out_); }

 private:
  static std::string Number(uint64_t v) { return absl::StrCat(v); }
  static std::string Number(double v) { return absl::StrFormat("%.9g", v); }
  std::string out_;
};

}  // namespace

std::string InferenceService::PrometheusMetrics() const {
  const ServiceCounters c = Counters();
  MetricsText m;
  m.One("expertd_requests_completed_total", "counter", "Completions finished.", c.requests_completed);
  m.One("expertd_requests_failed_total", "counter", "Completions that failed.", c.requests_failed);
  m.One("expertd_requests_rejected_total", "counter",
        "Requests refused (queue full, KV cache too large, shutting down).", c.requests_rejected);
  m.One("expertd_requests_cancelled_total", "counter",
        "Requests cancelled (client gone, or shutdown) before they finished.", c.requests_cancelled);
  m.One("expertd_queue_depth", "gauge", "Requests waiting for the engine.", c.queued);
  m.One("expertd_requests_running", "gauge", "Requests admitted and not yet finished.", c.running);
  m.One("expertd_kv_reserved_bytes", "gauge", "KV cache memory reserved by running requests.", c.kv_reserved_bytes);
  m.One("expertd_kv_budget_bytes", "gauge", "KV cache memory budget (0: none).", c.kv_budget_bytes);
  m.One("expertd_prompt_tokens_total", "counter", "Prompt tokens processed.", c.prompt_tokens);
  m.One("expertd_completion_tokens_total", "counter", "Tokens generated.", c.completion_tokens);
  m.One("expertd_decode_tokens_per_second", "gauge", "Generated tokens per second of decode time.",
        c.decode_seconds > 0 ? c.completion_tokens / c.decode_seconds : 0.0);
  m.One("expertd_decode_steps_total", "counter", "Engine decode steps.", c.steps);
  m.One("expertd_batched_decode_steps_total", "counter", "Decode steps that carried more than one request.",
        c.batched_steps);
  m.One("expertd_prefill_chunks_total", "counter", "Prompt chunks run (chunked prefill).", c.prefill_chunks);
  if (engine_.prefetcher != nullptr) {
    m.One("expertd_prefetch_predicted_experts_total", "counter", "Experts named by cross-layer predictions.",
          c.predicted_experts);
    m.One("expertd_prefetch_correct_experts_total", "counter", "Predicted experts the layer then used.",
          c.correctly_predicted);
    m.One("expertd_prefetch_actual_experts_total", "counter", "Experts used by predicted layers.", c.actual_experts);
    m.One("expertd_prefetch_precision", "gauge", "Correct / predicted experts.",
          c.predicted_experts > 0 ? static_cast<double>(c.correctly_predicted) / c.predicted_experts : 0.0);
    m.One("expertd_prefetch_recall", "gauge", "Correct / actual experts.",
          c.actual_experts > 0 ? static_cast<double>(c.correctly_predicted) / c.actual_experts : 0.0);
  }
  if (engine_.cache == nullptr) return m.Take();
  const cache::CacheStats cache = engine_.cache->stats();
  std::vector<std::pair<const char*, const cache::TierStats*>> tiers = {{"dram", &cache.dram}};
  if (cache.device.slots > 0) tiers.emplace_back("device", &cache.device);
  struct CacheMetric {
    const char* name;
    const char* help;
    uint64_t cache::TierStats::*field;
  };
  const CacheMetric cache_metrics[] = {
      {"expertd_cache_hits_total", "Expert cache hits.", &cache::TierStats::hits},
      {"expertd_cache_misses_total", "Expert cache misses.", &cache::TierStats::misses},
      {"expertd_cache_evictions_total", "Expert cache evictions.", &cache::TierStats::evictions},
      {"expertd_cache_loads_total", "Expert loads started (demand and prefetch).", &cache::TierStats::loads},
      {"expertd_cache_prefetches_total", "Expert loads started by prefetch.", &cache::TierStats::prefetches},
      {"expertd_cache_bytes_loaded_total", "Bytes of experts loaded.", &cache::TierStats::bytes_loaded},
      {"expertd_cache_load_errors_total", "Expert loads that failed (I/O error or checksum).",
       &cache::TierStats::load_errors},
      {"expertd_cache_checksum_failures_total", "Expert loads whose bytes failed their checksum.",
       &cache::TierStats::checksum_failures},
  };
  for (const CacheMetric& metric : cache_metrics) {
    std::vector<std::pair<std::string, uint64_t>> samples;
    for (const auto& [tier, t] : tiers) samples.emplace_back(absl::StrCat("{tier=\"", tier, "\"}"), t->*metric.field);
    m.Family(metric.name, "counter", metric.help, samples);
  }
  return m.Take();
}

}  // namespace expertd
