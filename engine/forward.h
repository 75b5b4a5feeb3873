#ifndef EXPERTD_ENGINE_FORWARD_H_
#define EXPERTD_ENGINE_FORWARD_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/expert_source.h"
#include "engine/forward_api.h"
#include "engine/kv_cache.h"
#include "engine/layer_observer.h"
#include "model/model.h"
#include "engine/moe_dispatch.h"
#include "engine/moe_layer_runner.h"
#include "engine/routing.h"
#include "kernels/cpu/thread_pool.h"

namespace expertd::engine {

// The transformer on the CPU. Owns the scratch buffers of a step, sized on
// first use and reused, so decode allocates nothing per token. Row logits of
// Step are bit-identical to Run's for the same token. Not thread-safe: one
// ForwardPass per compute thread. The layer cycle (routing, the expert plan,
// the listeners) is the MoE layer runner's; this class supplies its steps.
class ForwardPass : public Forward, private MoeLayerCompute {
 public:
  // pool may be null (single-threaded). experts may be null: every expert is
  // then read from the model's own memory (a model loaded without resident
  // experts then fails each step that needs one, naming the fix). All must
  // outlive the pass.
  ForwardPass(const model::Model& model, kernels::ThreadPool* pool, ExpertSource* experts = nullptr);
  void SetObserver(LayerObserver* observer) override { runner_.SetObserver(observer); }
  absl::Status Run(absl::Span<const int32_t> tokens, KvCache& kv, const ForwardOptions& options,
                   std::vector<float>* logits, RoutingTrace* trace = nullptr) override;
  absl::Status Step(absl::Span<const StepRow> rows, std::vector<float>* logits) override;
  KvMemory& kv_memory() override { return HostKvMemory(); }

 private:
  void EnsureScratch(int n, int slots);
  // Embeds the rows' tokens, runs every layer; rows_ describes them.
  absl::Status RunLayers(absl::Span<const int32_t> tokens);
  // The final norm and LM head for rows [first_row, n) of residual_.
  void Logits(int first_row, int n, std::vector<float>* logits);
  void SelfAttention(int layer, int n);
  // Multi-head latent attention (ModelConfig::mla), in the latent space: each
  // head's nope query is multiplied into the latent through its slice of
  // kv_b (the "absorbed" form, DeepSeek-V2 §2.1.2), so the cache keeps one
  // latent row per position and attention reads only that, then the
  // attended latent goes through the head's value slice of kv_b.
  void LatentAttention(int layer, int n);
  void FeedForward(const model::FeedForwardWeights& ff, const float* x, int m, float* out);

  // MoeLayerCompute, over the pass's rows (rows_). Every expert is in host
  // memory, whatever its origin.
  absl::Status Attention(int layer) override;
  absl::Status DenseFeedForward(int layer) override;
  absl::StatusOr<RouterOutput> Router(int layer) override;
  absl::Status Dispatched(int layer, const MoeDispatch& dispatch) override;
  // RunExpert queues the expert (its input rows gathered); Sync runs every
  // queued expert as two parallel jobs, gate and up of all of them, then
  // down of all of them, instead of three jobs per expert: the threads
  // stream long runs of weights and meet twice per layer, not 3 k times.
  absl::Status RunExpert(const MoeDispatch& dispatch, int expert, const model::FeedForwardWeights& weights,
                         ExpertOrigin origin) override;
  absl::Status Sync() override;
  absl::Status Combine(int layer, const MoeDispatch& dispatch) override;
  // Rows the queue may hold: every scratch buffer below fits this many.
  int QueueCapacity() const { return scratch_queue_rows_; }

  const model::Model& model_;
  const model::ModelConfig& config_;
  kernels::ThreadPool* pool_;
  ResidentExperts resident_experts_;
  MoeLayerRunner runner_;        // after resident_experts_, which it may use
  std::vector<float> inv_freq_;  // RoPE: theta^(-2i/head_dim), YaRN-scaled where configured
  float rope_attention_factor_ = 1.0f;  // YaRN's scale on cos and sin
  // Multiplies the absorbed query so that the kernels' 1/sqrt(latent_size)
  // becomes the model's softmax scale.
  float latent_query_scale_ = 1.0f;
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
  std::vector<float> gathered_;          // [n][hidden]
  std::vector<float> ffn_gate_, ffn_up_;  // [n][max ffn]
  std::vector<float> ffn_out_;           // [n][hidden]
  std::vector<float> expert_out_;        // [slots][hidden]
  std::vector<float> shared_gate_;       // [n]
  // Multi-head latent attention.
  std::vector<float> q_lora_;         // [n][q_lora_rank]
  std::vector<float> latent_;         // [n][latent_size]: normalised latent | rotated RoPE key
  std::vector<float> latent_q_;       // [n][heads][latent_size]: absorbed query | RoPE query
  std::vector<float> latent_out_;     // [n][heads][latent_size]: attended latent (| unused)
  std::vector<float> head_latent_;    // [n][kv_lora_rank]: one head's attended latent
  std::vector<float> head_value_;     // [n][v_head_dim]
  std::vector<float> kv_b_row_;       // [heads][kv_lora_rank]: a row of kv_b in f32 per head

  // Routed experts waiting for Sync; their input rows are consecutive rows
  // of gathered_, starting at first_row.
  struct QueuedExpert {
    model::FeedForwardWeights weights;       // valid until Sync returns (MoeLayerCompute)
    model::ExpertExtras extras;              // gpt-oss's biases and activation
    absl::Span<const int32_t> slots;  // the dispatch's slots of this expert, one per row
    int first_row = 0;
    float* gate = nullptr;  // its rows of ffn_gate_ ([rows][ffn_width_]); SiLU(gate) * up after the first job
    float* up = nullptr;    // its rows of ffn_up_
    float* out = nullptr;   // its rows of ffn_out_ ([rows][hidden])
  };
  std::vector<QueuedExpert> queued_;
  int moe_layer_ = 0;  // the layer whose experts RunExpert is given (Dispatched)
  int queued_rows_ = 0;
  int scratch_queue_rows_ = 0;  // gathered_, ffn_gate_, ffn_up_, ffn_out_ rows
  size_t ffn_width_ = 0;        // row width of ffn_gate_ and ffn_up_: the widest feed-forward
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_FORWARD_H_
