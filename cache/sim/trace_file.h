#ifndef EXPERTD_CACHE_SIM_TRACE_FILE_H_
#define EXPERTD_CACHE_SIM_TRACE_FILE_H_

// Expert routing traces on disk (format: cache/sim/TRACE_FORMAT.md). v1: one
// TraceRecord per (token, MoE layer), as `expertd trace` records decode token
// by token. v2: the engine's steps (engine/step_trace_recorder.h), with the
// predictions its prefetcher submitted and its layer compute times, so the
// replay (engine_replay.h) does what the engine did. bench-cache replays both.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cache/eviction_policy.h"
#include "cache/step_trace.h"

namespace expertd::cache {

struct LoadedTrace {
  int version = 1;
  int num_layers = 0;
  int num_experts = 0;
  int k = 0;
  // v1 only (v2 keeps its records in steps).
  std::vector<TraceRecord> records;
  // v2: the engine's steps as recorded, and the run's I/O figures. v1: one
  // step per token, no predictions or compute times.
  std::vector<TraceStep> steps;
  TraceIoFigures io;
  // v1: one pass per token in file order; accesses in layer order, then
  // rank. v2: one pass per step; per layer, the distinct experts its rows
  // routed to, ascending: the engine's accesses (ExpertPlan asks for each
  // expert of a layer once per step, in expert order).
  AccessTrace trace;
  // Whether the records carry router scores; if so access_scores has the
  // score of every access, shaped like trace.passes (SimulationOptions); in
  // v2 an expert several rows chose has the highest of their scores.
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

// v2 text of recorded engine steps. Each step needs rows >= 1 and at least
// one record; records of a step have ascending layers, 1..num_experts
// distinct experts each, and rows below `rows`; predictions name layers of
// the model (for_layer > at_layer unless next_step), budget >= 1. `k` is the
// model's experts per token (the header's k). Errors name the step.
absl::StatusOr<std::string> FormatStepTrace(int num_layers, int num_experts, int k, const TraceIoFigures& io,
                                            const std::vector<TraceStep>& steps);
absl::Status WriteStepTraceFile(const std::string& path, int num_layers, int num_experts, int k,
                                const TraceIoFigures& io, const std::vector<TraceStep>& steps);

// Parses trace text (v1 or v2); errors read "<source>:<line>: what was wrong".
absl::StatusOr<LoadedTrace> ParseTrace(absl::string_view text, absl::string_view source);
absl::StatusOr<LoadedTrace> ReadTraceFile(const std::string& path);

// How many times the router chose each expert, [layer * num_experts +
// expert]: one count per record naming it (a token at a layer in v1, a row
// of a step at a layer in v2), so a prefill step of 100 rows counts each of
// its choices, not once per step as the step's accesses do. What a
// popularity-aware precision plan ranks experts by (engine/precision_plan.h).
std::vector<uint64_t> CountExpertChoices(const LoadedTrace& trace);

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_SIM_TRACE_FILE_H_
