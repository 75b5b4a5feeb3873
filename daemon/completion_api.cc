#include "daemon/completion_api.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace expertd {
namespace {

using nlohmann::json;

bool Fail(ApiError* error, std::string param, std::string message, int status = 400) {
  error->http_status = status;
  error->param = std::move(param);
  error->message = std::move(message);
  return false;
}

}  // namespace

json ApiError::ToJson() const {
  return {{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)}}}};
}

bool ParseCompletionRequest(const std::string& body, const Model& model, const std::string& model_name,
                            const InferenceConfig& limits, CompletionRequest* request, ApiError* error) {
  const json root = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return Fail(error, "", "the request body is not valid JSON");
  if (!root.is_object()) return Fail(error, "", "the request body must be a JSON object");
  const ModelConfig& config = model.config();

  auto field = [&](const char* name) -> const json* {
    auto it = root.find(name);
    return it == root.end() || it->is_null() ? nullptr : &*it;
  };

  if (const json* m = field("model")) {
    if (!m->is_string()) return Fail(error, "model", "model must be a string");
    if (m->get<std::string>() != model_name) {
      error->type = "not_found_error";
      return Fail(error, "model", absl::StrCat("model '", m->get<std::string>(), "' is not served here (this daemon serves '",
                                               model_name, "')"),
                  404);
    }
  }

  const json* prompt = field("prompt");
  if (prompt == nullptr) return Fail(error, "prompt", "prompt is required");
  if (prompt->is_string()) {
    request->prompt_text = prompt->get<std::string>();
    request->prompt = model.tokenizer().Encode(request->prompt_text);
  } else if (prompt->is_array()) {
    for (const json& id : *prompt) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= config.vocab_size) {
        return Fail(error, "prompt", absl::StrCat("prompt as a list must hold token ids in [0, ", config.vocab_size, ")"));
      }
      request->prompt.push_back(id.get<int32_t>());
    }
    request->prompt_text = model.tokenizer().Decode(request->prompt, /*skip_special=*/false);
  } else {
    return Fail(error, "prompt", "prompt must be a string or a list of token ids");
  }
  if (request->prompt.empty()) return Fail(error, "prompt", "prompt is empty");

  GenerateOptions& options = request->options;
  options.max_new_tokens = 16;  // OpenAI's default
  options.sampling.temperature = 1.0f;
  options.forward.experts_per_token = limits.default_experts_per_token;

  if (const json* v = field("max_tokens")) {
    if (!v->is_number_integer()) return Fail(error, "max_tokens", "max_tokens must be an integer");
    const int64_t n = v->get<int64_t>();
    if (n < 0 || n > limits.max_tokens) {
      return Fail(error, "max_tokens", absl::StrCat("max_tokens must be in 0 .. ", limits.max_tokens));
    }
    options.max_new_tokens = static_cast<int>(n);
  }
  if (static_cast<int64_t>(request->prompt.size()) + options.max_new_tokens > config.max_position_embeddings) {
    return Fail(error, "max_tokens",
                absl::StrCat("prompt (", request->prompt.size(), " tokens) plus max_tokens exceeds the model's context of ",
                             config.max_position_embeddings));
  }
  if (const json* v = field("temperature")) {
    if (!v->is_number() || !(v->get<double>() >= 0.0) || v->get<double>() > 100.0) {
      return Fail(error, "temperature", "temperature must be a number in [0, 100]");
    }
    options.sampling.temperature = v->get<float>();
  }
  if (const json* v = field("top_p")) {
    if (!v->is_number() || !(v->get<double>() > 0.0 && v->get<double>() <= 1.0)) {
      return Fail(error, "top_p", "top_p must be a number in (0, 1]");
    }
    options.sampling.top_p = v->get<float>();
  }
  if (const json* v = field("top_k")) {
    if (!v->is_number_integer() || v->get<int64_t>() < 0) return Fail(error, "top_k", "top_k must be an integer >= 0");
    options.sampling.top_k = v->get<int>();
  }
  if (const json* v = field("seed")) {
    if (!v->is_number_integer()) return Fail(error, "seed", "seed must be an integer");
    options.sampling.seed = static_cast<uint64_t>(v->get<int64_t>());
  }
  if (const json* v = field("n")) {
    if (!v->is_number_integer() || v->get<int64_t>() != 1) return Fail(error, "n", "only n = 1 is supported");
  }
  if (const json* v = field("logprobs")) {
    if (!v->is_number_integer()) return Fail(error, "logprobs", "logprobs must be an integer or null");
    return Fail(error, "logprobs", "logprobs are not served yet", 501);
  }
  if (const json* v = field("stop")) {
    if (v->is_string()) {
      request->stop.push_back(v->get<std::string>());
    } else if (v->is_array() && v->size() <= 4) {
      for (const json& s : *v) {
        if (!s.is_string()) return Fail(error, "stop", "stop must be a string or a list of up to 4 strings");
        request->stop.push_back(s.get<std::string>());
      }
    } else {
      return Fail(error, "stop", "stop must be a string or a list of up to 4 strings");
    }
    for (const std::string& s : request->stop) {
      if (s.empty()) return Fail(error, "stop", "stop strings must not be empty");
    }
  }
  if (const json* v = field("stream")) {
    if (!v->is_boolean()) return Fail(error, "stream", "stream must be true or false");
    request->stream = v->get<bool>();
  }
  if (const json* v = field("echo")) {
    if (!v->is_boolean()) return Fail(error, "echo", "echo must be true or false");
    request->echo = v->get<bool>();
  }
  if (const json* v = field("experts_per_token")) {
    if (!v->is_number_integer() || v->get<int64_t>() < 1 || v->get<int64_t>() > config.num_experts) {
      return Fail(error, "experts_per_token",
                  absl::StrCat("experts_per_token must be an integer in 1 .. ", config.num_experts));
    }
    options.forward.experts_per_token = v->get<int>();
  }
  if (const json* v = field("roster")) {
    if (!v->is_object()) return Fail(error, "roster", "roster must be an object {size, temperature, seed}");
    const json& size = (*v)["size"];
    if (!size.is_number_integer() || size.get<int64_t>() < 1 || size.get<int64_t>() > 64) {
      return Fail(error, "roster.size", "roster.size must be an integer in 1 .. 64");
    }
    if (v->contains("temperature") && (!(*v)["temperature"].is_number() || (*v)["temperature"].get<double>() < 0)) {
      return Fail(error, "roster.temperature", "roster.temperature must be a number >= 0");
    }
    if (v->contains("seed") && !(*v)["seed"].is_number_integer()) {
      return Fail(error, "roster.seed", "roster.seed must be an integer");
    }
    if (size.get<int64_t>() > 1) {
      return Fail(error, "roster.size", "Roster of Experts (roster.size > 1) is not served yet", 501);
    }
  }
  options.stop_at_eos = true;
  return true;
}

}  // namespace expertd
