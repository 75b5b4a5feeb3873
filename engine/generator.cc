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

absl::StatusOr<GenerateResult> Generate(const Model& model, ForwardPass& forward, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const std::function<void(int32_t)>& on_token, RoutingTrace* trace) {
  RETURN_IF_ERROR(ValidateSamplingOptions(options.sampling));
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

  KvCache kv(model.config(), max_tokens);
  Sampler sampler(options.sampling);
  std::vector<float> logits;
  const std::optional<int32_t> eos = model.eos_id();

  auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(forward.Run(prompt, kv, options.forward, &logits, trace));
  result.prefill_seconds = SecondsSince(start);

  start = std::chrono::steady_clock::now();
  while (true) {
    const int32_t next = sampler.Sample(logits);
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
    RETURN_IF_ERROR(forward.Run(step, kv, options.forward, &logits, trace));
  }
  result.decode_seconds = SecondsSince(start);
  return result;
}

}  // namespace expertd
