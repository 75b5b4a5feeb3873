#include "tokenizer/chat_template.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace expertd {
namespace {

// Where a Render error puts the request field it is about.
constexpr char kFieldPayload[] = "type.expertd/chat-field";

absl::Status FieldError(const std::string& field, const std::string& message) {
  absl::Status status = absl::InvalidArgumentError(absl::StrCat(field, " ", message));
  status.SetPayload(kFieldPayload, absl::Cord(field));
  return status;
}

// The fixed system prompt a ChatML template writes when the chat has none:
// the literal text in '<|im_start|>system\n...<|im_end|>' (Qwen1.5/Qwen2:
// "You are a helpful assistant."). A system turn built from the messages
// ('<|im_start|>system\n' + messages[0]['content'] ...) has an expression
// there instead of plain text and is skipped.
std::string ChatMlDefaultSystemPrompt(std::string_view jinja) {
  constexpr std::string_view kOpen = "<|im_start|>system";
  constexpr std::string_view kClose = "<|im_end|>";
  for (size_t at = jinja.find(kOpen); at != std::string_view::npos; at = jinja.find(kOpen, at + 1)) {
    std::string_view rest = jinja.substr(at + kOpen.size());
    // The newline is written as the two characters \n inside a Jinja string
    // literal, or as a real newline.
    if (rest.starts_with("\\n")) {
      rest.remove_prefix(2);
    } else if (rest.starts_with("\n")) {
      rest.remove_prefix(1);
    } else {
      continue;
    }
    const size_t end = rest.find(kClose);
    if (end == std::string_view::npos || end == 0) continue;
    const std::string_view text = rest.substr(0, end);
    if (text.find_first_of("'\"{}+") != std::string_view::npos) continue;
    std::string prompt;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text.substr(i, 2) == "\\n") {
        prompt += '\n';
        ++i;
      } else {
        prompt += text[i];
      }
    }
    return prompt;
  }
  return "";
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
  t.eos_ = std::move(eos_token);
  auto has = [&](std::string_view marker) { return jinja.find(marker) != std::string_view::npos; };
  const bool writes_bos = has("bos_token");
  if (has("<|im_start|>")) {
    t.family_ = Family::kChatMl;
    t.default_system_prompt_ = ChatMlDefaultSystemPrompt(jinja);
    t.stop_strings_ = {"<|im_end|>"};
  } else if (has("[INST]")) {
    // Every Mistral template starts with bos (written as bos_token or "<s>").
    t.family_ = Family::kMistral;
    t.stop_strings_ = {"[INST]"};
  } else if (has("<|user|>") && has("<|assistant|>") &&
             !has("<|end|>")) {  // Phi-3 shares the markers but ends turns with <|end|>
    t.family_ = Family::kTulu;
    t.stop_strings_ = {"<|user|>"};
  } else {
    t.family_ = Family::kPlain;
    t.unrecognised_ = !jinja.empty();
    t.stop_strings_ = {"\nUser:", "\nSystem:"};
  }
  if (t.family_ == Family::kMistral || (t.family_ != Family::kPlain && writes_bos)) t.bos_ = std::move(bos_token);
  return t;
}

std::string_view ChatTemplate::name() const {
  switch (family_) {
    case Family::kChatMl:
      return "chatml";
    case Family::kTulu:
      return "tulu";
    case Family::kMistral:
      return "mistral";
    case Family::kPlain:
      break;
  }
  return "plain";
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages) const {
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

  std::string out = bos_;
  switch (family_) {
    case Family::kChatMl: {
      if (messages.front().role != "system" && !default_system_prompt_.empty()) {
        absl::StrAppend(&out, "<|im_start|>system\n", default_system_prompt_, "<|im_end|>\n");
      }
      for (const ChatMessage& m : messages) absl::StrAppend(&out, "<|im_start|>", m.role, "\n", *m.content, "<|im_end|>\n");
      absl::StrAppend(&out, "<|im_start|>assistant\n");
      break;
    }
    case Family::kTulu: {
      for (size_t i = 0; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        if (m.role == "assistant") {
          absl::StrAppend(&out, "<|assistant|>\n", *m.content, eos_, i + 1 < messages.size() ? "\n" : "");
        } else {
          absl::StrAppend(&out, "<|", m.role, "|>\n", *m.content, "\n");
        }
      }
      absl::StrAppend(&out, "<|assistant|>\n");
      break;
    }
    case Family::kMistral: {
      std::string system;  // waiting for the next user turn
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          absl::StrAppend(&system, system.empty() ? "" : "\n\n", *m.content);
        } else if (m.role == "user") {
          absl::StrAppend(&out, "[INST] ", system, system.empty() ? "" : "\n\n", *m.content, " [/INST]");
          system.clear();
        } else {
          absl::StrAppend(&out, *m.content, eos_);
        }
      }
      if (!system.empty()) absl::StrAppend(&out, "[INST] ", system, " [/INST]");
      break;
    }
    case Family::kPlain: {
      for (const ChatMessage& m : messages) {
        const char* label = m.role == "system" ? "System" : (m.role == "user" ? "User" : "Assistant");
        absl::StrAppend(&out, label, ": ", *m.content, "\n");
      }
      absl::StrAppend(&out, "Assistant:");
      break;
    }
  }
  return out;
}

std::string ChatErrorField(const absl::Status& status) {
  const auto field = status.GetPayload(kFieldPayload);
  return field.has_value() ? std::string(*field) : std::string();
}

}  // namespace expertd
