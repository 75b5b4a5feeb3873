#ifndef EXPERTD_ENGINE_SAMPLER_H_
#define EXPERTD_ENGINE_SAMPLER_H_

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace expertd::engine {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy (argmax)
  int top_k = 0;             // 0: no top-k cut
  float top_p = 1.0f;        // 1: no nucleus cut
  uint64_t seed = 0;
  // OpenAI's adjustments of the logits before any of the above, over the
  // tokens this sampler has chosen so far (not the prompt): a token's logit
  // loses presence_penalty once it has been chosen and frequency_penalty
  // per time it has; logit_bias adds to a token's logit (-100 bans it,
  // 100 all but forces it).
  float presence_penalty = 0.0f;   // [-2, 2]
  float frequency_penalty = 0.0f;  // [-2, 2]
  std::vector<std::pair<int32_t, float>> logit_bias{};  // token id, bias in [-100, 100]
};

// vocab_size 0: token ids of logit_bias are not checked.
absl::Status ValidateSamplingOptions(const SamplingOptions& options, int vocab_size = 0);

// Picks the next token from logits. The penalties and biases adjust the
// logits first; then temperature scales them, top-k keeps the k most
// likely, then top-p keeps the smallest prefix of those whose probability
// reaches p; sampling is from what remains, renormalised. The same seed and
// logits give the same choices.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int32_t Sample(absl::Span<const float> logits);

 private:
  // logits with the penalties and biases applied (in adjusted_), or logits
  // itself when the options ask for none.
  absl::Span<const float> Adjusted(absl::Span<const float> logits);
  // The draw from already adjusted logits.
  int32_t Choose(absl::Span<const float> logits);

  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<int32_t> order_;   // candidate ids, reused across calls
  std::vector<float> probs_;
  std::vector<float> adjusted_;
  std::vector<std::pair<int32_t, int>> chosen_counts_;  // token, times chosen (when penalties apply)
};

// log softmax(logits)[id], computed stably.
double LogProbability(absl::Span<const float> logits, int32_t id);

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_SAMPLER_H_
