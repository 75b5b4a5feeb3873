#ifndef EXPERTD_ENGINE_GENERATOR_H_
#define EXPERTD_ENGINE_GENERATOR_H_

// One generation, start to end, for callers that want token ids and timings
// rather than a stream of text (benchmarks, tests). It is a client of the
// request engine, not a loop of its own: the daemon, `expertd run` and this
// all decode through RequestEngine.

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/batch_decoder.h"
#include "engine/forward_api.h"
#include "model/model.h"
#include "engine/request_engine.h"

namespace expertd::engine {

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids, without the prompt
  enum class FinishReason { kLength, kEos } finish_reason = FinishReason::kLength;
  int prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // every step after the first token
  SequenceCosts costs;        // rows computed, distinct experts per token

  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

// Runs `prompt` as one request on a request engine of its own: the prompt
// in one prefill, then one token per step until max_new_tokens or EOS.
absl::StatusOr<GenerateResult> Generate(const model::Model& model, Forward& forward, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& options);

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_GENERATOR_H_
