#include "engine/routing.h"

#include "model/model_config.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace expertd::engine {

void RouterProbabilities(const float* logits, int num_experts, float* probs) {
  float max_logit = logits[0];
  for (int e = 1; e < num_experts; ++e) max_logit = std::max(max_logit, logits[e]);
  float sum = 0.0f;
  for (int e = 0; e < num_experts; ++e) {
    probs[e] = std::exp(logits[e] - max_logit);
    sum += probs[e];
  }
  for (int e = 0; e < num_experts; ++e) probs[e] /= sum;
}

void GateWeights(const float* probs, const int32_t* experts, int k, bool normalize, float* weights_out) {
  for (int j = 0; j < k; ++j) weights_out[j] = probs[experts[j]];
  if (normalize) {
    float chosen = 0.0f;
    for (int j = 0; j < k; ++j) chosen += weights_out[j];
    for (int j = 0; j < k; ++j) weights_out[j] /= chosen;
  }
}

void LimitToGroups(float* probs, int num_experts, int n_group, int topk_group) {
  const int per_group = num_experts / n_group;
  auto best = [&](int group) {
    return *std::max_element(probs + group * per_group, probs + (group + 1) * per_group);
  };
  // A group's rank is the number of groups ahead of it; n_group is small (8
  // in DeepSeek-V2), so counting beats sorting and needs no buffer. The
  // bests are taken before any group is zeroed.
  float bests[model::kMaxRoutingGroups];
  for (int g = 0; g < n_group; ++g) bests[g] = best(g);
  for (int g = 0; g < n_group; ++g) {
    int ahead = 0;
    for (int other = 0; other < n_group; ++other) {
      ahead += bests[other] > bests[g] || (bests[other] == bests[g] && other < g);
    }
    if (ahead >= topk_group) std::fill(probs + g * per_group, probs + (g + 1) * per_group, 0.0f);
  }
}

void RouteToken(const float* logits, int num_experts, int k, bool normalize, float* probs_scratch,
                int32_t* experts_out, float* weights_out) {
  RouterProbabilities(logits, num_experts, probs_scratch);
  SelectTopK(num_experts, k, [probs_scratch](int e) { return probs_scratch[e]; }, experts_out);
  GateWeights(probs_scratch, experts_out, k, normalize, weights_out);
}

}  // namespace expertd::engine
