#ifndef EXPERTD_RUNTIME_ENGINE_OPTIONS_H_
#define EXPERTD_RUNTIME_ENGINE_OPTIONS_H_

// What Runtime::Load builds the runtime from: the modules' own option structs,
// composed. The daemon's TOML config (EngineOptionsFromConfig in
// daemon/config.h) and the command line (expertd_main.cc) fill this same
// struct, each parsing its text once (sizes into bytes, "auto"/"on"/"off"
// into GpuMode) where it reads it; nothing here is text to be parsed again.

#include <string>

#include "absl/strings/string_view.h"
#include "cache/expert_cache.h"
#include "engine/prefetcher.h"
#include "engine/roster.h"
#include "io/expert_reader.h"

namespace expertd::runtime {

// Where the model runs.
enum class GpuMode {
  kAuto,  // on a CUDA device when this build has CUDA and one is present
  kOn,    // on a CUDA device, or Runtime::Load fails saying why there is none
  kOff,   // on the CPU
};

// "auto", "on", "off": the spelling of the config key and the flag.
inline absl::string_view GpuModeName(GpuMode mode) {
  switch (mode) {
    case GpuMode::kOn: return "on";
    case GpuMode::kOff: return "off";
    case GpuMode::kAuto: break;
  }
  return "auto";
}

// The compute device. With a GPU the dense weights live in VRAM; routed
// experts too without offloading, else the cache's device tier is the VRAM
// tier (without one, routed experts run on the CPU).
struct DeviceOptions {
  GpuMode gpu = GpuMode::kAuto;
  int cuda_device = 0;
  // With a VRAM tier: a VRAM miss that DRAM holds may run on the CPU when
  // that is measured to be cheaper than the copy (CudaForwardOptions).
  bool execution_placement = true;
};

// Move-only: cache::ExpertCacheOptions owns a device copier.
struct EngineOptions {
  std::string model_dir;
  bool map_weights = false;   // model::WeightLoadOptions::map_weights
  bool bf16_activations = false;  // model::WeightLoadOptions::bf16_activations
  int threads = 0;            // compute threads; 0 = every core
  int experts_per_token = 0;  // dial-k; 0 = the model's

  // Offloading (offloading(): a DRAM budget): routed experts come from the
  // packed expert file through the tiered cache instead of the checkpoint.
  // The fields below until `device` apply only then.
  //
  // reader.path: the packed expert file; "" = MODEL_DIR/model.experts,
  // packed on first use. reader.queue_depth bounds reads in flight.
  io::ReaderOptions reader;
  // Budgets in bytes (device_budget_bytes 0: no device tier), policy,
  // prefetch_to_device. The loader sets the rest: min_slots (the model's or
  // the dial-k k), policy_options (from the file) and device_copier (the
  // CUDA tier on a GPU, else host memory); a copier set here is not used.
  cache::ExpertCacheOptions cache;
  int shallow_layers = 0;  // Fate's shallow-favouring: every expert of the first N MoE layers stays resident
  // predictor.kind "none" and next_token_layers 0: no prefetcher. predictor.lookahead is lowered to
  // what the model's layers allow.
  engine::PrefetcherOptions prefetch;

  DeviceOptions device;

  // Roster of Experts for run / eval / perplexity: not a loading option,
  // but every command that runs the model takes it and Runtime::Load checks it
  // against the model before anything runs. The daemon takes rosters per
  // request and leaves this at its default (none).
  engine::RosterOptions roster;

  bool offloading() const { return cache.dram_budget_bytes > 0; }
};

}  // namespace expertd::runtime

#endif  // EXPERTD_RUNTIME_ENGINE_OPTIONS_H_
