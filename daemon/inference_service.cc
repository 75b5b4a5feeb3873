#include "daemon/inference_service.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "spdlog/spdlog.h"

namespace expertd::daemon {
namespace {

double SecondsBetween(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

nlohmann::json TierJson(const cache::TierStats& t) {
  // Each access once: hits + hidden + misses == accesses (TierStats).
  return {{"policy", t.policy},
          {"slots", t.slots},
          {"accesses", t.accesses()},
          {"hits", t.hits},
          {"hidden", t.hidden},
          {"misses", t.misses},
          {"hit_rate", t.hit_rate()},
          {"hidden_rate", t.hidden_rate()},
          {"miss_rate", t.miss_rate()},
          {"collision_misses", t.collision_misses},
          {"late_prefetches", t.late_prefetches},
          {"evictions", t.evictions},
          {"wrong_guesses_recycled", t.wrong_guesses_recycled},
          {"prefetches_cancelled", t.prefetches_cancelled},
          {"loads", t.loads},
          {"prefetches", t.prefetches},
          {"bytes_loaded", t.bytes_loaded},
          {"stall_seconds", t.wait_ns / 1e9},
          {"load_errors", t.load_errors},
          {"checksum_failures", t.checksum_failures}};
}

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceService>> InferenceService::Create(const DaemonConfig& config) {
  auto service = std::unique_ptr<InferenceService>(new InferenceService(config));
  ASSIGN_OR_RETURN(service->runtime_, runtime::Runtime::Load(EngineOptionsFromConfig(config)));
  service->model_name_ = std::filesystem::path(config.model.path).filename().string();
  if (service->model_name_.empty()) service->model_name_ = config.model.path;
  engine::SchedulerOptions scheduling;
  scheduling.max_batch = config.inference.max_batch;
  scheduling.max_queued_requests = config.server.max_queued_requests;
  scheduling.kv_budget_bytes = config.inference.kv_budget_bytes;
  scheduling.prefill_chunk_tokens = config.inference.prefill_chunk_tokens;
  scheduling.max_roster = config.inference.max_roster;
  service->requests_ = std::make_unique<engine::RequestEngine>(service->runtime_->model(), service->runtime_->forward(), scheduling,
                                                       [raw = service.get()] { raw->PublishPredictionFigures(); });
  return service;
}

InferenceService::~InferenceService() {
  requests_.reset();  // drains and joins the engine thread before the engine goes
}

void InferenceService::PublishPredictionFigures() {
  const runtime::PassStats pass = runtime_->PassFigures();
  if (!pass.prefetch) return;
  const predictor::PredictionStats::Figures total = pass.prefetch->Total();
  std::lock_guard lock(prediction_mu_);
  predicted_experts_ = total.predicted;
  actual_experts_ = total.actual;
  correctly_predicted_ = total.correct;
  prefetch_budget_per_layer_ = pass.prefetch->per_layer_budget;
  prefetch_budget_fixed_ = pass.prefetch->budget_fixed;
  mean_layer_seconds_ = pass.prefetch->mean_layer_seconds;
  load_bytes_per_second_ = pass.prefetch->load_bytes_per_second;
  next_token_layers_ = pass.prefetch->next_token_layers;
  next_token_ = pass.prefetch->next_token;
}

absl::Status InferenceService::ReloadBudgets(const CacheConfig& cache) {
  if (!runtime_->offloading()) {
    if (cache.dram_budget_bytes == 0) return absl::OkStatus();
    return absl::FailedPreconditionError(
        "the daemon started with every expert resident; restart it to enable offloading");
  }
  if (cache.dram_budget_bytes == 0) {
    return absl::InvalidArgumentError("cache.dram_budget = 0 (no offloading) needs a restart");
  }
  RETURN_IF_ERROR(runtime_->ResizeCache(cache.dram_budget_bytes, cache.device_budget_bytes));
  config_.cache.dram_budget_bytes = cache.dram_budget_bytes;
  config_.cache.device_budget_bytes = cache.device_budget_bytes;
  return absl::OkStatus();
}

ServiceCounters InferenceService::Counters() const {
  ServiceCounters counters;
  counters.scheduler = requests_->Counters();
  counters.kv_budget_bytes = config_.inference.kv_budget_bytes;
  std::lock_guard lock(prediction_mu_);
  counters.predicted_experts = predicted_experts_;
  counters.actual_experts = actual_experts_;
  counters.correctly_predicted = correctly_predicted_;
  counters.prefetch_budget_per_layer = prefetch_budget_per_layer_;
  counters.prefetch_budget_fixed = prefetch_budget_fixed_;
  counters.mean_layer_seconds = mean_layer_seconds_;
  counters.load_bytes_per_second = load_bytes_per_second_;
  counters.next_token_layers = next_token_layers_;
  counters.next_token_predicted = next_token_.predicted;
  counters.next_token_actual = next_token_.actual;
  counters.next_token_correct = next_token_.correct;
  return counters;
}

nlohmann::json InferenceService::Stats() const {
  const ServiceCounters c = Counters();
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  nlohmann::json stats;
  stats["requests"] = {{"completed", c.scheduler.requests_completed}, {"failed", c.scheduler.requests_failed},
                       {"rejected", c.scheduler.requests_rejected},   {"cancelled", c.scheduler.requests_cancelled},
                       {"queued", c.scheduler.queued},                {"running", c.scheduler.running},
                       {"roster", c.scheduler.roster_requests}};
  // Continuous batching: how many requests each decode step carried.
  stats["batching"] = {{"max_batch", config_.inference.max_batch},
                       {"steps", c.scheduler.steps},
                       {"batched_steps", c.scheduler.batched_steps},
                       {"mean_sequences_per_step", ratio(c.scheduler.step_sequences, c.scheduler.steps)},
                       {"mean_rows_per_step", ratio(c.scheduler.step_rows, c.scheduler.steps)},
                       {"largest_batch", c.scheduler.largest_batch},
                       {"prefill_chunks", c.scheduler.prefill_chunks},
                       {"prefill_chunk_tokens", config_.inference.prefill_chunk_tokens}};
  stats["kv_cache"] = {{"reserved_bytes", c.scheduler.kv_reserved_bytes}, {"budget_bytes", c.kv_budget_bytes}};
  stats["tokens"] = {{"prompt", c.scheduler.prompt_tokens},
                     {"completion", c.scheduler.completion_tokens},
                     {"decode_tokens_per_second", ratio(c.scheduler.completion_tokens, c.scheduler.decode_seconds)}};
  const model::ModelConfig& config = runtime_->model().config();
  const runtime::RuntimeStats runtime = runtime_->Stats();
  stats["model"] = {{"name", model_name_},
                    {"architecture", config.architecture_name},
                    {"layers", config.num_layers},
                    {"experts", config.num_experts},
                    {"experts_per_token", config.experts_per_token},
                    {"runs_on", runtime.on_gpu ? "gpu" : "cpu"}};
  stats["cpu"] = {
      {"threads", runtime.threads}, {"simd_target", runtime.simd_target}, {"bf16_activations", runtime.bf16_activations}};
  stats["uptime_seconds"] = SecondsBetween(started_, std::chrono::steady_clock::now());
  if (runtime.cache) {
    stats["cache"]["dram"] = TierJson(runtime.cache->dram);
    if (runtime.cache->device.slots > 0) stats["cache"]["device"] = TierJson(runtime.cache->device);
    stats["cache"]["slot_bytes"] = runtime.cache_slot_bytes;
    stats["cache"]["expert_dtypes"] = runtime.cache_expert_dtypes;
  } else {
    stats["cache"] = nullptr;  // every expert resident
  }
  if (runtime_->prefetching()) {
    stats["prefetch"] = {{"predicted", c.predicted_experts},
                         {"correct", c.correctly_predicted},
                         {"actual", c.actual_experts},
                         {"precision", ratio(c.correctly_predicted, c.predicted_experts)},
                         {"recall", ratio(c.correctly_predicted, c.actual_experts)},
                         {"budget_per_layer", c.prefetch_budget_per_layer},
                         {"budget", c.prefetch_budget_fixed ? "fixed" : "measured"},
                         {"mean_layer_seconds", c.mean_layer_seconds},
                         {"load_bytes_per_second", c.load_bytes_per_second}};
    if (c.next_token_layers > 0) {
      stats["prefetch"]["next_token"] = {{"layers", c.next_token_layers},
                                         {"predicted", c.next_token_predicted},
                                         {"correct", c.next_token_correct},
                                         {"actual", c.next_token_actual},
                                         {"precision", ratio(c.next_token_correct, c.next_token_predicted)},
                                         {"recall", ratio(c.next_token_correct, c.next_token_actual)}};
    }
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
  m.One("expertd_requests_completed_total", "counter", "Completions finished.", c.scheduler.requests_completed);
  m.One("expertd_requests_failed_total", "counter", "Completions that failed.", c.scheduler.requests_failed);
  m.One("expertd_requests_rejected_total", "counter",
        "Requests refused (queue full, KV cache too large, shutting down).", c.scheduler.requests_rejected);
  m.One("expertd_requests_cancelled_total", "counter",
        "Requests cancelled (client gone, or shutdown) before they finished.", c.scheduler.requests_cancelled);
  m.One("expertd_queue_depth", "gauge", "Requests waiting for the engine.", c.scheduler.queued);
  m.One("expertd_requests_running", "gauge", "Requests admitted and not yet finished.", c.scheduler.running);
  m.One("expertd_kv_reserved_bytes", "gauge", "KV cache memory reserved by running requests.", c.scheduler.kv_reserved_bytes);
  m.One("expertd_kv_budget_bytes", "gauge", "KV cache memory budget (0: none).", c.kv_budget_bytes);
  m.One("expertd_prompt_tokens_total", "counter", "Prompt tokens processed.", c.scheduler.prompt_tokens);
  m.One("expertd_completion_tokens_total", "counter", "Tokens generated.", c.scheduler.completion_tokens);
  m.One("expertd_decode_tokens_per_second", "gauge", "Generated tokens per second of decode time.",
        c.scheduler.decode_seconds > 0 ? c.scheduler.completion_tokens / c.scheduler.decode_seconds : 0.0);
  m.One("expertd_decode_steps_total", "counter", "Engine decode steps.", c.scheduler.steps);
  m.One("expertd_batched_decode_steps_total", "counter", "Decode steps that carried more than one request.",
        c.scheduler.batched_steps);
  m.One("expertd_prefill_chunks_total", "counter", "Prompt chunks run (chunked prefill).", c.scheduler.prefill_chunks);
  if (runtime_->prefetching()) {
    m.One("expertd_prefetch_predicted_experts_total", "counter", "Experts named by cross-layer predictions.",
          c.predicted_experts);
    m.One("expertd_prefetch_correct_experts_total", "counter", "Predicted experts the layer then used.",
          c.correctly_predicted);
    m.One("expertd_prefetch_actual_experts_total", "counter", "Experts used by predicted layers.", c.actual_experts);
    m.One("expertd_prefetch_precision", "gauge", "Correct / predicted experts.",
          c.predicted_experts > 0 ? static_cast<double>(c.correctly_predicted) / c.predicted_experts : 0.0);
    m.One("expertd_prefetch_recall", "gauge", "Correct / actual experts.",
          c.actual_experts > 0 ? static_cast<double>(c.correctly_predicted) / c.actual_experts : 0.0);
    m.One("expertd_prefetch_budget_per_layer", "gauge", "Prefetch reads allowed per predicted layer and pass.",
          static_cast<uint64_t>(c.prefetch_budget_per_layer));
    m.One("expertd_prefetch_load_bytes_per_second", "gauge",
          "Expert file read throughput with loads overlapping, as the prefetch budget measures it.",
          c.load_bytes_per_second);
  }
  const runtime::RuntimeStats runtime = runtime_->Stats();
  if (!runtime.cache) return m.Take();
  const cache::CacheStats& cache = *runtime.cache;
  std::vector<std::pair<const char*, const cache::TierStats*>> tiers = {{"dram", &cache.dram}};
  if (cache.device.slots > 0) tiers.emplace_back("device", &cache.device);
  struct CacheMetric {
    const char* name;
    const char* help;
    uint64_t cache::TierStats::*field;
  };
  const CacheMetric cache_metrics[] = {
      {"expertd_cache_hits_total", "Expert accesses that found the expert ready (not brought by a prefetch).",
       &cache::TierStats::hits},
      {"expertd_cache_hidden_total", "Expert accesses that found the expert ready because a prefetch brought it.",
       &cache::TierStats::hidden},
      {"expertd_cache_misses_total", "Expert accesses that waited for a demand load (or a late prefetch).",
       &cache::TierStats::misses},
      {"expertd_cache_stall_nanoseconds_total", "Time expert misses spent waiting for their loads.",
       &cache::TierStats::wait_ns},
      {"expertd_cache_evictions_total", "Expert cache evictions.", &cache::TierStats::evictions},
      {"expertd_cache_wrong_guesses_recycled_total",
       "Evictions of a prefetched expert whose layer ran without it (before the policy's victim).",
       &cache::TierStats::wrong_guesses_recycled},
      {"expertd_cache_prefetches_cancelled_total",
       "Prefetches whose queued reads were cancelled when their layer ran without them.",
       &cache::TierStats::prefetches_cancelled},
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

}  // namespace expertd::daemon
