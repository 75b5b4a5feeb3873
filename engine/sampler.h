#ifndef EXPERTD_ENGINE_SAMPLER_H_
#define EXPERTD_ENGINE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace expertd {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy (argmax)
  int top_k = 0;             // 0: no top-k cut
  float top_p = 1.0f;        // 1: no nucleus cut
  uint64_t seed = 0;
};

absl::Status ValidateSamplingOptions(const SamplingOptions& options);

// Picks the next token from logits. Temperature scales the logits, then
// top-k keeps the k most likely, then top-p keeps the smallest prefix of
// those whose probability reaches p; sampling is from what remains,
// renormalised. The same seed and logits give the same choices.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int32_t Sample(absl::Span<const float> logits);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;   // candidate ids, reused across calls
  std::vector<float> probs_;
};

// log softmax(logits)[id], computed stably.
double LogProbability(absl::Span<const float> logits, int32_t id);

}  // namespace expertd

#endif  // EXPERTD_ENGINE_SAMPLER_H_
