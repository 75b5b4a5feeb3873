#ifndef EXPERTD_RUNTIME_RUNTIME_H_
#define EXPERTD_RUNTIME_RUNTIME_H_

// The runtime: a loaded model and everything that runs it (compute pool,
// forward pass on the CPU or a CUDA device, and when offloading the expert
// file, reader, tiered cache and prefetcher), built from typed
// EngineOptions. The request engine drives its forward pass; the daemon
// and the CLI read its figures and resize its cache through this object and
// nothing else.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cache/expert_cache.h"
#include "engine/expert_source.h"
#include "engine/forward_api.h"
#include "model/model.h"
#include "engine/prefetcher.h"
#include "engine/step_trace_recorder.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"
#include "kernels/cpu/thread_pool.h"
#include "runtime/engine_options.h"

namespace expertd::engine {
class CudaForwardPass;  // engine/cuda/cuda_forward.h, in builds with CUDA
}  // namespace expertd::engine

namespace expertd::runtime {

// Figures any thread may read at any time.
struct RuntimeStats {
  bool on_gpu = false;
  int threads = 0;                // compute threads on the CPU
  std::string simd_target;        // the CPU kernels' Highway target (kernels/cpu/simd_target.h)
  bool bf16_activations = false;  // asked for and in effect: the CPU computes bf16 weights with bf16 x
  // When offloading: the tiers' counters and the size of one slot.
  std::optional<cache::CacheStats> cache;
  uint64_t cache_slot_bytes = 0;
  // The packed experts' types and counts (io::DescribeDtypeMix), e.g.
  // "q4_k x 24, q4_k/q4_k/q6_k x 40" for a Q4_K_M model kept as it is.
  std::string cache_expert_dtypes;
};

// Where the GPU pass ran the routed experts.
struct GpuPassStats {
  uint64_t experts_on_device = 0;  // ready in VRAM (or uploaded)
  uint64_t experts_loaded = 0;     // waited for, then run on the GPU
  uint64_t experts_on_cpu = 0;     // run on the CPU from DRAM
};

// Cross-layer prediction and the prefetch reads it issued.
struct PrefetchStats {
  std::string predictor;
  // Prefetch reads per predicted layer per pass: [prefetch] budget_per_layer
  // when set (budget_fixed), else measured from the mean layer time and the
  // file's read throughput with loads overlapping (0 before a sample).
  int per_layer_budget = 0;
  bool budget_fixed = false;
  double mean_layer_seconds = 0;
  double load_bytes_per_second = 0;
  predictor::PrefetchScheduler::Stats reads;
  // [lookahead distance]; index 0 unused.
  std::vector<predictor::PredictionStats::Figures> by_distance;
  // Summed over distances.
  predictor::PredictionStats::Figures Total() const;
  // The next token's first MoE layers from this token's routing
  // ([prefetch] next_token_layers; 0 layers: off), scored when the next
  // token routes them, and the reads issued for them.
  int next_token_layers = 0;
  std::string next_token_from;  // what predicts them: previous-token or last-layer-gate
  predictor::PredictionStats::Figures next_token;
  uint64_t next_token_reads = 0;
};

// Figures the forward pass keeps as it runs: read them on the thread that
// runs it (the request engine's, e.g. in its after-iteration hook), or once
// it has stopped.
struct PassStats {
  std::optional<PrefetchStats> prefetch;  // with a prefetcher
  std::optional<GpuPassStats> gpu;        // on a GPU
};

// [prefetch] kind "auto" (the default) as the engine runs it: "cross-layer"
// with a device tier, where prefetches are DRAM -> device copies under
// compute; "none" without one. On the NVMe -> DRAM path prefetching has not
// beaten no prefetch reliably on any model or disk this project measured:
// it lost every run until demand reads went first, and since then it wins
// some runs and loses others on the OLMoE-1B-7B shape and still loses on
// the small models (bench/README.md, "Demand reads first"). Any other kind
// is kept.
std::string ResolvePrefetchKind(const std::string& kind, bool device_tier);

class Runtime {
 public:
  // Loads the model and, with a DRAM budget, the expert file (packing it
  // first when missing, with progress in the log), reader, cache and
  // prefetcher; runs on a CUDA device as options.device says.
  static absl::StatusOr<std::unique_ptr<Runtime>> Load(const EngineOptions& options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const model::Model& model() const { return *model_; }
  engine::Forward& forward() { return *forward_; }
  bool on_gpu() const { return cuda_forward_ != nullptr; }
  bool offloading() const { return cache_ != nullptr; }
  bool prefetching() const { return prefetcher_ != nullptr; }
  int threads() const { return pool_->num_threads(); }
  // MoE layers whose experts are pinned resident ([cache] shallow_layers, or
  // fewer when the budget holds fewer).
  int shallow_layers_kept() const { return shallow_layers_kept_; }

  RuntimeStats Stats() const;
  PassStats PassFigures() const;
  // New tier budgets, applied live (FailedPrecondition without offloading).
  absl::Status ResizeCache(uint64_t dram_budget_bytes, uint64_t device_budget_bytes);

  // Records every forward pass from now on (trace format v2,
  // cache/sim/TRACE_FORMAT.md: each row's routing, the predictions the
  // prefetcher acted on, the layers' compute times) until TakeStepTrace.
  // Call between passes, on the thread that runs them or while none runs.
  void StartStepTrace();
  // The steps recorded since StartStepTrace; stops recording.
  std::vector<cache::TraceStep> TakeStepTrace();
  // The trace header's I/O figures: an expert's bytes, the read throughput
  // with loads overlapping and the mean load latency measured so far (0
  // without offloading).
  cache::TraceIoFigures TraceIo() const;

  // The modules as built, read-only, for tests that check each option
  // reached the module it configures. Null where not built.
  const io::ExpertFile* expert_file() const { return expert_file_.get(); }
  const io::ExpertReader* reader() const { return reader_.get(); }
  const cache::ExpertCache* cache() const { return cache_.get(); }
  const engine::Prefetcher* prefetcher() const { return prefetcher_.get(); }

 private:
  Runtime() = default;
  absl::Status AttachExpertCache(const EngineOptions& options, std::unique_ptr<cache::DeviceCopier> copier);
  // Fate's shallow-favouring residency: pins every expert of the first
  // `layers` MoE layers in the compute tier, or of as many whole layers as
  // leave `min_slots` for the rest (saying so, and the budget that keeps
  // them all).
  absl::Status KeepShallowLayersResident(const model::Model& model, int layers, int min_slots);

  // Destroyed bottom-up: the forward pass before the prefetcher and the
  // cache, the cache before the reader, the reader before the file.
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<kernels::ThreadPool> pool_;
  std::unique_ptr<io::ExpertFile> expert_file_;
  std::unique_ptr<io::ExpertReader> reader_;
  std::unique_ptr<cache::ExpertCache> cache_;
  std::unique_ptr<engine::CachedExperts> cached_experts_;
  std::unique_ptr<engine::Prefetcher> prefetcher_;
  std::unique_ptr<engine::StepTraceRecorder> recorder_;  // while StartStepTrace records
  std::unique_ptr<engine::Forward> forward_;
  const engine::CudaForwardPass* cuda_forward_ = nullptr;  // forward_, when it is the CUDA pass
  int shallow_layers_kept_ = 0;
  bool bf16_activations_ = false;  // asked for, and this CPU has AVX-512 BF16
};

// Logs packing progress, one line per 10%.
void PrintPackProgress(const char* what, int done, int total);

}  // namespace expertd::runtime

#endif  // EXPERTD_RUNTIME_RUNTIME_H_
