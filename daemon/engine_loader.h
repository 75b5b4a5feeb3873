#ifndef EXPERTD_DAEMON_ENGINE_LOADER_H_
#define EXPERTD_DAEMON_ENGINE_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache/expert_cache.h"
#include "engine/expert_source.h"
#include "engine/forward_api.h"
#include "engine/roster.h"
#include "engine/model.h"
#include "engine/prefetcher.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd {

// Flags shared by every command that runs the model.
struct EngineFlags {
  std::string model_dir;
  int experts_per_token = 0;  // dial-k; 0 = the model's
  int threads = 0;            // 0 = every core
  // Offloading: with a DRAM budget, routed experts come from the packed
  // expert file through the tiered cache instead of the checkpoint.
  std::string dram_budget;    // bytes with units; "" = everything resident
  std::string device_budget;  // "" or "0" = no device tier
  std::string policy = "least-stale";
  std::string expert_file;    // default: DIR/model.experts (packed on first use)
  bool direct_io = true;
  std::string prefetch = "cross-layer";  // none | cross-layer | previous-token (with offloading)
  int lookahead = 1;
  int max_prefetches_in_flight = 16;
  bool prefetch_to_device = true;  // with a device tier: prefetches go on into it
  int shallow_layers = 0;  // Fate's shallow-favouring: first N MoE layers always resident
  // GPU: "auto" runs on a CUDA device when this build has CUDA and one is
  // present, "on" insists, "off" stays on the CPU. With a GPU the dense
  // weights live in VRAM; experts too without offloading, else the device
  // budget is the VRAM tier (none: experts run on the CPU).
  std::string gpu = "auto";
  int cuda_device = 0;
  bool execution_placement = true;  // VRAM misses in DRAM may run on the CPU
  // Roster of Experts for run / eval / perplexity (not a loading option, but
  // every command that runs the model takes it).
  RosterOptions roster;
};

// A loaded model with the compute pool and forward pass that run it, and,
// when offloading, the expert file, reader and cache the experts come from.
// Members are destroyed bottom-up: the forward pass before the cache before
// the reader before the file.
struct LoadedEngine {
  std::unique_ptr<Model> model;
  std::unique_ptr<kernels::ThreadPool> pool;
  std::unique_ptr<io::ExpertFile> expert_file;
  std::unique_ptr<io::ExpertReader> reader;
  std::unique_ptr<cache::ExpertCache> cache;
  std::unique_ptr<CachedExperts> cached_experts;
  std::unique_ptr<Prefetcher> prefetcher;
  std::unique_ptr<Forward> forward;
  bool on_gpu = false;  // forward is the CUDA pass
};

// Loads the model and, with a DRAM budget, the expert file (packing it first
// when missing, with progress in the log), reader, cache and prefetcher.
absl::StatusOr<LoadedEngine> LoadEngine(const EngineFlags& flags);

// Logs packing progress, one line per 10%.
void PrintPackProgress(const char* what, int done, int total);

}  // namespace expertd

#endif  // EXPERTD_DAEMON_ENGINE_LOADER_H_
