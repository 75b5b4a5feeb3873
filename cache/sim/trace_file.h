#ifndef EXPERTD_CACHE_SIM_TRACE_FILE_H_
#define EXPERTD_CACHE_SIM_TRACE_FILE_H_

// Expert routing traces on disk (format: cache/sim/TRACE_FORMAT.md). The engine
// records one TraceRecord per (token, MoE layer); bench-cache replays them.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache/eviction_policy.h"

namespace expertd::cache {

// The routing of one token at one MoE layer: experts in rank order (highest
// router probability first) and, optionally, their probabilities.
struct TraceRecord {
  int32_t token = 0;
  int32_t layer = 0;
  std::vector<int32_t> experts;
  std::vector<float> scores;  // Empty, or one per expert.
};

struct LoadedTrace {
  int num_layers = 0;
  int num_experts = 0;
  int k = 0;
  std::vector<TraceRecord> records;
  // One pass per token in file order; accesses in layer order, then rank.
  AccessTrace trace;
  // Whether the records carry router scores; if so access_scores has the
  // score of every access, shaped like trace.passes (SimulationOptions).
  bool has_scores = false;
  std::vector<std::vector<float>> access_scores;
};

// Text of a trace file. Every record must have the same number of experts
// (that is k), distinct and inside the model; tokens ascend, and layers
// ascend within a token; all records carry scores or none does. Errors name
// the record index.
absl::StatusOr<std::string> FormatTrace(int num_layers, int num_experts, const std::vector<TraceRecord>& records);
absl::Status WriteTraceFile(const std::string& path, int num_layers, int num_experts,
                            const std::vector<TraceRecord>& records);

// Parses trace text; errors read "<source>:<line>: what was wrong".
absl::StatusOr<LoadedTrace> ParseTrace(absl::string_view text, absl::string_view source);
absl::StatusOr<LoadedTrace> ReadTraceFile(const std::string& path);

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_SIM_TRACE_FILE_H_
