#include "daemon/inference_service.h"

#include <pthread.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
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
  ASSIGN_OR_RETURN(service->engine_, LoadEngine(flags));
  service->model_name_ = std::filesystem::path(config.model.path).filename().string();
  if (service->model_name_.empty()) service->model_name_ = config.model.path;
  service->engine_thread_ = std::thread([raw = service.get()] { raw->EngineLoop(); });
  return service;
}

InferenceService::~InferenceService() {
  Drain(std::chrono::milliseconds(0));
  if (engine_thread_.joinable()) engine_thread_.join();
}

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
  queue_.push_back(std::move(job));
  queue_changed_.notify_all();
  return absl::OkStatus();
}

void InferenceService::Drain(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  accepting_ = false;
  queue_changed_.wait_for(lock, timeout, [&] { return queue_.empty() && !busy_; });
  // Whatever is left is cancelled: queued jobs fail, the running one stops
  // at its next token.
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

void InferenceService::EngineLoop() {
  pthread_setname_np(pthread_self(), "expertd-engine");
  while (true) {
    std::shared_ptr<CompletionJob> job;
    {
      std::unique_lock lock(mu_);
      queue_changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Run(*job);
    std::lock_guard lock(mu_);
    busy_ = false;
    queue_changed_.notify_all();
  }
}

void InferenceService::Run(CompletionJob& job) {
  const auto start = std::chrono::steady_clock::now();
  const Tokenizer& tokenizer = engine_.model->tokenizer();
  StreamDecoder decoder(tokenizer);
  // Stops at a stop string or when the client goes away; the engine checks
  // it after every token.
  std::atomic<bool> cancel{false};
  bool stopped_by_string = false;
  std::string pending;  // text held back while it could still be the start of a stop string
  GenerateOptions options = job.options;
  options.cancel = &cancel;

  auto publish = [&](std::string piece) {
    if (piece.empty()) return;  // a token that ended inside a UTF-8 character
    std::lock_guard lock(job.mu);
    job.text += piece;
    job.pieces.push_back(std::move(piece));
    job.cv.notify_all();
  };
  auto on_token = [&](int32_t id) {
    ++job.completion_tokens;
    if (job.client_gone.load()) cancel = true;
    if (stopped_by_string) return;
    pending += decoder.Next(id);
    for (const std::string& stop : job.stop) {
      const size_t at = pending.find(stop);
      if (at != std::string::npos) {
        pending.resize(at);
        stopped_by_string = true;
        cancel = true;
      }
    }
    // Keep back the longest suffix that could begin a stop string.
    size_t keep = 0;
    if (!stopped_by_string) {
      for (const std::string& stop : job.stop) {
        for (size_t n = std::min(stop.size() - 1, pending.size()); n > keep; --n) {
          if (pending.compare(pending.size() - n, n, stop, 0, n) == 0) {
            keep = n;
            break;
          }
        }
      }
    }
    if (pending.size() > keep) {
      publish(pending.substr(0, pending.size() - keep));
      pending.erase(0, pending.size() - keep);
    }
  };

  absl::StatusOr<GenerateResult> result = Generate(*engine_.model, *engine_.forward, job.prompt, options, on_token);
  if (result.ok() && !stopped_by_string) publish(pending + decoder.Flush());

  std::lock_guard lock(job.mu);
  job.done = true;
  job.status = result.status();
  if (result.ok()) {
    job.finish_reason = (stopped_by_string || result->finish_reason == GenerateResult::FinishReason::kEos) ? "stop"
                                                                                                            : "length";
    job.prefill_seconds = result->prefill_seconds;
    job.decode_seconds = result->decode_seconds;
  }
  job.cv.notify_all();
  std::lock_guard service_lock(mu_);
  if (result.ok()) {
    ++requests_done_;
    prompt_tokens_ += job.prompt.size();
    completion_tokens_ += job.completion_tokens;
    decode_seconds_ += result->decode_seconds;
  } else {
    ++requests_failed_;
  }
  spdlog::debug("engine: request done in {:.3f} s", SecondsBetween(start, std::chrono::steady_clock::now()));
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
                         {"running", busy_ ? 1 : 0}};
    stats["tokens"] = {{"prompt", prompt_tokens_},
                       {"completion", completion_tokens_},
                       {"decode_tokens_per_second", decode_seconds_ > 0 ? completion_tokens_ / decode_seconds_ : 0.0}};
  }
  stats["model"] = {{"name", model_name_},
                    {"architecture", engine_.model->config().architecture_name},
                    {"layers", engine_.model->config().num_layers},
                    {"experts", engine_.model->config().num_experts},
                    {"experts_per_token", engine_.model->config().experts_per_token}};
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
