#ifndef EXPERTD_CACHE_SIM_SYNTHETIC_TRACE_H_
#define EXPERTD_CACHE_SIM_SYNTHETIC_TRACE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "cache/eviction_policy.h"

namespace expertd::cache {

// Knobs of a synthetic MoE routing trace, chosen to reproduce the three
// properties caching feeds on in real routers: a few popular experts per
// layer, tokens that keep their experts, and layers whose choices follow the
// previous layer's.
struct SyntheticTraceOptions {
  int num_layers = 16;
  int num_experts = 64;
  int k = 8;  // Distinct experts per (token, layer).
  int tokens = 2000;
  uint64_t seed = 1;
  // Popularity: expert of rank r (0 = most popular) is drawn with weight
  // 1 / (r + 1)^zipf_exponent; 0 is uniform. Each layer ranks its experts by
  // its own random permutation.
  double zipf_exponent = 0.0;
  // Per routing slot, the probability that the expert this layer chose in the
  // same slot for the previous token is chosen again.
  double reuse_probability = 0.0;
  // Otherwise, per slot, the probability that layer l+1 picks the image of
  // layer l's expert in that slot under a fixed random per-layer mapping.
  double cross_layer_probability = 0.0;
};

// Errors name the knob and its allowed range.
absl::Status ValidateSyntheticTraceOptions(const SyntheticTraceOptions& options);

// The same options give the same trace on every platform (a std::mt19937_64
// stream and no std:: distributions, whose output the standard leaves to the
// library). Options that fail validation give a trace with no passes.
AccessTrace MakeSyntheticTrace(const SyntheticTraceOptions& options);

}  // namespace expertd::cache

#endif  // EXPERTD_CACHE_SIM_SYNTHETIC_TRACE_H_
