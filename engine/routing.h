#ifndef EXPERTD_ENGINE_ROUTING_H_
#define EXPERTD_ENGINE_ROUTING_H_

#include <cstdint>
#include <vector>

namespace expertd::engine {

// Picks k experts for one token from its router logits, as OLMoE, Mixtral and
// Qwen-MoE all do: softmax over every expert, the k most probable (ties go to
// the lower index), and, when `normalize`, their probabilities rescaled to sum
// to one. k may differ from the model's native top-k (dial-k, MoE-PHDS); the
// same normalisation rule applies to any k.
// probs_scratch has num_experts floats; experts_out and weights_out have k,
// ordered by descending probability.
void RouteToken(const float* logits, int num_experts, int k, bool normalize, float* probs_scratch,
                int32_t* experts_out, float* weights_out);

// The pieces RouteToken is made of, for routing variants (Roster of
// Experts) that pick experts by another score but weigh them the same way.
// Softmax of the router logits.
void RouterProbabilities(const float* logits, int num_experts, float* probs);
// The k experts of largest score(e), descending, ties to the lower index.
// Selection by repeated maximum: k and num_experts are small (<= 128), and
// this needs no index buffer.
template <typename Score>
void SelectTopK(int num_experts, int k, const Score& score, int32_t* experts_out) {
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int e = 0; e < num_experts; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken |= experts_out[i] == e;
      if (taken) continue;
      if (best < 0 || score(e) > score(best)) best = e;
    }
    experts_out[j] = best;
  }
}
// weights_out[j] = probs[experts[j]], renormalised over the k when
// `normalize`.
void GateWeights(const float* probs, const int32_t* experts, int k, bool normalize, float* weights_out);

// DeepSeek-V2's group-limited greedy routing (HF DeepseekV2TopkRouter,
// topk_method "group_limited_greedy"): the experts form n_group groups of
// consecutive indices; a group scores its best probability; every
// probability outside the topk_group best groups (ties to the lower group)
// becomes 0, so a top-k over the result picks within those groups. In
// place; needs no scratch.
void LimitToGroups(float* probs, int num_experts, int n_group, int topk_group);

// The experts chosen for each (token, MoE layer) of a run: the routing trace
// that cache policies and predictors are studied on.
struct RoutingRecord {
  int32_t position = 0;  // absolute position in the sequence
  int32_t layer = 0;
  std::vector<int32_t> experts;  // descending router probability
  std::vector<float> weights;    // the gate weights applied
};

struct RoutingTrace {
  std::vector<RoutingRecord> records;
};

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_ROUTING_H_
