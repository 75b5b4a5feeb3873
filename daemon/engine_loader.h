#ifndef EXPERTD_DAEMON_ENGINE_LOADER_H_
#define EXPERTD_DAEMON_ENGINE_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cache/expert_cache.h"
#include "daemon/engine_options.h"
#include "engine/expert_source.h"
#include "engine/forward_api.h"
#include "engine/model.h"
#include "engine/prefetcher.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd {

class CudaForwardPass;  // engine/cuda/cuda_forward.h, in builds with CUDA

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
  // forward, when it is the CUDA pass (for its statistics); else null.
  const CudaForwardPass* cuda_forward = nullptr;
  bool on_gpu = false;  // cuda_forward != nullptr
};

// Loads the model and, with a DRAM budget, the expert file (packing it first
// when missing, with progress in the log), reader, cache and prefetcher.
absl::StatusOr<LoadedEngine> LoadEngine(const EngineOptions& options);

// Logs packing progress, one line per 10%.
void PrintPackProgress(const char* what, int done, int total);

}  // namespace expertd

#endif  // EXPERTD_DAEMON_ENGINE_LOADER_H_
