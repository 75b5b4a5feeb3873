#ifndef EXPERTD_DAEMON_COMPLETION_API_H_
#define EXPERTD_DAEMON_COMPLETION_API_H_

#include <string>
#include <vector>

#include "daemon/config.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "nlohmann/json.hpp"
#include "tokenizer/chat_template.h"

namespace expertd {

// An error as the HTTP API reports it: a status code and OpenAI's error
// object ({"error": {"message", "type", "param"}}).
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string param;  // the request field at fault; "" when none
  std::string type = "invalid_request_error";
  nlohmann::json ToJson() const;
};

// What a validated request asks the engine for, whichever endpoint it came
// to: the fields of CompletionJob, and whether to stream the answer.
struct GenerationRequest {
  std::vector<int32_t> prompt;
  std::string prompt_text;  // completions: the prompt (for echo); chat: the rendered messages
  GenerateOptions options;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;  // generation ends after any of these (chat: end-of-turn tokens)
  bool stream = false;
  // logprobs: alternatives to report per position (completions: the
  // integer `logprobs`; chat: `top_logprobs` when `logprobs` is true);
  // -1: none. prompt_logprobs: the prompt's tokens too (echo).
  int logprobs = -1;
  bool prompt_logprobs = false;
};

// A validated POST /v1/completions request.
struct CompletionRequest : GenerationRequest {
  bool echo = false;
};

// A validated POST /v1/chat/completions request: the messages rendered with
// the model's chat template and tokenized; stop holds the request's stop
// strings, then the template's end-of-turn markers.
using ChatRequest = GenerationRequest;

// Parses and validates the JSON body of a completion request: OpenAI's
// fields (prompt, max_tokens, temperature, top_p, seed, stop, stream, echo,
// model) and ours (top_k, experts_per_token, roster). Unknown fields are
// ignored, as OpenAI's clients send extras; wrong types and values out of
// range are errors naming the field.
bool ParseCompletionRequest(const std::string& body, const Model& model, const std::string& model_name,
                            const InferenceConfig& limits, CompletionRequest* request, ApiError* error);

// The same for a chat request: messages ([{role, content}], roles system,
// user and assistant, content a string; errors name the field, as
// "messages[1].role") instead of prompt and echo, and the same sampling and
// expert fields. max_tokens (or OpenAI's newer max_completion_tokens)
// defaults to the rest of the model's context, capped at the daemon's
// inference.max_tokens, where completions default to 16 as OpenAI's do.
// logprobs (true/false) with top_logprobs (0 .. 20) as OpenAI's chat API.
bool ParseChatRequest(const std::string& body, const Model& model, const ChatTemplate& chat_template,
                      const std::string& model_name, const InferenceConfig& limits, ChatRequest* request,
                      ApiError* error);

}  // namespace expertd

#endif  // EXPERTD_DAEMON_COMPLETION_API_H_
