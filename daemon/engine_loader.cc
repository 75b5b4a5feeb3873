#include "daemon/engine_loader.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/byte_size.h"
#include "base/status_macros.h"
#include "engine/expert_packer.h"
#include "spdlog/spdlog.h"

namespace expertd {

void PrintPackProgress(const char* what, int done, int total) {
  // One line per 10%, so logs stay short on big models.
  if (done == total || (done * 10 / total) != ((done - 1) * 10 / total)) {
    spdlog::info("{}: {}/{} experts ({}%)", what, done, total, done * 100 / total);
  }
}

namespace {

// Opens (packing first when missing) the expert file and builds the cache.
absl::Status AttachExpertCache(const EngineFlags& flags, LoadedEngine& engine) {
  const Model& model = *engine.model;
  const std::string path = flags.expert_file.empty() ? model.dir() + "/model.experts" : flags.expert_file;
  if (!std::filesystem::exists(path)) {
    spdlog::info("{} does not exist: packing the experts of {} into it", path, model.dir());
    RETURN_IF_ERROR(PackExperts(model, path, PackDtype::kKeep,
                                [](int done, int total) { PrintPackProgress("packing", done, total); }));
  }
  ASSIGN_OR_RETURN(engine.expert_file, io::ExpertFile::Open(path, model.fingerprint()));
  io::ReaderOptions reader_options;
  reader_options.path = path;
  reader_options.direct_io = flags.direct_io;
  ASSIGN_OR_RETURN(engine.reader, io::OpenExpertReader(reader_options));

  cache::ExpertCacheOptions options;
  ASSIGN_OR_RETURN(options.dram_budget_bytes, ParseByteSize(flags.dram_budget));
  if (!flags.device_budget.empty()) {
    ASSIGN_OR_RETURN(options.device_budget_bytes, ParseByteSize(flags.device_budget));
  }
  options.policy = flags.policy;
  const int k = flags.experts_per_token > 0 ? flags.experts_per_token : model.config().experts_per_token;
  options.min_slots = k;
  ASSIGN_OR_RETURN(engine.cache, cache::ExpertCache::Create(*engine.expert_file, *engine.reader, std::move(options)));
  if (flags.shallow_layers > 0) {
    std::vector<cache::ExpertKey> shallow;
    int moe_layers = 0;
    for (int layer = 0; layer < model.config().num_layers && moe_layers < flags.shallow_layers; ++layer) {
      if (!model.config().layer_is_moe[layer]) continue;
      ++moe_layers;
      for (int e = 0; e < model.config().num_experts; ++e) shallow.push_back({layer, e});
    }
    RETURN_IF_ERROR(engine.cache->PinPermanently(shallow));
    spdlog::info("kept the {} experts of the first {} MoE layers resident", shallow.size(), moe_layers);
  }
  engine.cached_experts = std::make_unique<CachedExperts>(*engine.cache, engine.expert_file->layout());
  if (flags.prefetch != "none") {
    PrefetcherOptions prefetch;
    prefetch.predictor.kind = flags.prefetch;
    prefetch.predictor.lookahead = flags.lookahead;
    prefetch.scheduler.max_in_flight = flags.max_prefetches_in_flight;
    ASSIGN_OR_RETURN(engine.prefetcher, Prefetcher::Create(model, *engine.cache, prefetch, engine.pool.get()));
  }
  spdlog::info("expert cache over {}: {} per expert, dram {} slots{}, policy {}, reader {}", path,
               FormatByteSize(engine.cache->slot_bytes()), engine.cache->stats().dram.slots,
               engine.cache->has_device_tier() ? absl::StrCat(", device ", engine.cache->stats().device.slots, " slots")
                                               : std::string(),
               flags.policy, std::string(engine.reader->name()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoadedEngine> LoadEngine(const EngineFlags& flags) {
  if (flags.threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  const auto start = std::chrono::steady_clock::now();
  LoadedEngine engine;
  ASSIGN_OR_RETURN(engine.model, Model::Load(flags.model_dir));
  const ModelConfig& config = engine.model->config();
  RETURN_IF_ERROR(ValidateRosterOptions(flags.roster, config, /*max_samples=*/0));
  if (flags.experts_per_token < 0 || flags.experts_per_token > config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("--k must be in 1 .. ", config.num_experts,
                                                   " (this model's experts), got ", flags.experts_per_token));
  }
  const int threads = flags.threads > 0 ? flags.threads : std::max(1u, std::thread::hardware_concurrency());
  engine.pool = std::make_unique<kernels::ThreadPool>(threads);
  if (!flags.dram_budget.empty()) RETURN_IF_ERROR(AttachExpertCache(flags, engine));
  engine.forward = std::make_unique<ForwardPass>(*engine.model, engine.pool.get(), engine.cached_experts.get());
  engine.forward->SetObserver(engine.prefetcher.get());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("loaded {} ({}: {} layers, {} experts, top-{}, hidden {}) in {:.2f} s, {} threads", flags.model_dir,
               config.architecture_name, config.num_layers, config.num_experts, config.experts_per_token,
               config.hidden_size, seconds, threads);
  return engine;
}

}  // namespace expertd
