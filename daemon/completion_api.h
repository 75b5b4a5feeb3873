#ifndef EXPERTD_DAEMON_COMPLETION_API_H_
#define EXPERTD_DAEMON_COMPLETION_API_H_

#include <string>
#include <vector>

#include "daemon/config.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "nlohmann/json.hpp"

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

// A validated POST /v1/completions request.
struct CompletionRequest {
  std::vector<int32_t> prompt;
  std::string prompt_text;  // for echo
  GenerateOptions options;
  std::vector<std::string> stop;
  bool stream = false;
  bool echo = false;
};

// Parses and validates the JSON body of a completion request: OpenAI's
// fields (prompt, max_tokens, temperature, top_p, seed, stop, stream, echo,
// model) and ours (top_k, experts_per_token, roster). Unknown fields are
// ignored, as OpenAI's clients send extras; wrong types and values out of
// range are errors naming the field.
bool ParseCompletionRequest(const std::string& body, const Model& model, const std::string& model_name,
                            const InferenceConfig& limits, CompletionRequest* request, ApiError* error);

}  // namespace expertd

#endif  // EXPERTD_DAEMON_COMPLETION_API_H_
