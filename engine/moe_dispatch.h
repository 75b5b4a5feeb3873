#ifndef EXPERTD_ENGINE_MOE_DISPATCH_H_
#define EXPERTD_ENGINE_MOE_DISPATCH_H_

// The parts of a forward pass that do not depend on where it computes,
// shared by the CPU pass and the GPU pass so that both accept, refuse and
// route exactly alike: validating and planning a pass's rows, RoPE angles,
// and per MoE layer the routing of every row (Roster noise, dial-k, traces)
// and the grouping of the routed slots by expert.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/expert_source.h"
#include "engine/forward_api.h"
#include "engine/layer_observer.h"
#include "model/model_config.h"

namespace expertd::engine {

// Where one row of a pass sits and how it routes.
struct RowPlan {
  int position = 0;
  KvCache* kv = nullptr;
  bool appends_kv = true;
  int k = 0;
  int first_slot = 0;  // the row's routed slots: [first_slot, first_slot + k)
  const RowNoise* noise = nullptr;
  RoutingTrace* trace = nullptr;
};

// The rows of Forward::Run: `tokens` at kv.length() onwards, one sequence.
// Validates every token, k and the kv's memory, then reserves room in kv.
// Nothing changes on error. `pass_memory` is the memory the pass needs its
// KV caches in; null means any host memory (the CPU pass).
absl::Status PlanPromptRows(const model::ModelConfig& config, absl::Span<const int32_t> tokens, KvCache& kv,
                            const ForwardOptions& options, RoutingTrace* trace, const KvMemory* pass_memory,
                            std::vector<RowPlan>* plan);

// The rows of Forward::Step, and their tokens. Validates every row (token,
// k, kv present and in the right memory, below its context limit, at most
// one appending row per kv) before reserving room in any kv.
absl::Status PlanStepRows(const model::ModelConfig& config, absl::Span<const StepRow> rows, const KvMemory* pass_memory,
                          std::vector<RowPlan>* plan, std::vector<int32_t>* tokens);

// RoPE: theta^(-2i/head_dim) for i < head_dim/2, in f32 as HF computes them,
// so positions far into a sequence get the reference implementations' angles.
// With YaRN (config.yarn) the frequencies of HF's _compute_yarn_parameters:
// those whose wavelength exceeds the original context divided by the factor,
// a linear ramp between.
std::vector<float> RopeInverseFrequencies(const model::ModelConfig& config);
// What YaRN multiplies RoPE's cosines and sines by (HF's attention_factor):
// 1 without YaRN.
float RopeAttentionFactor(const model::ModelConfig& config);
// The attention's softmax scale for multi-head latent attention:
// qk_head_dim^-1/2, times mscale(factor, mscale_all_dim)^2 with YaRN (HF's
// yarn_apply_mscale).
float MlaSoftmaxScale(const model::ModelConfig& config);
// The cosines then the sines of `position`'s angles ([head_dim]).
void RopeCosSin(absl::Span<const float> inv_freq, int position, float* cos_sin);

// Per MoE layer: routes every row of the pass and groups the routed (row,
// rank) slots by expert, so each expert runs once for all rows that chose it.
class MoeDispatch {
 public:
  explicit MoeDispatch(const model::ModelConfig& config);

  // The rows of the pass about to run; must outlive the pass.
  void BeginPass(absl::Span<const RowPlan> rows);

  // Routes every row from its router logits ([rows][num_experts]): top-k
  // with the row's dial-k, perturbed by its Roster noise (plus the resident
  // bonus for experts `experts` has ready), gate weights by the
  // architecture's rule. Keeps each expert's highest router probability over
  // the rows (layer_scores), records traces, then groups slots by expert.
  void Route(int layer, const float* router_logits, ExpertSource& experts);
  // After Route: per expert, the highest probability any row's router gave
  // it (LayerObserver::OnRouterScores).
  absl::Span<const float> layer_scores() const { return layer_scores_; }

  // Tells the observers this layer's routing: chosen experts padded to
  // [rows][max k] (a row with a smaller k repeats its first expert, which
  // changes no set of experts), built once for all of them.
  void NotifyObservers(absl::Span<LayerObserver* const> observers, int layer, const float* gate_inputs, int hidden);

  int num_experts() const { return config_.num_experts; }
  int num_rows() const { return static_cast<int>(rows_.size()); }
  int num_slots() const { return num_slots_; }
  const RowPlan& row(int t) const { return rows_[t]; }
  // Every routed slot grouped by expert (ascending within each), after
  // Route: expert e's are SlotsOf(e), from index FirstIndexOf(e).
  absl::Span<const int32_t> slots_by_expert() const {
    return absl::MakeConstSpan(slots_by_expert_.data(), num_slots_);
  }
  int FirstIndexOf(int expert) const { return expert_begin_[expert]; }
  absl::Span<const int32_t> SlotsOf(int expert) const {
    return slots_by_expert().subspan(expert_begin_[expert], expert_begin_[expert + 1] - expert_begin_[expert]);
  }
  int RowOfSlot(int slot) const { return slot_row_[slot]; }
  // Per slot: the chosen expert and its gate weight.
  absl::Span<const int32_t> chosen_experts() const { return absl::MakeConstSpan(chosen_experts_.data(), num_slots_); }
  absl::Span<const float> chosen_weights() const { return absl::MakeConstSpan(chosen_weights_.data(), num_slots_); }

 private:
  void RouteRow(int layer, int t, const float* logits, ExpertSource& experts);
  void GroupByExpert();

  const model::ModelConfig& config_;
  absl::Span<const RowPlan> rows_;
  int num_slots_ = 0;
  std::vector<float> router_probs_;      // [num_experts]
  std::vector<float> layer_scores_;      // [num_experts]: the highest router_probs_ of any row
  std::vector<float> perturbation_;      // [num_experts]: RoE noise of one row
  std::vector<int32_t> chosen_experts_;  // [slots]: row t's are [first_slot, first_slot + k)
  std::vector<float> chosen_weights_;    // [slots]
  std::vector<int32_t> slot_row_;        // [slots]: the row a slot belongs to
  std::vector<int32_t> expert_begin_;    // [num_experts + 1], counting sort of routed slots
  std::vector<int32_t> slots_by_expert_;  // [slots]
  std::vector<int32_t> observed_;        // [rows][max k]
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_MOE_DISPATCH_H_
