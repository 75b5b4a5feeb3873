#include "engine/generator.h"

#include <memory>

#include "base/status_macros.h"

namespace expertd::engine {

double GenerateResult::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? prompt_tokens / prefill_seconds : 0.0;
}

double GenerateResult::decode_tokens_per_second() const {
  // The first generated token comes out of the prefill; the rest are decode steps.
  const double steps = tokens.size() > 1 ? static_cast<double>(tokens.size() - 1) : 0.0;
  return decode_seconds > 0 ? steps / decode_seconds : 0.0;
}

absl::StatusOr<GenerateResult> Generate(const model::Model& model, Forward& forward, absl::Span<const int32_t> prompt,
                                        const GenerateOptions& options) {
  RequestEngine engine(model, forward, SchedulerOptions::SingleRequest(prompt.size()));
  auto request = std::make_shared<Request>();
  request->prompt.assign(prompt.begin(), prompt.end());
  request->options = options;
  RETURN_IF_ERROR(RunRequest(engine, request));

  GenerateResult result;
  std::lock_guard lock(request->mu);
  result.tokens = std::move(request->tokens);
  result.finish_reason =
      request->finish_reason == "stop" ? GenerateResult::FinishReason::kEos : GenerateResult::FinishReason::kLength;
  result.prompt_tokens = static_cast<int>(prompt.size());
  result.prefill_seconds = request->prefill_seconds;
  result.decode_seconds = request->decode_seconds;
  result.costs = request->costs;
  return result;
}

}  // namespace expertd::engine
