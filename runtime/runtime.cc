#include "runtime/runtime.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/byte_size.h"
#include "base/status_macros.h"
#include "engine/expert_packer.h"
#include "engine/forward.h"
#include "io/expert_file.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/simd_target.h"
#include "spdlog/spdlog.h"
#ifdef EXPERTD_HAVE_CUDA
#include "cache/cuda_device_tier.h"
#include "engine/cuda/cuda_forward.h"
#include "kernels/cuda/runtime.h"
#endif

namespace expertd::runtime {

void PrintPackProgress(const char* what, int done, int total) {
  // One line per 10%, so logs stay short on big models.
  if (done == total || (done * 10 / total) != ((done - 1) * 10 / total)) {
    spdlog::info("{}: {}/{} experts ({}%)", what, done, total, done * 100 / total);
  }
}

std::string ResolvePrefetchKind(const std::string& kind, bool device_tier) {
  if (kind != "auto") return kind;
  return device_tier ? "cross-layer" : "none";
}

namespace {

// Whether to run on a CUDA device (options.gpu), decided before loading.
absl::StatusOr<bool> UseGpu(const DeviceOptions& options) {
  if (options.gpu == GpuMode::kOff) return false;
#ifdef EXPERTD_HAVE_CUDA
  std::string why_none;
  ASSIGN_OR_RETURN(int devices, kernels::cuda::CudaDeviceCount(&why_none));
  if (devices > 0) return true;
  if (options.gpu == GpuMode::kOn) return absl::FailedPreconditionError(absl::StrCat("--gpu on, but no CUDA device: ", why_none));
  spdlog::info("no CUDA device ({}): running on the CPU", why_none);
  return false;
#else
  if (options.gpu == GpuMode::kOn) {
    return absl::FailedPreconditionError("--gpu on, but this expertd was built without CUDA (EXPERTD_CUDA=OFF or no nvcc)");
  }
  return false;
#endif
}

}  // namespace

// Opens (packing first when missing) the expert file and builds the cache.
// copier: the device tier's backend (the CUDA tier on a GPU); null for the
// host-memory stand-in.
absl::Status Runtime::AttachExpertCache(const EngineOptions& options, std::unique_ptr<cache::DeviceCopier> copier) {
  const model::Model& model = *model_;
  io::ReaderOptions reader_options = options.reader;
  if (reader_options.path.empty()) reader_options.path = model.DefaultExpertFilePath();
  const std::string& path = reader_options.path;
  if (!std::filesystem::exists(path)) {
    spdlog::info("{} does not exist: packing the experts of {} into it", path, model.dir());
    RETURN_IF_ERROR(engine::PackExperts(model, path, std::nullopt,
                                [](int done, int total) { PrintPackProgress("packing", done, total); }));
  }
  ASSIGN_OR_RETURN(expert_file_, io::ExpertFile::Open(path, model.fingerprint()));
  if (expert_file_->bundle_hash() != io::BundleHash::kXxh3 && options.cache.verify_checksums) {
    spdlog::info("{} is a version-{} packed file: each miss checks its expert with XXH64; `expertd pack` re-packs "
                 "it as version 3, whose XXH3 checks run ~2.7x faster (io/FORMAT.md)",
                 path, expert_file_->version());
  }
  ASSIGN_OR_RETURN(reader_, io::OpenExpertReader(reader_options));

  // ExpertCacheOptions owns its device copier and so does not copy: the
  // cache gets one made here with every setting of options.cache.
  cache::ExpertCacheOptions cache_options;
  cache_options.dram_budget_bytes = options.cache.dram_budget_bytes;
  cache_options.device_budget_bytes = options.cache.device_budget_bytes;
  cache_options.policy = options.cache.policy;
  cache_options.policy_options = options.cache.policy_options;
  cache_options.verify_checksums = options.cache.verify_checksums;
  cache_options.prefetch_to_device = options.cache.prefetch_to_device;
  cache_options.wrong_guesses_first = options.cache.wrong_guesses_first;
  // One layer's experts per token must fit, at the k this engine runs.
  const int k = options.experts_per_token > 0 ? options.experts_per_token : model.config().experts_per_token;
  cache_options.min_slots = std::max(options.cache.min_slots, k);
  const int min_slots = cache_options.min_slots;
  if (copier != nullptr) cache_options.device_copier = std::move(copier);
  ASSIGN_OR_RETURN(cache_,
                   cache::ExpertCache::Create(*expert_file_, *reader_, std::move(cache_options)));
  if (options.shallow_layers > 0) RETURN_IF_ERROR(KeepShallowLayersResident(model, options.shallow_layers, min_slots));
  cached_experts_ = std::make_unique<engine::CachedExperts>(*cache_, *expert_file_, options.bf16_activations);
  // A prefetcher predicts within the pass (kind), or the next token's first
  // layers (next_token_layers), or both.
  const std::string kind = ResolvePrefetchKind(options.prefetch.predictor.kind, cache_->has_device_tier());
  if (kind != options.prefetch.predictor.kind) {
    spdlog::info("prefetch kind auto: {} ({})", kind,
                 kind == "none" ? "no device tier: NVMe -> DRAM prefetching has cost more than it hid on every disk "
                                  "measured (bench/README.md); set [prefetch] kind to prefetch anyway"
                                : "a device tier: prefetches copy DRAM -> device under compute");
  }
  if (kind != "none" || options.prefetch.next_token_layers > 0) {
    engine::PrefetcherOptions prefetch = options.prefetch;
    prefetch.predictor.kind = kind;
    // Predicting past the last layer predicts nothing, and the predictor's
    // statistics are sized by the lookahead: bound it by the model.
    const int max_lookahead = std::max(1, model.config().num_layers - 1);
    prefetch.predictor.lookahead = std::min(options.prefetch.predictor.lookahead, max_lookahead);
    if (options.prefetch.predictor.lookahead > max_lookahead) {
      spdlog::info("prefetch lookahead {} reaches past the last of this model's {} layers; using {}",
                   options.prefetch.predictor.lookahead, model.config().num_layers, max_lookahead);
    }
    ASSIGN_OR_RETURN(prefetcher_, engine::Prefetcher::Create(model, *cached_experts_, prefetch, pool_.get()));
  }
  spdlog::info("expert cache over {} ({}): {} per slot, dram {} slots{}, policy {}, reader {} (queue depth {}, at most "
               "{} for prefetches)",
               path,
               io::DescribeDtypeMix(expert_file_->dtype_mix()), FormatByteSize(cache_->slot_bytes()),
               cache_->stats().dram.slots,
               cache_->has_device_tier() ? absl::StrCat(", device ", cache_->stats().device.slots, " slots")
                                               : std::string(),
               options.cache.policy, std::string(reader_->name()), reader_->queue_depth(),
               std::min(options.reader.speculative_depth, reader_->queue_depth()));
  return absl::OkStatus();
}

absl::Status Runtime::KeepShallowLayersResident(const model::Model& model, int layers, int min_slots) {
  const model::ModelConfig& config = model.config();
  const cache::CacheStats stats = cache_->stats();
  const bool device = stats.device.slots > 0;
  const int compute_slots = stats.compute().slots;
  int all_experts = 0;
  for (bool moe : config.layer_is_moe) all_experts += moe ? config.num_experts : 0;
  // Whole layers, first ones first, as long as a layer's experts per token
  // still fit beside them: a part of a layer would not stop its misses.
  const int room = compute_slots - min_slots;
  std::vector<cache::ExpertKey> shallow;
  int kept = 0, wanted = 0, wanted_experts = 0;
  for (int layer = 0; layer < config.num_layers && wanted < layers; ++layer) {
    if (!config.layer_is_moe[layer]) continue;
    ++wanted;
    wanted_experts += config.num_experts;
    if (kept + 1 < wanted || static_cast<int>(shallow.size()) + config.num_experts > room) continue;
    ++kept;
    for (int e = 0; e < config.num_experts; ++e) shallow.push_back({layer, e});
  }
  if (kept < wanted && compute_slots >= all_experts) {
    spdlog::info("[cache] shallow_layers = {}: pinning the first {} MoE layer(s); every expert is resident anyway",
                 layers, kept);
  } else if (kept < wanted) {
    // Past every expert resident, nothing is evicted and pinning is moot.
    const int needed = std::min(wanted_experts + min_slots, all_experts);
    spdlog::warn("[cache] shallow_layers = {} would keep {} experts resident, but the {} tier's {} slots leave room "
                 "for {} beside the {} a layer needs: keeping {} resident; {} slots ({} more bytes{}) keep all {}",
                 layers, wanted_experts, device ? "device" : "dram", compute_slots, std::max(0, room), min_slots,
                 kept == 0 ? std::string("none") : absl::StrCat("the first ", kept, " MoE layer(s)"), needed,
                 static_cast<uint64_t>(std::max(0, needed - compute_slots)) * cache_->slot_bytes(),
                 needed == all_experts ? ": every expert resident" : "", wanted);
  }
  if (kept == 0) return absl::OkStatus();
  RETURN_IF_ERROR(cache_->PinPermanently(shallow));
  spdlog::info("kept the {} experts of the first {} MoE layer(s) resident", shallow.size(), kept);
  shallow_layers_kept_ = kept;
  return absl::OkStatus();
}

Runtime::~Runtime() = default;

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Load(const EngineOptions& options) {
  if (options.threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  const auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Runtime> runtime(new Runtime());
  Runtime& engine = *runtime;
  // Offloaded experts come from the packed file through the cache: the
  // model keeps only its dense weights in memory (the experts would double
  // what the DRAM budget is there to bound).
  ASSIGN_OR_RETURN(engine.model_, model::Model::Load(options.model_dir, {.resident_experts = !options.offloading(),
                                                                        .map_weights = options.map_weights,
                                                                        .bf16_activations = options.bf16_activations}));
  const model::ModelConfig& config = engine.model_->config();
  if (options.bf16_activations && !kernels::Bf16ActivationsSupported()) {
    spdlog::warn("bf16_activations: this CPU has no AVX-512 BF16, so activations stay f32");
  }
  RETURN_IF_ERROR(engine::ValidateRosterOptions(options.roster, config, /*max_samples=*/0));
  if (options.experts_per_token < 0 || options.experts_per_token > config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("--k must be in 1 .. ", config.num_experts,
                                                   " (this model's experts), got ", options.experts_per_token));
  }
  const int threads = options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  engine.pool_ = std::make_unique<kernels::ThreadPool>(threads);
  ASSIGN_OR_RETURN(const bool use_gpu, UseGpu(options.device));
  std::unique_ptr<cache::DeviceCopier> copier;
#ifdef EXPERTD_HAVE_CUDA
  const cache::CudaDeviceTier* cuda_tier = nullptr;
  if (use_gpu && options.offloading() && options.cache.device_budget_bytes > 0) {
    ASSIGN_OR_RETURN(std::unique_ptr<cache::CudaDeviceTier> tier,
                     cache::CudaDeviceTier::Create(options.device.cuda_device));
    cuda_tier = tier.get();
    copier = std::move(tier);
  }
#endif
  if (options.offloading()) RETURN_IF_ERROR(engine.AttachExpertCache(options, std::move(copier)));
#ifdef EXPERTD_HAVE_CUDA
  if (use_gpu) {
    engine::CudaForwardOptions gpu_options;
    gpu_options.device = options.device.cuda_device;
    gpu_options.execution_placement = options.device.execution_placement;
    if (engine.expert_file_ != nullptr) {
      const io::BundleDtypes slot = engine.expert_file_->layout().dtypes;
      gpu_options.cached_expert_slot_dtypes = engine::CudaForwardOptions::ExpertDtypes{slot.gate, slot.up, slot.down};
      for (const io::BundleDtypesCount& mix : engine.expert_file_->dtype_mix()) {
        for (DType dtype : {mix.dtypes.gate, mix.dtypes.up, mix.dtypes.down}) {
          std::vector<DType>& seen = gpu_options.cached_expert_dtypes;
          if (std::find(seen.begin(), seen.end(), dtype) == seen.end()) seen.push_back(dtype);
        }
      }
    }
    gpu_options.experts = engine.cache_ == nullptr ? engine::CudaForwardOptions::Experts::kUploadAll
                          : cuda_tier != nullptr  ? engine::CudaForwardOptions::Experts::kCacheOnDevice
                                                  : engine::CudaForwardOptions::Experts::kCacheOnHost;
    auto gpu = engine::CudaForwardPass::Create(*engine.model_, engine.pool_.get(), engine.cached_experts_.get(),
                                               gpu_options);
    if (gpu.ok()) {
      spdlog::info("running on CUDA device {}: {} of weights in VRAM, routed experts {}", options.device.cuda_device,
                   FormatByteSize((*gpu)->weight_bytes()),
                   engine.cache_ == nullptr ? "uploaded with them"
                   : cuda_tier != nullptr  ? "through the VRAM tier"
                                           : "on the CPU (no device budget)");
      if (gpu_options.experts == engine::CudaForwardOptions::Experts::kCacheOnDevice && gpu_options.execution_placement) {
        const engine::ExecutionPlacement& placement = (*gpu)->placement();
        const uint64_t bytes = (*gpu)->expert_bytes();
        spdlog::info("execution placement: an expert takes {:.3f} ms to copy, {:.3f} ms on the CPU for 1 row, "
                     "{:.3f} ms for 8",
                     placement.CopySeconds(bytes) * 1e3, placement.CpuSeconds(bytes, 1) * 1e3,
                     placement.CpuSeconds(bytes, 8) * 1e3);
      }
      engine.cuda_forward_ = gpu->get();
      engine.forward_ = std::move(*gpu);
    } else if (options.device.gpu == GpuMode::kOn || cuda_tier != nullptr) {
      // With a VRAM tier the cache holds device memory: no CPU fallback.
      return gpu.status();
    } else {
      spdlog::warn("cannot run on the GPU ({}): running on the CPU", gpu.status().ToString());
    }
  }
#else
  (void)use_gpu;  // UseGpu has refused "on"
#endif
  if (engine.forward_ == nullptr) {
    engine.forward_ = std::make_unique<engine::ForwardPass>(*engine.model_, engine.pool_.get(), engine.cached_experts_.get());
  }
  engine.forward_->SetObserver(engine.prefetcher_.get());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  engine.bf16_activations_ = options.bf16_activations && kernels::Bf16ActivationsSupported() && !engine.on_gpu();
  spdlog::info("loaded {} ({}: {} layers, {} experts, top-{}, hidden {}) in {:.2f} s, on the {}, {} threads ({} kernels{})",
               options.model_dir, config.architecture_name, config.num_layers, config.num_experts,
               config.experts_per_token, config.hidden_size, seconds, engine.on_gpu() ? "GPU" : "CPU", threads,
               kernels::SimdTargetName(), engine.bf16_activations_ ? ", bf16 activations" : "");
  return runtime;
}

predictor::PredictionStats::Figures PrefetchStats::Total() const {
  predictor::PredictionStats::Figures total;
  for (const auto& f : by_distance) {
    total.predicted += f.predicted;
    total.actual += f.actual;
    total.correct += f.correct;
  }
  return total;
}

RuntimeStats Runtime::Stats() const {
  RuntimeStats stats;
  stats.on_gpu = on_gpu();
  stats.threads = threads();
  stats.simd_target = kernels::SimdTargetName();
  stats.bf16_activations = bf16_activations_;
  if (cache_ != nullptr) {
    stats.cache = cache_->stats();
    stats.cache_slot_bytes = cache_->slot_bytes();
    stats.cache_expert_dtypes = io::DescribeDtypeMix(expert_file_->dtype_mix());
  }
  return stats;
}

PassStats Runtime::PassFigures() const {
  PassStats stats;
  if (prefetcher_ != nullptr) {
    PrefetchStats& prefetch = stats.prefetch.emplace();
    prefetch.predictor = std::string(prefetcher_->predictor_name());
    prefetch.per_layer_budget = prefetcher_->per_layer_budget();
    prefetch.budget_fixed = prefetcher_->budget_is_fixed();
    prefetch.mean_layer_seconds = prefetcher_->mean_layer_seconds();
    prefetch.load_bytes_per_second = prefetcher_->mean_load_bytes_per_second();
    prefetch.reads = prefetcher_->scheduler_stats();
    prefetch.by_distance = prefetcher_->prediction_stats().by_distance();
    prefetch.next_token_layers = prefetcher_->next_token_layers();
    prefetch.next_token_from = std::string(prefetcher_->next_token_from());
    prefetch.next_token = prefetcher_->next_token_stats();
    prefetch.next_token_reads = prefetcher_->next_token_reads();
  }
#ifdef EXPERTD_HAVE_CUDA
  if (cuda_forward_ != nullptr) {
    const engine::CudaForwardStats gpu = cuda_forward_->stats();
    stats.gpu = GpuPassStats{gpu.experts_on_device, gpu.experts_loaded, gpu.experts_on_cpu};
  }
#endif
  return stats;
}

absl::Status Runtime::ResizeCache(uint64_t dram_budget_bytes, uint64_t device_budget_bytes) {
  if (cache_ == nullptr) {
    return absl::FailedPreconditionError("every expert is resident (no cache.dram_budget): nothing to resize");
  }
  return cache_->Resize(dram_budget_bytes, device_budget_bytes);
}

}  // namespace expertd::runtime

namespace expertd::runtime {

void Runtime::StartStepTrace() {
  recorder_ = std::make_unique<engine::StepTraceRecorder>(prefetcher_.get(), cache_.get());
  if (prefetcher_ != nullptr) prefetcher_->set_prediction_sink(recorder_.get());
  forward_->SetObserver(recorder_.get());
}

std::vector<cache::TraceStep> Runtime::TakeStepTrace() {
  if (recorder_ == nullptr) return {};
  forward_->SetObserver(prefetcher_.get());
  if (prefetcher_ != nullptr) prefetcher_->set_prediction_sink(nullptr);
  std::vector<cache::TraceStep> steps = recorder_->TakeSteps();
  recorder_.reset();
  return steps;
}

cache::TraceIoFigures Runtime::TraceIo() const {
  cache::TraceIoFigures io;
  if (cache_ == nullptr) return io;
  const cache::TierStats dram = cache_->stats().dram;
  io.expert_bytes = cache_->slot_bytes();
  io.read_bytes_per_second = dram.read_bytes_per_second();
  io.load_us = dram.mean_load_seconds() * 1e6;
  return io;
}

}  // namespace expertd::runtime
