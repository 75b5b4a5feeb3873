#ifndef EXPERTD_DAEMON_CLI_COMMANDS_H_
#define EXPERTD_DAEMON_CLI_COMMANDS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace expertd::cli {

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
  int shallow_layers = 0;  // Fate's shallow-favouring: first N MoE layers always resident
};

struct RunFlags {
  EngineFlags engine;
  std::string prompt;
  int max_new_tokens = 64;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
};

struct EvalFlags {
  EngineFlags engine;
  std::string tokens;  // "ID ID ..."
  std::string logits_out;
};

struct PerplexityFlags {
  EngineFlags engine;
  std::string text_file;
  int context = 512;
};

struct PackFlags {
  std::string model_dir;
  std::string out;
  std::string dtype = "keep";
};

struct TraceFlags {
  EngineFlags engine;
  std::string text_file;
  std::string out;
  int context = 512;
};

struct BenchCacheFlags {
  std::string trace;
  std::string capacity_percents = "5,10,25,50";
  std::string policies = "lru,lfu,least-stale,layer-distance,belady";
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

#endif  // EXPERTD_DAEMON_CLI_COMMANDS_H_
