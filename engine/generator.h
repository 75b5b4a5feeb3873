#ifndef EXPERTD_ENGINE_GENERATOR_H_
#define EXPERTD_ENGINE_GENERATOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/batch_decoder.h"
#include "engine/forward.h"
#include "engine/roster.h"
#include "engine/sampler.h"

namespace expertd {

struct GenerateOptions {
  int max_new_tokens = 64;
  ForwardOptions forward;  // experts_per_token (dial-k)
  RosterOptions roster;    // Roster of Experts; samples = 1 is the plain model
  SamplingOptions sampling;
  bool stop_at_eos = true;
  // Checked after every token: when it turns true the generation ends with
  // FinishReason::kCancelled (a client went away, or a stop string matched).
  const std::atomic<bool>* cancel = nullptr;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids, without the prompt
  enum class FinishReason { kLength, kEos, kCancelled } finish_reason = FinishReason::kLength;
  int prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // every step after the first token
  SequenceCosts costs;        // rows computed, distinct experts per token

  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

// Prefills the prompt in one batch, then decodes one token per step until
// max_new_tokens or EOS. on_token (optional) sees each id as it is chosen,
// for streaming. The trace, when given, records the routing of every token.
absl::StatusOr<GenerateResult> Generate(const Model& model, Forward& forward, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<void(int32_t)>& on_token = nullptr,
                                        RoutingTrace* trace = nullptr);

}  // namespace expertd

#endif  // EXPERTD_ENGINE_GENERATOR_H_
