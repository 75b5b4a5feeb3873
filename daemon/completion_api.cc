#include "daemon/completion_api.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace expertd {
namespace {

using nlohmann::json;

// Alternatives per position a request may ask for (OpenAI allows 5 for
// completions and 20 for chat; both get 20 here).
constexpr int kMaxTopLogprobs = 20;

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

namespace {

// The JSON object of a request body, or an error.
bool ParseBody(const std::string& body, json* root, ApiError* error) {
  *root = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (root->is_discarded()) return Fail(error, "", "the request body is not valid JSON");
  if (!root->is_object()) return Fail(error, "", "the request body must be a JSON object");
  return true;
}

// root[name], or null when absent or JSON null (OpenAI's clients send nulls
// for options left unset).
const json* Field(const json& root, const char* name) {
  auto it = root.find(name);
  return it == root.end() || it->is_null() ? nullptr : &*it;
}

bool CheckModel(const json& root, const std::string& model_name, ApiError* error) {
  if (const json* m = Field(root, "model")) {
    if (!m->is_string()) return Fail(error, "model", "model must be a string");
    if (m->get<std::string>() != model_name) {
      error->type = "not_found_error";
      return Fail(error, "model", absl::StrCat("model '", m->get<std::string>(), "' is not served here (this daemon serves '",
                                               model_name, "')"),
                  404);
    }
  }
  return true;
}

enum class Endpoint { kCompletions, kChat };

// The fields both endpoints share, once request->prompt is known: token
// budget, sampling, stop, stream, dial-k and roster.
bool ParseGenerationFields(const json& root, Endpoint endpoint, const Model& model, const InferenceConfig& limits,
                           GenerationRequest* request, ApiError* error) {
  const ModelConfig& config = model.config();
  auto field = [&](const char* name) { return Field(root, name); };
  const int64_t prompt_tokens = static_cast<int64_t>(request->prompt.size());

  GenerateOptions& options = request->options;
  // OpenAI's completions default to 16 tokens; a chat answer runs to its end
  // (EOS), so it may use the rest of the context up to the daemon's cap.
  options.max_new_tokens =
      endpoint == Endpoint::kCompletions
          ? 16
          : static_cast<int>(std::clamp<int64_t>(config.max_position_embeddings - prompt_tokens, 0, limits.max_tokens));
  options.sampling.temperature = 1.0f;
  options.forward.experts_per_token = limits.default_experts_per_token;

  const char* max_tokens_name = "max_tokens";
  if (endpoint == Endpoint::kChat && field("max_tokens") == nullptr && field("max_completion_tokens") != nullptr) {
    max_tokens_name = "max_completion_tokens";
  }
  if (const json* v = field(max_tokens_name)) {
    if (!v->is_number_integer()) return Fail(error, max_tokens_name, absl::StrCat(max_tokens_name, " must be an integer"));
    const int64_t n = v->get<int64_t>();
    if (n < 0 || n > limits.max_tokens) {
      return Fail(error, max_tokens_name, absl::StrCat(max_tokens_name, " must be in 0 .. ", limits.max_tokens));
    }
    options.max_new_tokens = static_cast<int>(n);
  }
  // A chat's prompt must leave room for at least one token of answer.
  if (prompt_tokens + options.max_new_tokens > config.max_position_embeddings ||
      (endpoint == Endpoint::kChat && prompt_tokens >= config.max_position_embeddings)) {
    return Fail(error, max_tokens_name,
                absl::StrCat(endpoint == Endpoint::kChat ? "messages (" : "prompt (", prompt_tokens,
                             " tokens) plus ", max_tokens_name, " exceeds the model's context of ",
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
  if (const json* v = field("experts_per_token")) {
    if (!v->is_number_integer() || v->get<int64_t>() < 1 || v->get<int64_t>() > config.num_experts) {
      return Fail(error, "experts_per_token",
                  absl::StrCat("experts_per_token must be an integer in 1 .. ", config.num_experts));
    }
    options.forward.experts_per_token = v->get<int>();
  }
  if (const json* v = field("roster")) {
    if (!v->is_object()) return Fail(error, "roster", "roster must be an object {size, temperature, seed, ...}");
    RosterOptions& roster = options.roster;
    auto member = [&](const char* name) { return Field(*v, name); };
    if (const json* size = member("size")) {
      if (!size->is_number_integer() || size->get<int64_t>() < 1 || size->get<int64_t>() > limits.max_roster) {
        return Fail(error, "roster.size",
                    absl::StrCat("roster.size must be an integer in 1 .. ", limits.max_roster,
                                 " (inference.max_roster)"));
      }
      roster.samples = size->get<int>();
    } else {
      return Fail(error, "roster.size", "roster.size is required");
    }
    if (const json* t = member("temperature")) {
      if (!t->is_number() || !(t->get<double>() >= 0.0) || t->get<double>() > 100.0) {
        return Fail(error, "roster.temperature", "roster.temperature must be a number in [0, 100]");
      }
      roster.temperature = t->get<float>();
    }
    if (const json* seed = member("seed")) {
      if (!seed->is_number_integer()) return Fail(error, "roster.seed", "roster.seed must be an integer");
      roster.seed = static_cast<uint64_t>(seed->get<int64_t>());
    }
    if (const json* skip = member("skip_layers")) {
      if (!skip->is_number_integer() || skip->get<int64_t>() < 0 || skip->get<int64_t>() > config.num_layers) {
        return Fail(error, "roster.skip_layers",
                    absl::StrCat("roster.skip_layers must be an integer in 0 .. ", config.num_layers));
      }
      roster.skip_layers = skip->get<int>();
    }
    if (const json* layers = member("layer_temperatures")) {
      if (!layers->is_array()) {
        return Fail(error, "roster.layer_temperatures", "roster.layer_temperatures must be a list of numbers");
      }
      for (const json& t : *layers) {
        if (!t.is_number() || !(t.get<double>() >= 0.0) || t.get<double>() > 100.0) {
          return Fail(error, "roster.layer_temperatures", "roster.layer_temperatures must hold numbers in [0, 100]");
        }
        roster.layer_temperatures.push_back(t.get<float>());
      }
    }
    if (const json* bonus = member("resident_bonus")) {
      if (!bonus->is_number() || !(bonus->get<double>() >= 0.0) || bonus->get<double>() > 100.0) {
        return Fail(error, "roster.resident_bonus", "roster.resident_bonus must be a number in [0, 100]");
      }
      roster.resident_bonus = bonus->get<float>();
    }
    if (absl::Status status = ValidateRosterOptions(roster, config, limits.max_roster); !status.ok()) {
      std::string message(status.message());
      return Fail(error, message.substr(0, message.find(' ')), message);
    }
  }
  options.stop_at_eos = true;
  if (const json* v = field("ignore_eos")) {
    // vLLM's extension: generate max_tokens whatever the model says.
    if (!v->is_boolean()) return Fail(error, "ignore_eos", "ignore_eos must be true or false");
    options.stop_at_eos = !v->get<bool>();
  }
  return true;
}

}  // namespace

bool ParseCompletionRequest(const std::string& body, const Model& model, const std::string& model_name,
                            const InferenceConfig& limits, CompletionRequest* request, ApiError* error) {
  json root;
  if (!ParseBody(body, &root, error) || !CheckModel(root, model_name, error)) return false;
  const ModelConfig& config = model.config();

  const json* prompt = Field(root, "prompt");
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

  if (!ParseGenerationFields(root, Endpoint::kCompletions, model, limits, request, error)) return false;
  if (const json* v = Field(root, "logprobs")) {
    if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > kMaxTopLogprobs) {
      return Fail(error, "logprobs", absl::StrCat("logprobs must be an integer in 0 .. ", kMaxTopLogprobs, " or null"));
    }
    request->logprobs = v->get<int>();
  }
  if (const json* v = Field(root, "echo")) {
    if (!v->is_boolean()) return Fail(error, "echo", "echo must be true or false");
    request->echo = v->get<bool>();
  }
  request->prompt_logprobs = request->echo && request->logprobs >= 0;
  return true;
}

bool ParseChatRequest(const std::string& body, const Model& model, const ChatTemplate& chat_template,
                      const std::string& model_name, const InferenceConfig& limits, ChatRequest* request,
                      ApiError* error) {
  json root;
  if (!ParseBody(body, &root, error) || !CheckModel(root, model_name, error)) return false;

  const json* messages = Field(root, "messages");
  if (messages == nullptr) return Fail(error, "messages", "messages is required");
  if (!messages->is_array()) return Fail(error, "messages", "messages must be a list of {\"role\", \"content\"}");
  std::vector<ChatMessage> chat;
  chat.reserve(messages->size());
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Fail(error, at, absl::StrCat(at, " must be an object {\"role\", \"content\"}"));
    const json* role = Field(m, "role");
    if (role == nullptr) return Fail(error, at + ".role", absl::StrCat(at, ".role is required"));
    if (!role->is_string()) return Fail(error, at + ".role", absl::StrCat(at, ".role must be a string"));
    ChatMessage& message = chat.emplace_back();
    message.role = role->get<std::string>();
    // Anything but a string (absent, null, a list of parts) is left for
    // Render to report, so the engine's rule is the one rule.
    if (auto content = m.find("content"); content != m.end() && content->is_string()) {
      message.content = content->get<std::string>();
    }
  }
  absl::StatusOr<std::string> text = chat_template.Render(chat);
  if (!text.ok()) {
    const std::string field = ChatErrorField(text.status());
    return Fail(error, field.empty() ? "messages" : field, std::string(text.status().message()));
  }
  request->prompt_text = std::move(*text);
  request->prompt = model.tokenizer().Encode(request->prompt_text, chat_template.add_special_tokens());
  if (request->prompt.empty()) return Fail(error, "messages", "the messages make an empty prompt");

  if (!ParseGenerationFields(root, Endpoint::kChat, model, limits, request, error)) return false;
  if (const json* v = Field(root, "logprobs")) {
    if (!v->is_boolean()) return Fail(error, "logprobs", "logprobs must be true or false");
    if (v->get<bool>()) request->logprobs = 0;
  }
  if (const json* v = Field(root, "top_logprobs")) {
    if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > kMaxTopLogprobs) {
      return Fail(error, "top_logprobs", absl::StrCat("top_logprobs must be an integer in 0 .. ", kMaxTopLogprobs));
    }
    if (request->logprobs < 0) return Fail(error, "top_logprobs", "top_logprobs needs logprobs: true");
    request->logprobs = v->get<int>();
  }
  for (const std::string& stop : chat_template.stop_strings()) {
    request->stop.push_back(stop);
    // An end-of-turn marker that is a special token (<|im_end|> on a base
    // Qwen whose EOS is <|endoftext|>) never reaches the text, where a stop
    // string could see it: stop at its id instead.
    const std::optional<int32_t> id = model.tokenizer().TokenId(stop);
    if (id && model.tokenizer().IsSpecial(*id)) request->stop_token_ids.push_back(*id);
  }
  return true;
}

}  // namespace expertd
