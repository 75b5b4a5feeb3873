#include "engine/generator.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace expertd {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

double GenerateResult::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0;
}

double GenerateResult::decode_tokens_per_second() const {
  // The first generated token comes out of the prefill; the rest are decode steps.
  const double steps = tokens.size() > 1 ? static_cast<double>(tokens.size() - 1) : 0.0;
  return decode_seconds > 0 ? steps / decode_seconds : 0.0;
}

absl::StatusOr<GenerateResult> Generate(const Model& model, Forward& forward, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<void(int32_t)>& on_token, RoutingTrace* trace) {
  RETURN_IF_ERROR(ValidateSamplingOptions(options.sampling));
  RETURN_IF_ERROR(ValidateRosterOptions(options.roster, model.config(), /*max_samples=*/0));
  if (const int k = options.forward.experts_per_token; k < 0 || k > model.config().num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("experts_per_token must be in 1 .. ", model.config().num_experts,
                                                   " (the model's experts), got ", k));
  }
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens must be >= 0, got ", options.max_new_tokens));
  }
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty: give at least one token");
  const int max_tokens = model.config().max_position_embeddings;
  if (static_cast<int64_t>(prompt.size()) + options.max_new_tokens > max_tokens) {
    return absl::OutOfRangeError(absl::StrCat("prompt (", prompt.size(), " tokens) plus ", options.max_new_tokens,
                                              " new tokens exceeds the model's context of ", max_tokens));
  }
  GenerateResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  if (options.max_new_tokens == 0) return result;

  DecodingSequence sequence(model, max_tokens, options.forward.experts_per_token, options.roster,
                            &forward.kv_memory());
  sequence.set_trace(trace);
  BatchDecoder decoder(model, forward);
  Sampler sampler(options.sampling);
  std::vector<std::vector<float>> logits(1);
  const std::optional<int32_t> eos = model.eos_id();

  auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(decoder.Prefill(sequence, prompt, &logits[0]));
  result.prefill_seconds = SecondsSince(start);

  start = std::chrono::steady_clock::now();
  DecodingSequence* const batch[1] = {&sequence};
  while (true) {
    const int32_t next = sampler.Sample(logits[0]);
    result.tokens.push_back(next);
    if (on_token) on_token(next);
    if (options.stop_at_eos && eos && next == *eos) {
      result.finish_reason = GenerateResult::FinishReason::kEos;
      break;
    }
    if (options.cancel != nullptr && options.cancel->load(std::memory_order_relaxed)) {
      result.finish_reason = GenerateResult::FinishReason::kCancelled;
      break;
    }
    if (static_cast<int>(result.tokens.size()) >= options.max_new_tokens) break;
    const int32_t step[1] = {next};
    RETURN_IF_ERROR(decoder.Step(batch, step, &logits));
  }
  result.decode_seconds = SecondsSince(start);
  result.costs = sequence.costs();
  return result;
}

}  // namespace expertd
