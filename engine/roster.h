#ifndef EXPERTD_ENGINE_ROSTER_H_
#define EXPERTD_ENGINE_ROSTER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "model/model_config.h"

namespace expertd::engine {

// Roster of Experts (RoE, arXiv 2509.17238): a training-free ensemble. Each
// decode step runs `samples` copies of the token through the model as one
// batch; copy s > 0 picks its experts in MoE layer i by
// TopK(logits + tau_i * Gumbel), copy 0 routes deterministically, and the
// next-token distributions of all copies are averaged. See
// ../shared/SPEC-roe.md.
struct RosterOptions {
  int samples = 1;  // n; 1 is the deterministic model
  // tau for the middle MoE layers; the first and last `skip_layers` MoE
  // layers get tau = 0 (the paper's L).
  float temperature = 0.0f;
  int skip_layers = 0;
  // When not empty: tau per MoE layer, in layer order (overrides the two
  // fields above).
  std::vector<float> layer_temperatures;
  uint64_t seed = 0;
  // Cache awareness (ours, not the paper's): added to the perturbed logits
  // of experts already in the compute tier, so that among near-equal
  // choices a sample takes one that needs no load. 0 disables it.
  float resident_bonus = 0.0f;

  bool enabled() const { return samples > 1; }
};

// Errors name the request field (roster.size, roster.temperature, ...).
// max_samples <= 0 means no limit.
absl::Status ValidateRosterOptions(const RosterOptions& options, const model::ModelConfig& config, int max_samples);

// tau for every layer of the model (0 for dense layers and skipped ones).
std::vector<float> RosterLayerTemperatures(const RosterOptions& options, const model::ModelConfig& config);

// A standard Gumbel draw, -log(-log(U)), for one (seed, position, layer,
// sample, expert). Counter-based (a hash of the five, not a stateful RNG),
// so a request replays exactly whatever else runs in its batch.
float GumbelNoise(uint64_t seed, int64_t position, int layer, int sample, int expert);

// RoE routing for one token: the k experts of largest
// logits[e] + perturbation[e], ordered by that score (ties to the lower
// index); their weights are the router's ordinary softmax probabilities,
// renormalised over the k when `normalize` (the architecture's rule).
// probs_scratch has num_experts floats.
void RoutePerturbed(const float* logits, const float* perturbation, int num_experts, int k, bool normalize,
                    float* probs_scratch, int32_t* experts_out, float* weights_out);

// Averages the next-token distributions of a roster's samples
// (softmax of each row of `logits`, [samples][vocab]) and writes the
// logarithm of the average to *out, so a sampler that takes logits acts on
// the averaged distribution.
void AverageSampleDistributions(absl::Span<const float> logits, int samples, int vocab, std::vector<float>* out);

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_ROSTER_H_
