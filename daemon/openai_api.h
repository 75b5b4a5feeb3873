#ifndef EXPERTD_DAEMON_OPENAI_API_H_
#define EXPERTD_DAEMON_OPENAI_API_H_

// The OpenAI schema in one place: parsing and validating the JSON of
// /v1/completions and /v1/chat/completions requests, and rendering their
// answers (whole, or as server-sent stream events). The HTTP transport
// (daemon/http_server) calls these and knows no field names.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "daemon/config.h"
#include "model/model.h"
#include "engine/request_engine.h"
#include "nlohmann/json.hpp"
#include "tokenizer/chat_template.h"

namespace expertd::daemon {

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
// to: the fields of a Request, and whether to stream the answer.
struct PromptInput {
  std::vector<int32_t> tokens;
  std::string text;  // completions: the prompt (for echo); chat: the rendered messages
};
struct GenerationRequest {
  // Chat: one. Completions: one per prompt of a list of prompts, in order.
  std::vector<PromptInput> prompts;
  // Choices per prompt (OpenAI's n): each an independent generation, choice
  // i of a prompt sampling with seed + i. Choice p * n + i is prompt p's i-th.
  int n = 1;
  engine::GenerateOptions options;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;  // generation ends after any of these (chat: end-of-turn tokens)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last event with usage before [DONE]
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
// fields (prompt: a string, a list of strings, token ids or a list of token
// id lists; max_tokens, temperature, top_p, seed, stop, stream,
// stream_options.include_usage, echo, logprobs, presence_penalty,
// frequency_penalty, logit_bias, user, n, model) and ours (top_k,
// experts_per_token, roster, ignore_eos). Unknown fields are ignored, as
// OpenAI's clients send extras; what expertd cannot do yet (response_format
// other than text, tools and functions) is refused naming the field; wrong
// types and values out of range are errors naming the field.
bool ParseCompletionRequest(const std::string& body, const model::Model& model, const std::string& model_name,
                            const InferenceConfig& limits, CompletionRequest* request, ApiError* error);

// The same for a chat request: messages ([{role, content}], roles system,
// user and assistant, content a string, an assistant's reasoning_content
// optional; errors name the field, as "messages[1].role") instead of prompt
// and echo, and the same sampling and expert fields. The messages are
// rendered with the model's chat template: add_generation_prompt (default
// true) and chat_template_kwargs (an object of template variables, as
// {"enable_thinking": false}) are passed to it, as vLLM and llama.cpp take
// them; the template's raise_exception is a 400 carrying its message. max_tokens (or OpenAI's newer max_completion_tokens)
// defaults to the rest of the model's context, capped at the daemon's
// inference.max_tokens, where completions default to 16 as OpenAI's do.
// logprobs (true/false) with top_logprobs (0 .. 20) as OpenAI's chat API.
bool ParseChatRequest(const std::string& body, const model::Model& model, const tokenizer::ChatTemplate& chat_template,
                      const std::string& model_name, const InferenceConfig& limits, ChatRequest* request,
                      ApiError* error);

// Rendering: how one endpoint shapes its answers. Completions carry
// choices[0].text, chat carries choices[0].message (whole) or
// choices[0].delta (streamed); everything else about running a request is
// the transport's.
struct AnswerShape {
  bool chat = false;
  std::string id;
  int64_t created = 0;
  std::string model;
  std::string echo;  // completions with echo: true: the prompt, put before the generated text
  int index = 0;     // the choice's index

  // The shape of choice `index` of the same answer, echoing `echo`.
  AnswerShape ForChoice(int choice_index, std::string choice_echo) const;
  // One answer of several choices: the first body with every body's choice.
  static nlohmann::json CombineChoices(std::vector<nlohmann::json> wholes);

  // The whole answer (without usage). logprobs: the request's, prompt first.
  nlohmann::json Whole(const std::string& text, const std::string& finish_reason,
                       absl::Span<const engine::TokenLogprob> prompt_logprobs, absl::Span<const engine::TokenLogprob> logprobs,
                       bool with_logprobs) const;
  // The logprobs field of a streamed event for `tokens`; completions'
  // text_offset counts on from *text_offset, which advances past them.
  nlohmann::json StreamLogprobs(absl::Span<const engine::TokenLogprob> tokens, size_t* text_offset) const;
  // Stream events: an opening one (chat: the role; completions: the echoed
  // prompt, when asked for), one per piece of text, and a closing one with
  // the finish reason.
  std::optional<nlohmann::json> Opening() const;
  nlohmann::json Piece(const std::string& text, nlohmann::json logprobs = nullptr) const;
  nlohmann::json Closing(const std::string& finish_reason, nlohmann::json logprobs = nullptr) const;
  // The stream's usage event (stream_options.include_usage): no choices.
  nlohmann::json UsageEvent(size_t prompt_tokens, size_t completion_tokens) const;
  // OpenAI's usage object.
  static nlohmann::json Usage(size_t prompt_tokens, size_t completion_tokens);

 private:
  nlohmann::json Envelope(const char* object, nlohmann::json choice) const;
  nlohmann::json Chunk(nlohmann::json delta, nlohmann::json finish_reason, nlohmann::json logprobs = nullptr) const;
};

// Our figures for one request, beside OpenAI's fields ("expertd"): timings
// and what the Roster of Experts cost (call with request.mu held).
nlohmann::json ExpertdFigures(const engine::Request& request);

}  // namespace expertd::daemon

#endif  // EXPERTD_DAEMON_OPENAI_API_H_
