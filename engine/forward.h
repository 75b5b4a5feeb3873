#ifndef EXPERTD_ENGINE_FORWARD_H_
#define EXPERTD_ENGINE_FORWARD_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/expert_source.h"
#include "engine/kv_cache.h"
#include "engine/layer_observer.h"
#include "engine/model.h"
#include "engine/routing.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd {

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

// Runs the transformer over new tokens of one sequence. Owns the scratch
// buffers of a step, sized on first use and reused, so decode allocates
// nothing per token. Not thread-safe: one ForwardPass per compute thread.
class ForwardPass {
 public:
  // pool may be null (single-threaded). experts may be null: every expert is
  // then read from the memory-mapped checkpoint. All must outlive the pass.
  ForwardPass(const Model& model, kernels::ThreadPool* pool, ExpertSource* experts = nullptr);
  // Tells `observer` (the prefetcher) about every MoE layer; null to stop.
  void SetObserver(LayerObserver* observer) { observer_ = observer; }

  // Processes `tokens` at positions kv.length() ... kv.length() + n - 1 as
  // one batch per layer (prefill when n > 1, decode when n == 1), appends
  // their keys and values to kv, and writes logits to *logits. With a trace,
  // records every token's routing. Invalid input (empty tokens, an id outside
  // the vocabulary, k out of range, context overflow) is an error and leaves
  // kv unchanged.
  absl::Status Run(absl::Span<const int32_t> tokens, KvCache& kv, const ForwardOptions& options,
                   std::vector<float>* logits, RoutingTrace* trace = nullptr);

  // One decode step for several rows at once (continuous batching: rows of
  // different sequences; Roster of Experts: samples of one sequence). Each
  // row sits at position kv->length(); every layer's weights, and each
  // expert chosen by any row, are read once for the whole batch. Writes
  // logits [rows][vocab]. A row's logits are bit-identical to what Run
  // gives for that token alone. Invalid rows are an error and change no kv.
  absl::Status Step(absl::Span<const StepRow> rows, std::vector<float>* logits);

 private:
  // Where each row of the current pass sits and how it routes.
  struct RowPlan {
    int position = 0;
    KvCache* kv = nullptr;
    bool appends_kv = true;
    int k = 0;
    int first_slot = 0;  // the row's routed slots: [first_slot, first_slot + k)
    const RowNoise* noise = nullptr;
    RoutingTrace* trace = nullptr;
  };

  absl::Status ValidateToken(int32_t token) const;
  absl::StatusOr<int> ResolveK(int experts_per_token) const;
  void EnsureScratch(int n, int slots);
  // Embeds the rows' tokens, runs every layer; rows_ describes them.
  absl::Status RunLayers(absl::Span<const int32_t> tokens);
  void Attention(int layer, int n);
  absl::Status MoeBlock(int layer, int n);
  void RouteRow(int layer, int row);
  void FeedForward(const FeedForwardWeights& ff, const float* x, int m, float* out);
  // Runs one routed expert on the tokens that chose it (slots grouped by
  // MoeBlock), writing each token's output row.
  void RunExpert(int expert, const FeedForwardWeights& weights);

  const Model& model_;
  const ModelConfig& config_;
  kernels::ThreadPool* pool_;
  ResidentExperts resident_experts_;
  ExpertSource* experts_;
  LayerObserver* observer_ = nullptr;
  std::vector<int32_t> pending_experts_;  // experts of a layer whose loads were not ready
  std::vector<std::pair<int32_t, ExpertHandle>> ready_experts_;  // pinned until computed
  std::vector<float> inv_freq_;  // RoPE: theta^(-2i/head_dim)
  std::vector<RowPlan> rows_;    // the current pass's rows
  bool contiguous_ = false;      // Run: one sequence's consecutive positions
  std::vector<int32_t> step_tokens_;

  // Scratch, [rows][width] row-major.
  int scratch_tokens_ = 0;
  int scratch_slots_ = 0;
  std::vector<float> residual_;   // [n][hidden]
  std::vector<float> normed_;     // [n][hidden]
  std::vector<float> q_, k_, v_;  // [n][q_size], [n][kv_size] x2
  std::vector<float> attention_;  // [n][q_size]
  std::vector<float> block_out_;  // [n][hidden]
  std::vector<float> rope_;       // [n][head_dim]: cos then sin halves
  std::vector<float> router_logits_;  // [n][num_experts]
  std::vector<float> router_probs_;   // [num_experts]
  std::vector<float> perturbation_;   // [num_experts]: RoE noise of one row
  std::vector<int32_t> chosen_experts_;  // [slots]: row t's are [first_slot, first_slot + k)
  std::vector<float> chosen_weights_;    // [slots]
  std::vector<int32_t> slot_row_;        // [slots]: the row a slot belongs to
  std::vector<int32_t> observed_;        // [n][max k]: chosen experts padded for the observer
  std::vector<int32_t> expert_begin_;    // [num_experts + 1], counting sort of routed slots
  std::vector<int32_t> slots_by_expert_;  // [slots]
  std::vector<float> gathered_;          // [n][hidden]
  std::vector<float> ffn_gate_, ffn_up_;  // [n][max ffn]
  std::vector<float> ffn_out_;           // [n][hidden]
  std::vector<float> expert_out_;        // [slots][hidden]
  std::vector<float> shared_gate_;       // [n]
};

}  // namespace expertd

#endif  // EXPERTD_ENGINE_FORWARD_H_
