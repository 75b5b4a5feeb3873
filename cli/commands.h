#ifndef EXPERTD_CLI_COMMANDS_H_
#define EXPERTD_CLI_COMMANDS_H_

// The expertd program's one-shot commands: each loads a Runtime from its
// flags, runs the model (generation through the request engine, as the
// daemon does; scoring and traces through the forward pass) and prints.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "cache/sim/bench_cache.h"
#include "runtime/runtime.h"

namespace expertd::cli {

struct RunFlags {
  runtime::EngineOptions engine;
  std::string prompt;
  int max_new_tokens = 64;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  std::string trace_out;  // empty: no trace; else a v2 trace of the run's steps
};

struct EvalFlags {
  runtime::EngineOptions engine;
  std::string tokens;  // "ID ID ..."
  std::string logits_out;
};

struct PerplexityFlags {
  runtime::EngineOptions engine;
  std::string text_file;
  int context = 512;
};

struct PackFlags {
  std::string model_dir;
  std::string out;
  std::string dtype = "keep";
  // Mixed precision per expert (engine/precision_plan.h): a routing trace
  // (cache/sim/TRACE_FORMAT.md) ranks the experts, target_bytes bounds all
  // their bundles, precision_dtypes lists the dtypes highest first (empty:
  // engine::DefaultPrecisionDtypes). Exclusive with a dtype other than keep.
  std::string precision_plan;
  uint64_t target_bytes = 0;
  std::string precision_dtypes;
};

struct TraceFlags {
  runtime::EngineOptions engine;
  std::string text_file;
  std::string out;
  int context = 512;
};

struct BenchCacheFlags {
  std::string trace;
  std::string capacity_percents = "5,10,25,50";
  std::string policies = "lru,lru-hint,lfu,least-stale,layer-distance,belady";
  bool ignore_scores = false;  // keep the trace's router scores from the policies
  // The engine replay of a v2 trace; load-model 0s: the trace's figures.
  cache::ReplayOptions replay = cache::MeasuredReplayDefaults();
};

struct TokenizeFlags {
  std::string model_dir;
  std::string text;
};

// Each command prints its results to stdout and returns an error for the
// caller to print; none exits the process itself.
absl::Status Run(const RunFlags& flags);
absl::Status Eval(const EvalFlags& flags);
absl::Status Perplexity(const PerplexityFlags& flags);
absl::Status Tokenize(const TokenizeFlags& flags);
absl::Status Pack(const PackFlags& flags);
absl::Status Trace(const TraceFlags& flags);
absl::Status BenchCache(const BenchCacheFlags& flags);

}  // namespace expertd::cli

#endif  // EXPERTD_CLI_COMMANDS_H_
