#include "engine/routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace expertd {

void RouteToken(const float* logits, int num_experts, int k, bool normalize, float* probs_scratch,
                int32_t* experts_out, float* weights_out) {
  float max_logit = logits[0];
  for (int e = 1; e < num_experts; ++e) max_logit = std::max(max_logit, logits[e]);
  float sum = 0.0f;
  for (int e = 0; e < num_experts; ++e) {
    probs_scratch[e] = std::exp(logits[e] - max_logit);
    sum += probs_scratch[e];
  }
  for (int e = 0; e < num_experts; ++e) probs_scratch[e] /= sum;

  // Selection by repeated maximum: k and num_experts are small (<= 128), and
  // this needs no index buffer.
  for (int j = 0; j < k; ++j) {
    int best = -1;
    for (int e = 0; e < num_experts; ++e) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken |= experts_out[i] == e;
      if (taken) continue;
      if (best < 0 || probs_scratch[e] > probs_scratch[best]) best = e;
    }
    experts_out[j] = best;
    weights_out[j] = probs_scratch[best];
  }
  if (normalize) {
    float chosen = 0.0f;
    for (int j = 0; j < k; ++j) chosen += weights_out[j];
    for (int j = 0; j < k; ++j) weights_out[j] /= chosen;
  }
}

}  // namespace expertd
