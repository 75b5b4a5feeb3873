#include "tokenizer/chat_template.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "jinja/json_value.h"
#include "jinja/template.h"

namespace expertd::tokenizer {
namespace {

// Where a Render error puts the request field it is about.
constexpr char kFieldPayload[] = "type.expertd/chat-field";
// Marks a Render error that is the template's raise_exception.
constexpr char kRaisedPayload[] = "type.expertd/chat-template-raised";

absl::Status FieldError(const std::string& field, const std::string& message) {
  absl::Status status = absl::InvalidArgumentError(absl::StrCat(field, " ", message));
  status.SetPayload(kFieldPayload, absl::Cord(field));
  return status;
}

// Markers that end an assistant's turn (or open the next one) in the
// families' templates, each kept as a stop string when the template writes
// it. unless: a text in templates that use the marker inside a turn
// (gpt-oss ends its analysis channel with <|end|> and goes on).
struct TurnMarker {
  std::string_view marker;
  std::string_view unless;
};
constexpr TurnMarker kTurnMarkers[] = {
    {"<|im_end|>", ""},  // ChatML: Qwen, SmolLM
    {"<|eot_id|>", ""},  // Llama 3
    {"<end_of_turn>", ""},  // Gemma
    {"<|end|>", "<|channel|>"},  // Phi-3
    {"[INST]", ""},  // Mistral: the next user turn
    {"<|user|>", ""},  // Tulu, OLMoE-Instruct: the next user turn
    {"<｜User｜>", ""},  // DeepSeek: the next user turn
};

// Template variables are converted and walked recursively; a kwarg nested
// deeper than any template reads is refused before that.
constexpr int kMaxKwargDepth = 32;

bool NestedDeeperThan(const nlohmann::json& json, int levels) {
  if (!json.is_structured()) return false;
  if (levels == 0) return true;
  for (const auto& item : json) {
    if (NestedDeeperThan(item, levels - 1)) return true;
  }
  return false;
}

}  // namespace

ChatTemplate ChatTemplate::ForModel(const Tokenizer& tokenizer) {
  auto text_of = [&](std::optional<int32_t> id) {
    return id.has_value() ? std::string(tokenizer.TokenText(*id)) : std::string();
  };
  return FromJinja(tokenizer.chat_template(), text_of(tokenizer.bos_id()), text_of(tokenizer.eos_id()));
}

ChatTemplate ChatTemplate::FromJinja(std::string_view jinja, std::string bos_token, std::string eos_token) {
  ChatTemplate t;
  t.bos_ = std::move(bos_token);
  t.eos_ = std::move(eos_token);
  if (jinja.empty()) {
    t.stop_strings_ = {"\nUser:", "\nSystem:"};
    return t;
  }
  absl::StatusOr<jinja::Template> parsed = jinja::Template::Parse(jinja);
  if (!parsed.ok()) {
    t.parse_status_ = absl::FailedPreconditionError(
        absl::StrCat("the model's chat_template does not parse (", parsed.status().message(),
                     "); fix it in tokenizer_config.json or chat_template.jinja, or remove it to chat in the plain "
                     "transcript"));
    return t;
  }
  t.template_ = std::make_shared<const jinja::Template>(*std::move(parsed));
  for (const TurnMarker& m : kTurnMarkers) {
    if (jinja.find(m.marker) != std::string_view::npos && (m.unless.empty() || jinja.find(m.unless) == std::string_view::npos)) {
      t.stop_strings_.emplace_back(m.marker);
    }
  }
  return t;
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages, const ChatOptions& options) const {
  if (!parse_status_.ok()) return parse_status_;
  if (messages.empty()) return FieldError("messages", "must hold at least one message");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return FieldError(absl::StrCat(field, ".role"),
                        absl::StrCat("must be \"system\", \"user\" or \"assistant\", not \"", role, "\""));
    }
    if (!messages[i].content.has_value()) return FieldError(absl::StrCat(field, ".content"), "must be a string");
  }

  if (template_ == nullptr) {
    std::string out;
    for (const ChatMessage& m : messages) {
      const char* label = m.role == "system" ? "System" : (m.role == "user" ? "User" : "Assistant");
      absl::StrAppend(&out, label, ": ", *m.content, "\n");
    }
    if (options.add_generation_prompt) {
      absl::StrAppend(&out, "Assistant:");
    } else if (!out.empty()) {
      out.pop_back();  // the conversation as it stands, without the newline that leads into a next turn
    }
    return out;
  }

  if (!options.kwargs.is_object()) return FieldError("chat_template_kwargs", "must be an object");
  // The variables transformers passes to render().
  jinja::Dict context;
  jinja::List list;
  for (const ChatMessage& m : messages) {
    jinja::Dict message;
    message.Set("role", jinja::Value(m.role));
    message.Set("content", jinja::Value(*m.content));
    if (m.reasoning_content.has_value()) message.Set("reasoning_content", jinja::Value(*m.reasoning_content));
    list.push_back(jinja::Value::MakeDict(std::move(message)));
  }
  context.Set("messages", jinja::Value::MakeList(std::move(list)));
  context.Set("tools", jinja::Value::None());
  context.Set("documents", jinja::Value::None());
  context.Set("add_generation_prompt", jinja::Value(options.add_generation_prompt));
  if (!bos_.empty()) context.Set("bos_token", jinja::Value(bos_));
  if (!eos_.empty()) context.Set("eos_token", jinja::Value(eos_));
  for (const auto& [key, value] : options.kwargs.items()) {
    if (key == "messages" || key == "tools" || key == "documents" || key == "add_generation_prompt") {
      return FieldError(absl::StrCat("chat_template_kwargs.", key),
                        key == "add_generation_prompt" ? "is a request field of its own: send add_generation_prompt"
                                                       : "is set by the request itself and cannot be a template kwarg");
    }
    if (NestedDeeperThan(value, kMaxKwargDepth)) {
      return FieldError(absl::StrCat("chat_template_kwargs.", key), absl::StrCat("is nested deeper than ", kMaxKwargDepth, " levels"));
    }
    context.Set(key, jinja::ValueFromJson(value));
  }

  absl::StatusOr<std::string> text = template_->Render(context);
  if (text.ok()) return text;
  if (jinja::IsRaisedByTemplate(text.status())) {
    absl::Status status = FieldError("messages", absl::StrCat("refused by the model's chat template: ", text.status().message()));
    status.SetPayload(kRaisedPayload, absl::Cord("1"));
    return status;
  }
  return FieldError("messages", absl::StrCat("could not be rendered by the model's chat template (", text.status().message(),
                                             ")"));
}

std::string ChatErrorField(const absl::Status& status) {
  const auto field = status.GetPayload(kFieldPayload);
  return field.has_value() ? std::string(*field) : std::string();
}

bool IsRaisedByChatTemplate(const absl::Status& status) { return status.GetPayload(kRaisedPayload).has_value(); }

}  // namespace expertd::tokenizer
