#include "daemon/inference_service.h"

#include <pthread.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
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
          {"load_errors", t.load_errors}};
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

// An admitted request, owned by the engine thread.
struct InferenceService::Active {
  Active(std::shared_ptr<CompletionJob> j, const Model& model, int max_tokens, KvMemory& kv_memory)
      : job(std::move(j)),
        sequence(model, max_tokens, job->options.forward.experts_per_token, job->options.roster, &kv_memory),
        sampler(job->options.sampling),
        decoder(model.tokenizer()),
        filter(job->stop) {}

  std::shared_ptr<CompletionJob> job;
  DecodingSequence sequence;
  Sampler sampler;
  StreamDecoder decoder;
  StopStringFilter filter;
  int32_t next_token = 0;  // sampled, fed to the model at the next step
  int generated = 0;
  bool eos = false;
  std::chrono::steady_clock::time_point first_token_at;
};

absl::Status InferenceService::Submit(std::shared_ptr<CompletionJob> job) {
  std::lock_guard lock(mu_);
  if (!accepting_) {
    ++requests_rejected_;
    return absl::UnavailableError("the daemon is shutting down");
  }
  if (static_cast<int>(queue_.size()) >= config_.server.max_queued_requests) {
    ++requests_rejected_;
    return absl::UnavailableError(absl::StrCat("too many requests queued (", queue_.size(), "); retry later"));
  }
  job->submitted = std::chrono::steady_clock::now();
  queue_.push_back(std::move(job));
  queue_changed_.notify_all();
  return absl::OkStatus();
}

void InferenceService::Drain(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  accepting_ = false;
  queue_changed_.wait_for(lock, timeout, [&] { return queue_.empty() && running_ == 0; });
  // Whatever is left is cancelled: queued jobs fail here, running ones at
  // the engine's next step.
  for (auto& job : queue_) {
    std::lock_guard job_lock(job->mu);
    job->done = true;
    job->status = absl::CancelledError("the daemon is shutting down");
    job->cv.notify_all();
  }
  queue_.clear();
  stopping_ = true;
  queue_changed_.notify_all();
}

void InferenceService::FailJob(CompletionJob& job, absl::Status status) {
  {
    std::lock_guard lock(mu_);
    --running_;  // only admitted jobs fail here
    ++requests_failed_;
    queue_changed_.notify_all();
  }
  std::lock_guard lock(job.mu);
  job.done = true;
  job.status = std::move(status);
  job.cv.notify_all();
}

void InferenceService::EngineLoop() {
  pthread_setname_np(pthread_self(), "expertd-engine");
  std::vector<std::unique_ptr<Active>> active;
  std::vector<DecodingSequence*> sequences;
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;
  const int max_batch = std::max(1, config_.inference.max_batch);
  while (true) {
    std::vector<std::shared_ptr<CompletionJob>> admitted;
    bool stopping = false;
    {
      std::unique_lock lock(mu_);
      queue_changed_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active.empty(); });
      stopping = stopping_;
      while (!stopping && !queue_.empty() && static_cast<int>(active.size() + admitted.size()) < max_batch) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      running_ += static_cast<int>(admitted.size());
    }
    if (stopping) {
      for (auto& a : active) Finish(*a, absl::CancelledError("the daemon is shutting down"));
      return;
    }
    for (auto& job : admitted) {
      if (std::unique_ptr<Active> a = Admit(std::move(job))) active.push_back(std::move(a));
    }
    if (active.empty()) continue;

    sequences.clear();
    tokens.clear();
    for (auto& a : active) {
      sequences.push_back(&a->sequence);
      tokens.push_back(a->next_token);
    }
    const auto step_start = std::chrono::steady_clock::now();
    const absl::Status status = decoder_->Step(sequences, tokens, &logits);
    const double step_seconds = SecondsBetween(step_start, std::chrono::steady_clock::now());
    {
      std::lock_guard lock(mu_);
      ++steps_;
      if (active.size() > 1) ++batched_steps_;
      step_sequences_ += active.size();
      step_rows_ += decoder_->last_step_rows();
      largest_batch_ = std::max(largest_batch_, static_cast<int>(active.size()));
      decode_seconds_ += step_seconds;
    }
    if (!status.ok()) {
      // A failed step (an expert that cannot be read) fails every sequence
      // in it: none of them advanced.
      spdlog::error("engine: decode step of {} requests failed: {}", active.size(), status.ToString());
      for (auto& a : active) Finish(*a, status);
      active.clear();
      continue;
    }
    for (size_t i = 0; i < active.size(); ++i) {
      if (TakeToken(*active[i], logits[i])) {
        Finish(*active[i], absl::OkStatus());
        active[i].reset();
      }
    }
    std::erase(active, nullptr);
  }
}

std::unique_ptr<InferenceService::Active> InferenceService::Admit(std::shared_ptr<CompletionJob> job) {
  const auto start = std::chrono::steady_clock::now();
  job->queue_seconds = SecondsBetween(job->submitted, start);
  const Model& model = *engine_.model;
  const int context = model.config().max_position_embeddings;
  absl::Status valid = ValidateRosterOptions(job->options.roster, model.config(), config_.inference.max_roster);
  if (valid.ok() && static_cast<int64_t>(job->prompt.size()) + job->options.max_new_tokens > context) {
    valid = absl::OutOfRangeError(absl::StrCat("prompt (", job->prompt.size(), " tokens) plus max_tokens ",
                                               job->options.max_new_tokens, " exceeds the model's context of ",
                                               context));
  }
  if (valid.ok()) valid = ValidateSamplingOptions(job->options.sampling);
  if (!valid.ok()) {
    FailJob(*job, valid);
    return nullptr;
  }
  auto active = std::make_unique<Active>(std::move(job), model, context, decoder_->kv_memory());
  CompletionJob& j = *active->job;
  std::vector<float> next_logits, prompt_logits;
  absl::Status status = decoder_->Prefill(active->sequence, j.prompt, &next_logits,
                                          j.prompt_logprobs ? &prompt_logits : nullptr);
  if (status.ok() && j.prompt_logprobs) {
    const int vocab = model.config().vocab_size;
    std::vector<TokenLogprob> scored;
    for (size_t t = 0; t < j.prompt.size(); ++t) {
      if (t == 0) {
        TokenLogprob first = MakeLogprob(j.prompt[0], nullptr, 0);
        scored.push_back(std::move(first));
      } else {
        scored.push_back(MakeLogprob(j.prompt[t], prompt_logits.data() + (t - 1) * vocab, std::max(0, j.logprobs)));
      }
    }
    std::lock_guard lock(j.mu);
    j.prompt_token_logprobs = std::move(scored);
    j.cv.notify_all();  // a stream echoing the prompt waits for these
  }
  j.prefill_seconds = SecondsBetween(start, std::chrono::steady_clock::now());
  if (!status.ok()) {
    Finish(*active, status);
    return nullptr;
  }
  if (j.options.max_new_tokens == 0 || TakeToken(*active, next_logits)) {
    Finish(*active, absl::OkStatus());
    return nullptr;
  }
  return active;
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
    --running_;
    if (status.ok()) {
      ++requests_done_;
      prompt_tokens_ += active.job->prompt.size();
      completion_tokens_ += active.generated;
      if (active.sequence.samples() > 1) ++roster_requests_;
    } else {
      ++requests_failed_;
    }
    queue_changed_.notify_all();
  }
  std::lock_guard lock(job.mu);
  if (!rest.empty()) {
    job.text += rest;
    job.pieces.push_back(std::move(rest));
  }
  job.done = true;
  job.status = status;
  if (status.ok()) {
    job.finish_reason = active.eos || active.filter.stopped() ? "stop" : "length";
    job.decode_seconds = active.generated > 0 ? SecondsBetween(active.first_token_at, now) : 0.0;
    job.costs = active.sequence.costs();
  }
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

nlohmann::json InferenceService::Stats() const {
  nlohmann::json stats;
  {
    std::lock_guard lock(mu_);
    stats["requests"] = {{"completed", requests_done_},
                         {"failed", requests_failed_},
                         {"rejected", requests_rejected_},
                         {"queued", queue_.size()},
                         {"running", running_},
                         {"roster", roster_requests_}};
    // Continuous batching: how many requests each decode step carried.
    stats["batching"] = {{"max_batch", config_.inference.max_batch},
                         {"steps", steps_},
                         {"batched_steps", batched_steps_},
                         {"mean_sequences_per_step", steps_ > 0 ? static_cast<double>(step_sequences_) / steps_ : 0.0},
                         {"mean_rows_per_step", steps_ > 0 ? static_cast<double>(step_rows_) / steps_ : 0.0},
                         {"largest_batch", largest_batch_}};
    stats["tokens"] = {{"prompt", prompt_tokens_},
                       {"completion", completion_tokens_},
                       {"decode_tokens_per_second", decode_seconds_ > 0 ? completion_tokens_ / decode_seconds_ : 0.0}};
  }
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
  return stats;
}

std::string InferenceService::PrometheusMetrics() const {
  const nlohmann::json stats = Stats();
  std::string out;
  // One family: HELP and TYPE once, then a sample per label set.
  auto family = [&](const char* name, const char* type, const char* help,
                    const std::vector<std::pair<std::string, double>>& samples) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
    for (const auto& [labels, value] : samples) absl::StrAppend(&out, name, labels, " ", value, "\n");
  };
  auto one = [](const nlohmann::json& value) {
    return std::vector<std::pair<std::string, double>>{{"", value.get<double>()}};
  };
  family("expertd_requests_completed_total", "counter", "Completions finished.", one(stats["requests"]["completed"]));
  family("expertd_requests_failed_total", "counter", "Completions that failed.", one(stats["requests"]["failed"]));
  family("expertd_requests_rejected_total", "counter", "Requests refused (queue full or shutting down).",
         one(stats["requests"]["rejected"]));
  family("expertd_queue_depth", "gauge", "Requests waiting for the engine.", one(stats["requests"]["queued"]));
  family("expertd_prompt_tokens_total", "counter", "Prompt tokens processed.", one(stats["tokens"]["prompt"]));
  family("expertd_completion_tokens_total", "counter", "Tokens generated.", one(stats["tokens"]["completion"]));
  family("expertd_decode_tokens_per_second", "gauge", "Generated tokens per second of decode time.",
         one(stats["tokens"]["decode_tokens_per_second"]));
  family("expertd_decode_steps_total", "counter", "Engine decode steps.", one(stats["batching"]["steps"]));
  family("expertd_batched_decode_steps_total", "counter", "Decode steps that carried more than one request.",
         one(stats["batching"]["batched_steps"]));
  if (stats["cache"].is_null()) return out;
  struct CacheMetric {
    const char* name;
    const char* key;
    const char* help;
  };
  const CacheMetric cache_metrics[] = {
      {"expertd_cache_hits_total", "hits", "Expert cache hits."},
      {"expertd_cache_misses_total", "misses", "Expert cache misses."},
      {"expertd_cache_evictions_total", "evictions", "Expert cache evictions."},
      {"expertd_cache_bytes_loaded_total", "bytes_loaded", "Bytes of experts loaded."},
  };
  for (const CacheMetric& m : cache_metrics) {
    std::vector<std::pair<std::string, double>> samples;
    for (const auto& [tier, t] : stats["cache"].items()) {
      if (t.is_object()) samples.emplace_back(absl::StrCat("{tier=\"", tier, "\"}"), t[m.key].get<double>());
    }
    family(m.name, "counter", m.help, samples);
  }
  return out;
}

}  // namespace expertd
