#include "daemon/openai_api.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/sampler.h"

namespace expertd::daemon {
namespace {

using nlohmann::json;

// Alternatives per position a request may ask for (OpenAI allows 5 for
// completions and 20 for chat; both get 20 here).
constexpr int kMaxTopLogprobs = 20;

// Choices one request may ask for (prompts x n): each is a sequence of its
// own in the engine, so the bound keeps one request from filling the queue.
constexpr int kMaxChoices = 16;

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

// The numeric rules, once. JSON numbers arrive as int64, uint64 or double
// (nlohmann keeps the three apart); each field is checked at that full width
// and then in the type the engine uses, so nothing is truncated on the way
// (4294967301 read as an int is 5) and nothing passes the check only to
// round to a refused value (top_p 1e-300 is 0 as a float).

// v as an integer in [min, max], or nullopt: not an integer (a float, even
// 5.0, a string), or out of range at full width (uint64 beyond int64 too).
std::optional<int64_t> IntIn(const json& v, int64_t min, int64_t max) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    const auto i = static_cast<int64_t>(u);
    return i >= min && i <= max ? std::optional<int64_t>(i) : std::nullopt;
  }
  if (!v.is_number_integer()) return std::nullopt;
  const int64_t i = v.get<int64_t>();
  return i >= min && i <= max ? std::optional<int64_t>(i) : std::nullopt;
}

// The values a float field accepts: [min, max], or (min, max].
struct FloatRange {
  double min = 0.0;
  double max = 0.0;
  bool min_exclusive = false;
};
// Sampling temperatures and the resident bonus: beyond 100 every
// distribution is already flat to float precision.
constexpr FloatRange kTemperatureRange{0.0, 100.0};
constexpr FloatRange kTopPRange{0.0, 1.0, /*min_exclusive=*/true};

// v as a float in `range`, or nullopt. The range is checked on the double,
// which also keeps the conversion defined (a double beyond float's range has
// no float), then again on the float: a value may round onto an excluded
// bound.
std::optional<float> FloatIn(const json& v, const FloatRange& range) {
  if (!v.is_number()) return std::nullopt;
  auto in_range = [&](double x) { return (range.min_exclusive ? x > range.min : x >= range.min) && x <= range.max; };
  const double d = v.get<double>();
  if (!std::isfinite(d) || !in_range(d)) return std::nullopt;
  const float f = static_cast<float>(d);
  if (!std::isfinite(f) || !in_range(static_cast<double>(f))) return std::nullopt;
  return f;
}

// An integer field in [min, max] (which must fit `out`), or a 400 naming it:
// "roster.size must be an integer in 1 .. 32 (inference.max_roster), got 99".
template <typename Int>
bool ReadInt(const json& v, const std::string& name, int64_t min, int64_t max, Int* out, ApiError* error,
             absl::string_view note = "") {
  static_assert(std::is_integral_v<Int>);
  const std::optional<int64_t> i = IntIn(v, min, max);
  if (!i) {
    return Fail(error, name,
                absl::StrCat(name, " must be an integer in ", min, " .. ", max, note,
                             v.is_number() ? absl::StrCat(", got ", v.dump()) : std::string()));
  }
  *out = static_cast<Int>(*i);
  return true;
}

// A float field, or a 400 naming it: "top_p must be a number in (0, 1]".
bool ReadFloat(const json& v, const std::string& name, const FloatRange& range, float* out, ApiError* error) {
  const std::optional<float> f = FloatIn(v, range);
  if (!f) {
    return Fail(error, name,
                absl::StrCat(name, " must be a number in ", range.min_exclusive ? "(" : "[", range.min, ", ",
                             range.max, "]", v.is_number() ? absl::StrCat(", got ", v.dump()) : std::string()));
  }
  *out = *f;
  return true;
}

// A seed: any JSON integer, signed or unsigned 64-bit; a negative one is
// taken modulo 2^64, so every seed a client can write names a distinct run.
bool ReadSeed(const json& v, const std::string& name, uint64_t* out, ApiError* error) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
  } else if (v.is_number_integer()) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
  } else {
    return Fail(error, name, absl::StrCat(name, " must be an integer in ", std::numeric_limits<int64_t>::min(), " .. ",
                                          std::numeric_limits<uint64_t>::max()));
  }
  return true;
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
bool ParseGenerationFields(const json& root, Endpoint endpoint, const model::Model& model, const InferenceConfig& limits,
                           GenerationRequest* request, ApiError* error) {
  const model::ModelConfig& config = model.config();
  auto field = [&](const char* name) { return Field(root, name); };
  // The longest prompt bounds max_tokens.
  int64_t prompt_tokens = 0;
  for (const PromptInput& prompt : request->prompts) {
    prompt_tokens = std::max<int64_t>(prompt_tokens, static_cast<int64_t>(prompt.tokens.size()));
  }

  engine::GenerateOptions& options = request->options;
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
    if (!ReadInt(*v, max_tokens_name, 0, limits.max_tokens, &options.max_new_tokens, error,
                 " (inference.max_tokens)")) {
      return false;
    }
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
    if (!ReadFloat(*v, "temperature", kTemperatureRange, &options.sampling.temperature, error)) return false;
  }
  if (const json* v = field("top_p")) {
    if (!ReadFloat(*v, "top_p", kTopPRange, &options.sampling.top_p, error)) return false;
  }
  if (const json* v = field("top_k")) {
    // Any k at or beyond the vocabulary keeps every token, as 0 does.
    if (!ReadInt(*v, "top_k", 0, std::numeric_limits<int>::max(), &options.sampling.top_k, error)) return false;
  }
  if (const json* v = field("seed")) {
    if (!ReadSeed(*v, "seed", &options.sampling.seed, error)) return false;
  }
  constexpr FloatRange kPenaltyRange{-2.0, 2.0};
  if (const json* v = field("presence_penalty")) {
    if (!ReadFloat(*v, "presence_penalty", kPenaltyRange, &options.sampling.presence_penalty, error)) return false;
  }
  if (const json* v = field("frequency_penalty")) {
    if (!ReadFloat(*v, "frequency_penalty", kPenaltyRange, &options.sampling.frequency_penalty, error)) return false;
  }
  if (const json* v = field("logit_bias")) {
    // {"token id": bias}: OpenAI's keys are the ids written as strings.
    if (!v->is_object()) return Fail(error, "logit_bias", "logit_bias must be an object {\"token id\": bias}");
    constexpr FloatRange kBiasRange{-100.0, 100.0};
    for (const auto& [key, bias] : v->items()) {
      int64_t token = -1;
      if (!absl::SimpleAtoi(key, &token) || token < 0 || token >= config.vocab_size) {
        return Fail(error, "logit_bias",
                    absl::StrCat("logit_bias keys must be token ids in [0, ", config.vocab_size, "), got '", key, "'"));
      }
      float value = 0.0f;
      if (!ReadFloat(bias, absl::StrCat("logit_bias[\"", key, "\"]"), kBiasRange, &value, error)) return false;
      options.sampling.logit_bias.emplace_back(static_cast<int32_t>(token), value);
    }
  }
  // Accepted and not needed: OpenAI's end-user id, for abuse monitoring.
  if (const json* v = field("user"); v != nullptr && !v->is_string()) {
    return Fail(error, "user", "user must be a string");
  }
  // Not supported yet: refused by name rather than ignored, since a client
  // that asks for JSON output or tool calls would misread a plain answer.
  if (const json* v = field("response_format")) {
    const json* type = v->is_object() ? Field(*v, "type") : nullptr;
    if (type == nullptr || !type->is_string() || type->get<std::string>() != "text") {
      return Fail(error, "response_format",
                  "response_format other than {\"type\": \"text\"} is not supported (no structured output yet)");
    }
  }
  for (const char* name : {"tools", "functions", "tool_choice", "function_call"}) {
    const json* v = field(name);
    if (v != nullptr && !(v->is_array() && v->empty()) && !(v->is_string() && v->get<std::string>() == "none")) {
      return Fail(error, name, absl::StrCat(name, " is not supported (no tool calling yet); leave it out"));
    }
  }
  if (const json* v = field("stream_options")) {
    if (!v->is_object()) return Fail(error, "stream_options", "stream_options must be an object {\"include_usage\"}");
    if (const json* usage = Field(*v, "include_usage")) {
      if (!usage->is_boolean()) return Fail(error, "stream_options.include_usage", "stream_options.include_usage must be true or false");
      request->include_usage = usage->get<bool>();
    }
  }
  if (const json* v = field("n")) {
    const int prompts = static_cast<int>(request->prompts.size());
    const int max_n = std::max(1, kMaxChoices / std::max(1, prompts));
    if (!ReadInt(*v, "n", 1, max_n, &request->n, error,
                 absl::StrCat(" (at most ", kMaxChoices, " choices per request, over ", prompts, " prompt",
                              prompts == 1 ? "" : "s", ")"))) {
      return false;
    }
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
    if (!ReadInt(*v, "experts_per_token", 1, config.num_experts, &options.forward.experts_per_token, error,
                 " (this model's experts)")) {
      return false;
    }
  }
  if (const json* v = field("roster")) {
    if (!v->is_object()) return Fail(error, "roster", "roster must be an object {size, temperature, seed, ...}");
    engine::RosterOptions& roster = options.roster;
    auto member = [&](const char* name) { return Field(*v, name); };
    if (const json* size = member("size")) {
      if (!ReadInt(*size, "roster.size", 1, limits.max_roster, &roster.samples, error, " (inference.max_roster)")) {
        return false;
      }
    } else {
      return Fail(error, "roster.size", "roster.size is required");
    }
    if (const json* t = member("temperature")) {
      if (!ReadFloat(*t, "roster.temperature", kTemperatureRange, &roster.temperature, error)) return false;
    }
    if (const json* seed = member("seed")) {
      if (!ReadSeed(*seed, "roster.seed", &roster.seed, error)) return false;
    }
    if (const json* skip = member("skip_layers")) {
      if (!ReadInt(*skip, "roster.skip_layers", 0, config.num_layers, &roster.skip_layers, error,
                   " (this model's layers)")) {
        return false;
      }
    }
    if (const json* layers = member("layer_temperatures")) {
      // One per MoE layer (ValidateRosterOptions checks the count); more
      // than the model's layers is refused before any is stored.
      if (!layers->is_array() || layers->size() > static_cast<size_t>(config.num_layers)) {
        return Fail(error, "roster.layer_temperatures",
                    absl::StrCat("roster.layer_temperatures must be a list of numbers, one per MoE layer"));
      }
      for (const json& t : *layers) {
        float tau = 0.0f;
        if (!ReadFloat(t, "roster.layer_temperatures", kTemperatureRange, &tau, error)) return false;
        roster.layer_temperatures.push_back(tau);
      }
    }
    if (const json* bonus = member("resident_bonus")) {
      if (!ReadFloat(*bonus, "roster.resident_bonus", kTemperatureRange, &roster.resident_bonus, error)) {
        return false;
      }
    }
    if (absl::Status status = engine::ValidateRosterOptions(roster, config, limits.max_roster); !status.ok()) {
      std::string message(status.message());
      return Fail(error, message.substr(0, message.find(' ')), message);
    }
  }
  // The engine validates these again when the job runs, where a refusal is
  // a 500: what passed the checks above must pass there too.
  if (absl::Status status = engine::ValidateSamplingOptions(options.sampling, config.vocab_size); !status.ok()) {
    std::string message(status.message());
    return Fail(error, message.substr(0, message.find(' ')), message);
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

bool ParseCompletionRequest(const std::string& body, const model::Model& model, const std::string& model_name,
                            const InferenceConfig& limits, CompletionRequest* request, ApiError* error) {
  json root;
  if (!ParseBody(body, &root, error) || !CheckModel(root, model_name, error)) return false;
  const model::ModelConfig& config = model.config();

  // OpenAI's four forms: a string, a list of strings, a list of token ids,
  // a list of token id lists.
  const json* prompt = Field(root, "prompt");
  if (prompt == nullptr) return Fail(error, "prompt", "prompt is required");
  constexpr const char* kForms = "prompt must be a string, a list of strings, a list of token ids or a list of token id lists";
  auto add_text = [&](const std::string& text) {
    request->prompts.push_back({model.tokenizer().Encode(text), text});
  };
  auto add_ids = [&](const json& ids, const std::string& at) {
    PromptInput input;
    for (const json& id : ids) {
      const std::optional<int64_t> token = IntIn(id, 0, config.vocab_size - 1);
      if (!token) return Fail(error, "prompt", absl::StrCat(at, " must hold token ids in [0, ", config.vocab_size, ")"));
      input.tokens.push_back(static_cast<int32_t>(*token));
    }
    input.text = model.tokenizer().Decode(input.tokens, /*skip_special=*/false);
    request->prompts.push_back(std::move(input));
    return true;
  };
  if (prompt->is_string()) {
    add_text(prompt->get<std::string>());
  } else if (prompt->is_array() && (prompt->empty() || (!(*prompt)[0].is_string() && !(*prompt)[0].is_array()))) {
    if (!add_ids(*prompt, "prompt as a list")) return false;
  } else if (prompt->is_array()) {
    if (prompt->size() > static_cast<size_t>(kMaxChoices)) {
      return Fail(error, "prompt", absl::StrCat("prompt lists at most ", kMaxChoices, " prompts, got ", prompt->size()));
    }
    for (size_t i = 0; i < prompt->size(); ++i) {
      const json& item = (*prompt)[i];
      const bool strings = (*prompt)[0].is_string();
      if (strings && item.is_string()) {
        add_text(item.get<std::string>());
      } else if (!strings && item.is_array()) {
        if (!add_ids(item, absl::StrCat("prompt[", i, "]"))) return false;
      } else {
        return Fail(error, "prompt", kForms);
      }
    }
  } else {
    return Fail(error, "prompt", kForms);
  }
  for (size_t i = 0; i < request->prompts.size(); ++i) {
    if (request->prompts[i].tokens.empty()) {
      return Fail(error, "prompt", request->prompts.size() == 1 ? "prompt is empty" : absl::StrCat("prompt[", i, "] is empty"));
    }
  }

  if (!ParseGenerationFields(root, Endpoint::kCompletions, model, limits, request, error)) return false;
  if (const json* v = Field(root, "logprobs")) {
    if (!ReadInt(*v, "logprobs", 0, kMaxTopLogprobs, &request->logprobs, error, " or null")) return false;
  }
  if (const json* v = Field(root, "echo")) {
    if (!v->is_boolean()) return Fail(error, "echo", "echo must be true or false");
    request->echo = v->get<bool>();
  }
  request->prompt_logprobs = request->echo && request->logprobs >= 0;
  return true;
}

bool ParseChatRequest(const std::string& body, const model::Model& model, const tokenizer::ChatTemplate& chat_template,
                      const std::string& model_name, const InferenceConfig& limits, ChatRequest* request,
                      ApiError* error) {
  json root;
  if (!ParseBody(body, &root, error) || !CheckModel(root, model_name, error)) return false;

  const json* messages = Field(root, "messages");
  if (messages == nullptr) return Fail(error, "messages", "messages is required");
  if (!messages->is_array()) return Fail(error, "messages", "messages must be a list of {\"role\", \"content\"}");
  std::vector<tokenizer::ChatMessage> chat;
  chat.reserve(messages->size());
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Fail(error, at, absl::StrCat(at, " must be an object {\"role\", \"content\"}"));
    const json* role = Field(m, "role");
    if (role == nullptr) return Fail(error, at + ".role", absl::StrCat(at, ".role is required"));
    if (!role->is_string()) return Fail(error, at + ".role", absl::StrCat(at, ".role must be a string"));
    tokenizer::ChatMessage& message = chat.emplace_back();
    message.role = role->get<std::string>();
    // Anything but a string (absent, null, a list of parts) is left for
    // Render to report, so the engine's rule is the one rule.
    if (auto content = m.find("content"); content != m.end() && content->is_string()) {
      message.content = content->get<std::string>();
    }
    if (const json* reasoning = Field(m, "reasoning_content")) {
      if (!reasoning->is_string()) {
        return Fail(error, at + ".reasoning_content", absl::StrCat(at, ".reasoning_content must be a string"));
      }
      message.reasoning_content = reasoning->get<std::string>();
    }
  }
  tokenizer::ChatOptions chat_options;
  if (const json* v = Field(root, "add_generation_prompt")) {
    if (!v->is_boolean()) return Fail(error, "add_generation_prompt", "add_generation_prompt must be true or false");
    chat_options.add_generation_prompt = v->get<bool>();
  }
  if (const json* v = Field(root, "chat_template_kwargs")) {
    if (!v->is_object()) {
      return Fail(error, "chat_template_kwargs",
                  "chat_template_kwargs must be an object of template variables, as {\"enable_thinking\": false}");
    }
    chat_options.kwargs = *v;
  }
  absl::StatusOr<std::string> text = chat_template.Render(chat, chat_options);
  if (!text.ok()) {
    // The template's own raise_exception, a bad message and a kwarg the
    // template cannot take are the request's fault (400, naming the field);
    // a model template that does not parse is the server's (500).
    const std::string field = tokenizer::ChatErrorField(text.status());
    if (text.status().code() != absl::StatusCode::kInvalidArgument) {
      error->type = "server_error";
      return Fail(error, "", std::string(text.status().message()), 500);
    }
    return Fail(error, field.empty() ? "messages" : field, std::string(text.status().message()));
  }
  PromptInput& input = request->prompts.emplace_back();
  input.text = std::move(*text);
  input.tokens = model.tokenizer().Encode(input.text, chat_template.add_special_tokens());
  if (input.tokens.empty()) return Fail(error, "messages", "the messages make an empty prompt");

  if (!ParseGenerationFields(root, Endpoint::kChat, model, limits, request, error)) return false;
  if (const json* v = Field(root, "logprobs")) {
    if (!v->is_boolean()) return Fail(error, "logprobs", "logprobs must be true or false");
    if (v->get<bool>()) request->logprobs = 0;
  }
  if (const json* v = Field(root, "top_logprobs")) {
    int top_logprobs = 0;
    if (!ReadInt(*v, "top_logprobs", 0, kMaxTopLogprobs, &top_logprobs, error)) return false;
    if (request->logprobs < 0) return Fail(error, "top_logprobs", "top_logprobs needs logprobs: true");
    request->logprobs = top_logprobs;
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

namespace {

// OpenAI's logprobs object of a completion choice; offsets count from
// *text_offset, which advances past the tokens.
json CompletionLogprobs(absl::Span<const engine::TokenLogprob> tokens, size_t* text_offset) {
  json result = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                 {"text_offset", json::array()}};
  for (const engine::TokenLogprob& t : tokens) {
    result["tokens"].push_back(t.text);
    result["token_logprobs"].push_back(t.logprob ? json(*t.logprob) : json(nullptr));
    if (t.logprob) {
      json top = json::object();
      for (const auto& [text, logprob] : t.top) top[text] = logprob;
      result["top_logprobs"].push_back(std::move(top));
    } else {
      result["top_logprobs"].push_back(nullptr);
    }
    result["text_offset"].push_back(*text_offset);
    *text_offset += t.text.size();
  }
  return result;
}

// OpenAI's chat logprobs object: {"content": [{token, logprob, bytes,
// top_logprobs}]}.
json ChatLogprobs(absl::Span<const engine::TokenLogprob> tokens) {
  auto bytes = [](const std::string& text) {
    json list = json::array();
    for (unsigned char c : text) list.push_back(static_cast<int>(c));
    return list;
  };
  json content = json::array();
  for (const engine::TokenLogprob& t : tokens) {
    json top = json::array();
    for (const auto& [text, logprob] : t.top) top.push_back({{"token", text}, {"logprob", logprob}, {"bytes", bytes(text)}});
    content.push_back({{"token", t.text},
                       {"logprob", t.logprob.value_or(0.0f)},
                       {"bytes", bytes(t.text)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

}  // namespace

json ExpertdFigures(const engine::Request& job) {
  json figures = {{"queue_seconds", job.queue_seconds},
                  {"prefill_seconds", job.prefill_seconds},
                  {"decode_seconds", job.decode_seconds},
                  {"experts_per_token", job.options.forward.experts_per_token}};
  if (job.options.roster.samples > 1) {
    figures["roster"] = {{"samples", job.options.roster.samples},
                         {"distinct_experts_per_token", job.costs.distinct_experts_per_token()},
                         {"extra_compute", job.costs.extra_compute()}};
  }
  return figures;
}


AnswerShape AnswerShape::ForChoice(int choice_index, std::string choice_echo) const {
  AnswerShape shape = *this;
  shape.index = choice_index;
  shape.echo = std::move(choice_echo);
  return shape;
}

json AnswerShape::CombineChoices(std::vector<json> wholes) {
  if (wholes.empty()) return json::object();
  json combined = std::move(wholes[0]);
  for (size_t i = 1; i < wholes.size(); ++i) {
    for (json& choice : wholes[i]["choices"]) combined["choices"].push_back(std::move(choice));
  }
  return combined;
}

json AnswerShape::Envelope(const char* object, json choice) const {
  choice["index"] = index;
  if (!choice.contains("logprobs")) choice["logprobs"] = nullptr;
  return {{"id", id}, {"object", object}, {"created", created}, {"model", model}, {"choices", json::array({choice})}};
}

json AnswerShape::Whole(const std::string& text, const std::string& finish_reason,
                        absl::Span<const engine::TokenLogprob> prompt_logprobs, absl::Span<const engine::TokenLogprob> logprobs,
                        bool with_logprobs) const {
  if (chat) {
    json choice = {{"message", {{"role", "assistant"}, {"content", text}}}, {"finish_reason", finish_reason}};
    if (with_logprobs) choice["logprobs"] = ChatLogprobs(logprobs);
    return Envelope("chat.completion", std::move(choice));
  }
  json choice = {{"text", echo + text}, {"finish_reason", finish_reason}};
  if (with_logprobs) {
    size_t offset = 0;
    json all = CompletionLogprobs(prompt_logprobs, &offset);
    json generated = CompletionLogprobs(logprobs, &offset);
    for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
      for (json& item : generated[key]) all[key].push_back(std::move(item));
    }
    choice["logprobs"] = std::move(all);
  }
  return Envelope("text_completion", std::move(choice));
}

json AnswerShape::StreamLogprobs(absl::Span<const engine::TokenLogprob> tokens, size_t* text_offset) const {
  return chat ? ChatLogprobs(tokens) : CompletionLogprobs(tokens, text_offset);
}

std::optional<json> AnswerShape::Opening() const {
  if (chat) return Chunk({{"role", "assistant"}, {"content", ""}}, nullptr);
  if (!echo.empty()) return Piece(echo);
  return std::nullopt;
}

json AnswerShape::Piece(const std::string& text, json logprobs) const {
  return chat ? Chunk({{"content", text}}, nullptr, std::move(logprobs))
              : Envelope("text_completion", {{"text", text}, {"finish_reason", nullptr}, {"logprobs", std::move(logprobs)}});
}

json AnswerShape::Closing(const std::string& finish_reason, json logprobs) const {
  return chat ? Chunk(json::object(), finish_reason, std::move(logprobs))
              : Envelope("text_completion",
                         {{"text", ""}, {"finish_reason", finish_reason}, {"logprobs", std::move(logprobs)}});
}

json AnswerShape::Usage(size_t prompt_tokens, size_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json AnswerShape::UsageEvent(size_t prompt_tokens, size_t completion_tokens) const {
  return {{"id", id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", Usage(prompt_tokens, completion_tokens)}};
}

json AnswerShape::Chunk(json delta, json finish_reason, json logprobs) const {
  return Envelope("chat.completion.chunk", {{"delta", std::move(delta)},
                                            {"finish_reason", std::move(finish_reason)},
                                            {"logprobs", std::move(logprobs)}});
}

}  // namespace expertd::daemon
