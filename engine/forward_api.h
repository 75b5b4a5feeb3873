#ifndef EXPERTD_ENGINE_FORWARD_API_H_
#define EXPERTD_ENGINE_FORWARD_API_H_

// What a forward pass offers its callers (the batch decoder, Generate, the
// daemon), whatever runs it: the CPU pass (engine/forward.h) or the GPU pass
// (engine/cuda/cuda_forward.h).

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/kv_cache.h"
#include "engine/layer_observer.h"
#include "engine/routing.h"

namespace expertd::engine {

// Roster of Experts routing noise for one row of a step (see roster.h).
struct RowNoise {
  const float* layer_temperatures = nullptr;  // tau per model layer; [num_layers]
  uint64_t seed = 0;
  int sample = 0;
  float resident_bonus = 0.0f;
};

// One row of a batched decode step: the next token of some sequence.
struct StepRow {
  int32_t token = 0;
  KvCache* kv = nullptr;
  // Whether the row's key and value are appended to kv (at most one row per
  // kv in a step). A Roster of Experts sample other than the first attends
  // to kv's history plus its own key and value, and leaves kv alone: the
  // sequence's KV memory does not grow with the roster (the clean cache).
  bool appends_kv = true;
  int experts_per_token = 0;        // dial-k; 0 = the model's native top-k
  const RowNoise* noise = nullptr;  // null: deterministic routing
  RoutingTrace* trace = nullptr;    // optional: records this row's routing
};

struct ForwardOptions {
  // dial-k: routed experts per token; 0 means the model's native top-k.
  int experts_per_token = 0;
  // Logits for every new position ([n][vocab]) instead of only the last.
  bool all_logits = false;
};

// Runs the transformer. Not thread-safe: one per compute thread.
class Forward {
 public:
  virtual ~Forward() = default;

  // Tells `observer` (the prefetcher) about every MoE layer; null to stop.
  virtual void SetObserver(LayerObserver* observer) = 0;

  // Processes `tokens` at positions kv.length() ... kv.length() + n - 1 as
  // one batch per layer (prefill when n > 1, decode when n == 1), appends
  // their keys and values to kv, and writes logits to *logits. With a trace,
  // records every token's routing. Invalid input (empty tokens, an id outside
  // the vocabulary, k out of range, context overflow, a KV cache in another
  // pass's memory) is an error and leaves kv unchanged.
  virtual absl::Status Run(absl::Span<const int32_t> tokens, KvCache& kv, const ForwardOptions& options,
                           std::vector<float>* logits, RoutingTrace* trace = nullptr) = 0;

  // One decode step for several rows at once (continuous batching: rows of
  // different sequences; Roster of Experts: samples of one sequence). Each
  // row sits at position kv->length(); every layer's weights, and each
  // expert chosen by any row, are read once for the whole batch. Writes
  // logits [rows][vocab]. A row's logits are what Run gives for that token
  // alone. Invalid rows are an error and change no kv.
  virtual absl::Status Step(absl::Span<const StepRow> rows, std::vector<float>* logits) = 0;

  // Where this pass's KV caches must live: build them with it.
  virtual KvMemory& kv_memory() = 0;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_FORWARD_API_H_
