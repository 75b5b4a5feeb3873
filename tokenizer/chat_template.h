#ifndef EXPERTD_TOKENIZER_CHAT_TEMPLATE_H_
#define EXPERTD_TOKENIZER_CHAT_TEMPLATE_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "tokenizer/tokenizer.h"

namespace expertd::jinja {
class Template;
}  // namespace expertd::jinja

namespace expertd::tokenizer {

// One message of a chat request. content is nullopt when the request's
// content was not a string (null, a number, a list of parts): Render reports
// that, so every caller validates messages the same way.
struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(std::string role_in, std::optional<std::string> content_in,
              std::optional<std::string> reasoning_content_in = std::nullopt)
      : role(std::move(role_in)), content(std::move(content_in)), reasoning_content(std::move(reasoning_content_in)) {}

  std::string role;  // system | user | assistant
  std::optional<std::string> content;
  // The assistant's reasoning, for templates that write it back (Qwen3,
  // DeepSeek); passed as the message's reasoning_content when set.
  std::optional<std::string> reasoning_content;
};

// How to render one chat, beside its messages.
struct ChatOptions {
  // Open the assistant's turn at the end (the prompt of a chat completion).
  // false renders the conversation as it stands.
  bool add_generation_prompt = true;
  // More variables for the template, as vLLM's and llama.cpp's
  // chat_template_kwargs: {"enable_thinking": false} for Qwen3. An object;
  // it may not name messages, tools, documents or add_generation_prompt.
  nlohmann::json kwargs = nlohmann::json::object();
};

// Turns chat messages into the prompt text the model was tuned on.
//
// A model's tokenizer_config.json (or chat_template.jinja) carries its chat
// template in Jinja; we render it with our interpreter (jinja/), as Hugging
// Face transformers' apply_chat_template does: the variables are messages
// (each {role, content[, reasoning_content]}), tools=None, documents=None,
// add_generation_prompt, bos_token and eos_token (when the tokenizer has
// them) and the options' kwargs. tests/tokenizer/chat_templates/ checks
// publishers' templates against Python's Jinja2.
//
// A model without a template (a base model) gets a plain transcript a base
// model continues naturally:
//   System: {c}\nUser: {c}\nAssistant: {c}\n ... Assistant:
// It ends its turn with a new "User:" line, hence the stop strings below.
//
// Special tokens: a template writes its own bos (if any), so its text is
// encoded without the tokenizer adding specials, as
// apply_chat_template(tokenize=True) does; the plain transcript is encoded
// like a /v1/completions prompt (add_special_tokens() says which).
//
// Ending the assistant's turn: instruct models end a turn with their
// tokenizer's eos_token, so generation stops at EOS. stop_strings() adds the
// end-of-turn markers the template writes (<|im_end|>, <|eot_id|>,
// <end_of_turn>, [INST], ...) for models whose EOS is another token; the
// daemon stops at the id of those that are special tokens.
class ChatTemplate {
 public:
  // The tokenizer's chat_template() with its bos/eos texts.
  static ChatTemplate ForModel(const Tokenizer& tokenizer);
  // The same from a template's source and the bos/eos token texts ("" when
  // the model has none; "" as the source: no template).
  static ChatTemplate FromJinja(std::string_view jinja, std::string bos_token, std::string eos_token);

  // The prompt for `messages`. InvalidArgument when the list is empty, a
  // role is not system, user or assistant, a content is not a string or a
  // kwarg is reserved (the message starts with the field at fault,
  // "messages[1].role ...", and ChatErrorField gives it); when the template
  // calls raise_exception (the message is the template's, and
  // IsRaisedByChatTemplate says so) or fails on these messages. When the
  // model's template did not parse, FailedPrecondition with that error.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages, const ChatOptions& options = {}) const;

  // "jinja" (the model's template) or "plain" (none: the fallback).
  std::string_view name() const { return template_ != nullptr || !parse_status_.ok() ? "jinja" : "plain"; }
  // Why the model's template could not be used (ok when it parsed, or when
  // there is none), for the load-time log.
  const absl::Status& parse_status() const { return parse_status_; }
  // Whether the rendered text is encoded with the tokenizer's own special
  // tokens (its bos when tokenizer_config asks for one): only for plain.
  bool add_special_tokens() const { return name() == "plain"; }
  // Text stop strings that end the assistant's turn (see above).
  const std::vector<std::string>& stop_strings() const { return stop_strings_; }

 private:
  ChatTemplate() = default;

  std::shared_ptr<const jinja::Template> template_;  // null: plain (or a template that did not parse)
  absl::Status parse_status_;
  std::string bos_;
  std::string eos_;
  std::vector<std::string> stop_strings_;
};

// The request field a Render error is about ("messages", "messages[2].role"),
// or "" for other statuses.
std::string ChatErrorField(const absl::Status& status);

// Whether a Render error is the template's own raise_exception (a rule of the
// model's about the conversation, such as roles that must alternate).
bool IsRaisedByChatTemplate(const absl::Status& status);

}  // namespace expertd::tokenizer

#endif  // EXPERTD_TOKENIZER_CHAT_TEMPLATE_H_
