#ifndef EXPERTD_ENGINE_FORWARD_H_
#define EXPERTD_ENGINE_FORWARD_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/expert_source.h"
#include "engine/kv_cache.h"
#include "engine/layer_observer.h"
#include "engine/model.h"
#include "engine/routing.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd {

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

 private:
  void EnsureScratch(int n, int k);
  void Attention(int layer, int n, int first_position, KvCache& kv);
  absl::Status MoeBlock(int layer, int n, int k, int first_position, RoutingTrace* trace);
  void FeedForward(const FeedForwardWeights& ff, const float* x, int m, float* out);
  // Runs one routed expert on the tokens that chose it (slots grouped by
  // MoeBlock), writing each token's output row.
  void RunExpert(int expert, const FeedForwardWeights& weights, int k);

  const Model& model_;
  const ModelConfig& config_;
  kernels::ThreadPool* pool_;
  ResidentExperts resident_experts_;
  ExpertSource* experts_;
  LayerObserver* observer_ = nullptr;
  std::vector<int32_t> pending_experts_;  // experts of a layer whose loads were not ready
  std::vector<std::pair<int32_t, ExpertHandle>> ready_experts_;  // pinned until computed
  std::vector<float> inv_freq_;  // RoPE: theta^(-2i/head_dim)

  // Scratch, [rows][width] row-major.
  int scratch_tokens_ = 0;
  int scratch_k_ = 0;
  std::vector<float> residual_;   // [n][hidden]
  std::vector<float> normed_;     // [n][hidden]
  std::vector<float> q_, k_, v_;  // [n][q_size], [n][kv_size] x2
  std::vector<float> attention_;  // [n][q_size]
  std::vector<float> block_out_;  // [n][hidden]
  std::vector<float> rope_;       // [n][head_dim]: cos then sin halves
  std::vector<float> router_logits_;  // [n][num_experts]
  std::vector<float> router_probs_;   // [num_experts]
  std::vector<int32_t> chosen_experts_;  // [n][k]
  std::vector<float> chosen_weights_;    // [n][k]
  std::vector<int32_t> expert_begin_;    // [num_experts + 1], counting sort of routed slots
  std::vector<int32_t> slots_by_expert_;  // [n * k] slot = token * k + j
  std::vector<float> gathered_;          // [n][hidden]
  std::vector<float> ffn_gate_, ffn_up_;  // [n][max ffn]
  std::vector<float> ffn_out_;           // [n][hidden]
  std::vector<float> expert_out_;        // [n * k][hidden]
  std::vector<float> shared_gate_;       // [n]
};

}  // namespace expertd

#endif  // EXPERTD_ENGINE_FORWARD_H_
