#ifndef EXPERTD_ENGINE_CUDA_CUDA_FORWARD_H_
#define EXPERTD_ENGINE_CUDA_CUDA_FORWARD_H_

// The transformer on an NVIDIA GPU (built only with CUDA). Every dense
// weight (attention, norms, routers, shared experts, dense MLPs, LM head) is
// uploaded once, into one allocation; the KV caches live in VRAM; a step
// runs on one compute stream with the kernels of kernels/cuda. Routed
// experts come from the expert source:
//   - no source: every expert is uploaded with the dense weights;
//   - a cache whose compute tier is the VRAM tier (cache/cuda_device_tier.h):
//     experts ready in VRAM run on the GPU; a miss that DRAM holds runs on
//     the CPU when execution placement finds that cheaper for this batch
//     than the copy (engine/expert_plan.h); the rest are loaded (NVMe ->
//     DRAM -> VRAM) and run on the GPU;
//   - a cache without a device tier: every routed expert runs on the CPU,
//     the rest of the model on the GPU.
// Routing is decided on the host from the router logits (one small copy per
// MoE layer), and the layer cycle is the CPU pass's own MoE layer runner
// (engine/moe_layer_runner.h), so dial-k, Roster of Experts, traces, the
// cache's layer cycle and the prefetcher behave exactly as on the CPU. Logits match the CPU pass to
// float rounding, not bit for bit.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/execution_placement.h"
#include "engine/forward_api.h"
#include "model/model.h"
#include "engine/moe_dispatch.h"
#include "engine/moe_layer_runner.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cuda/runtime.h"

namespace expertd::engine {

struct CudaForwardOptions {
  int device = 0;
  // Where the routed experts are (see above).
  enum class Experts { kUploadAll, kCacheOnDevice, kCacheOnHost };
  Experts experts = Experts::kUploadAll;
  // Compute VRAM misses that DRAM holds on the CPU when cheaper (ours).
  bool execution_placement = true;
  PlacementOptions placement;
  // The cached (packed) experts' dtypes when they are not the checkpoint's,
  // from the packed file: gate, up and down of its slot (the largest
  // bundle: the sizes placement decides on), and every dtype any packed
  // matrix has (with kCacheOnDevice the pass refuses, at Create, those its
  // kernels cannot run).
  struct ExpertDtypes {
    DType gate = DType::kBF16;
    DType up = DType::kBF16;
    DType down = DType::kBF16;
  };
  std::optional<ExpertDtypes> cached_expert_slot_dtypes;
  std::vector<DType> cached_expert_dtypes;
};

// Where routed experts ran, over the pass's life.
struct CudaForwardStats {
  uint64_t experts_on_device = 0;  // ready in VRAM (or uploaded)
  uint64_t experts_loaded = 0;     // waited for, then run on the GPU
  uint64_t experts_on_cpu = 0;     // run on the CPU from DRAM
};

class CudaForwardPass : public Forward, private MoeLayerCompute {
 public:
  // experts: null with Experts::kUploadAll, else the cache's source (with
  // kCacheOnDevice, one with a device tier; its copy timings feed execution
  // placement). pool: for experts run on the CPU; may be null.
  // All must outlive the pass. Fails with kFailedPrecondition without a
  // device, kResourceExhausted when the weights do not fit.
  static absl::StatusOr<std::unique_ptr<CudaForwardPass>> Create(const model::Model& model, kernels::ThreadPool* pool,
                                                                 ExpertSource* experts,
                                                                 CudaForwardOptions options);
  ~CudaForwardPass() override;

  void SetObserver(LayerObserver* observer) override { runner_->SetObserver(observer); }
  absl::Status Run(absl::Span<const int32_t> tokens, KvCache& kv, const ForwardOptions& options,
                   std::vector<float>* logits, RoutingTrace* trace = nullptr) override;
  absl::Status Step(absl::Span<const StepRow> rows, std::vector<float>* logits) override;
  KvMemory& kv_memory() override;

  CudaForwardStats stats() const { return stats_; }
  // The execution placement model (its estimates, for the log).
  const ExecutionPlacement& placement() const { return placement_; }
  uint64_t expert_bytes() const { return expert_bytes_; }
  uint64_t weight_bytes() const;

  struct DeviceWeights;

 private:
  CudaForwardPass(const model::Model& model, kernels::ThreadPool* pool, ExpertSource* experts, CudaForwardOptions options);
  absl::Status Init();
  absl::Status CalibratePlacement();
  absl::Status EnsureScratch(int n, int slots, int logit_rows);
  // Embeds rows_'s tokens, runs every layer, writes logits of rows
  // [first_row, n).
  absl::Status RunPass(absl::Span<const int32_t> tokens, int first_row, std::vector<float>* logits);
  absl::Status SelfAttention(int layer, int n);
  // Multi-head latent attention (DeepSeek-V2), as the CPU pass computes it:
  // the KV cache row is the latent, each head's query absorbed into it.
  absl::Status LatentAttention(int layer, int n);
  // The attention blocks of the pass's n rows, each as attend(kv, first
  // row, rows, position): one causal block when the rows are one
  // sequence's consecutive positions, else row by row with the rows that
  // do not append to their kv first. attend writes the block's keys into
  // kv at position onwards, then attends; the first error stops it.
  absl::Status ForEachAttentionBlock(
      int n, const std::function<absl::Status(KvCache& kv, int first_row, int count, int position)>& attend);
  // A routed expert's biases on the device (gpt-oss), all null for none.
  struct DeviceExpertBiases {
    const float* gate = nullptr;
    const float* up = nullptr;
    const float* down = nullptr;
  };
  // down(act(gate x, up x)) for m rows of x: SiLU(gate) * up, or for a
  // routed expert of a model with the clamped SwiGLU, that activation with
  // its biases (the CPU pass's ExpertActivation).
  absl::Status FeedForward(const model::FeedForwardWeights& ff, const float* x, int m, float* out,
                           const DeviceExpertBiases* routed = nullptr);
  // The expert's slots: gather their rows, run it, scatter to the slots.
  absl::Status RunExpertOnDevice(const MoeDispatch& dispatch, int expert, const model::FeedForwardWeights& weights);
  absl::Status RunExpertOnCpu(const MoeDispatch& dispatch, int expert, const model::FeedForwardWeights& weights);
  absl::Status UploadDispatch(const MoeDispatch& dispatch, int n);
  void RecordCopyTimings();

  // MoeLayerCompute, over the pass's rows (rows_), on the compute stream.
  // Experts of the compute tier run on the GPU (on the CPU when the cache
  // has no device tier), host copies on the CPU.
  absl::Status Attention(int layer) override;
  absl::Status DenseFeedForward(int layer) override;
  absl::StatusOr<RouterOutput> Router(int layer) override;
  absl::Status Dispatched(int layer, const MoeDispatch& dispatch) override;
  // A VRAM slot's copy may still be in flight: the compute stream waits for
  // its event; the host waits only for a backend without one.
  absl::Status AwaitExpert(const cache::Readiness& ready) override;
  absl::Status RunExpert(const MoeDispatch& dispatch, int expert, const model::FeedForwardWeights& weights,
                         ExpertOrigin origin) override;
  absl::Status Sync() override { return stream_.Synchronize(); }
  absl::Status Combine(int layer, const MoeDispatch& dispatch) override;

  const model::Model& model_;
  const model::ModelConfig& config_;
  kernels::ThreadPool* pool_;
  ExpertSource* experts_;
  CudaForwardOptions options_;
  ExecutionPlacement placement_;
  model::FeedForwardWeights expert_like_;  // one expert's shapes and cached dtype
  uint64_t expert_bytes_ = 0;
  cache::DeviceCopyStats copies_seen_;
  CudaForwardStats stats_;

  kernels::cuda::Stream stream_;
  std::unique_ptr<DeviceWeights> weights_;
  std::unique_ptr<ExpertSource> uploaded_experts_;  // Experts::kUploadAll
  std::unique_ptr<KvMemory> kv_memory_;

  // RoPE's inverse frequencies and YaRN's attention factor, host-computed
  // as the CPU pass computes them (engine/moe_dispatch.h).
  std::vector<float> inv_freq_;
  float rope_attention_factor_ = 1.0f;
  float latent_query_scale_ = 1.0f;  // with MLA: the absorbed query's scale
  int moe_layer_ = 0;  // the MoE layer whose experts run (Dispatched)
  std::vector<RowPlan> rows_;
  bool contiguous_ = false;
  std::vector<int32_t> step_tokens_;
  // The layer cycle; made in Init, once the expert source is known.
  std::optional<MoeLayerRunner> runner_;

  // Device scratch, [rows][width]; sized on first use, grown when needed.
  int scratch_rows_ = 0;
  int scratch_slots_ = 0;
  kernels::cuda::DeviceBuffer residual_, normed_, q_, k_, v_, attention_, block_out_, rope_, router_logits_;
  // Multi-head latent attention: the q_a projection, the absorbed queries
  // and their attended latents [rows][heads][latent], one head's part in
  // and out.
  kernels::cuda::DeviceBuffer q_lora_, latent_q_, latent_out_, mla_in_, mla_out_;
  kernels::cuda::DeviceBuffer gathered_, ffn_gate_, ffn_up_, ffn_out_, expert_out_, shared_gate_, logits_;
  // The layer's dispatch on the device: slots grouped by expert, the row of
  // each, every slot's gate weight, each row's first slot.
  kernels::cuda::DeviceBuffer slots_by_expert_, rows_by_expert_, slot_weights_, row_slot_begin_;
  // Host mirrors.
  std::vector<float> host_rows_;          // [n][hidden]: embeddings in, gate inputs out
  std::vector<float> host_rope_;          // [n][head_dim]
  std::vector<float> host_router_logits_;  // [n][num_experts]
  std::vector<int32_t> host_rows_by_expert_, host_row_slot_begin_;
  std::vector<float> cpu_in_, cpu_gate_, cpu_up_, cpu_out_;  // CPU experts
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_CUDA_CUDA_FORWARD_H_
