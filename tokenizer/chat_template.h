#ifndef EXPERTD_TOKENIZER_CHAT_TEMPLATE_H_
#define EXPERTD_TOKENIZER_CHAT_TEMPLATE_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tokenizer/tokenizer.h"

namespace expertd {

// One message of a chat request. content is nullopt when the request's
// content was not a string (null, a number, a list of parts): Render reports
// that, so every caller validates messages the same way.
struct ChatMessage {
  std::string role;  // system | user | assistant
  std::optional<std::string> content;
};

// Turns chat messages into the prompt text the model was tuned on.
//
// HF models ship a Jinja `chat_template` in tokenizer_config.json. We run no
// Jinja: the template's distinctive markers pick one of the families below,
// rendered here as the family's template renders them with
// add_generation_prompt=True (the prompt always ends by opening the
// assistant's turn):
//
//   chatml   (Qwen; marker "<|im_start|>")
//            <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
//            When the template writes a fixed system prompt for chats that
//            have none (Qwen1.5/Qwen2: "You are a helpful assistant."), that
//            prompt is taken from the template and written the same way.
//   tulu     (OLMoE-Instruct, OLMo 2, Tulu; markers "<|user|>" and "<|assistant|>")
//            [bos]<|system|>\n{c}\n<|user|>\n{c}\n<|assistant|>\n{c}{eos}\n ... <|assistant|>\n
//            (as Tulu 3's template, an assistant turn that is the last
//            message has no newline after its eos). bos only when the
//            template writes bos_token.
//   mistral  (Mistral/Mixtral; marker "[INST]")
//            {bos}[INST] {user} [/INST]{assistant}{eos}[INST] {user} [/INST]
//            System messages are folded into the next user turn as
//            "{system}\n\n{user}" (Mixtral's own template refuses them).
//            Role alternation is not enforced.
//   plain    (no template, or one not recognised: base models)
//            System: {c}\nUser: {c}\nAssistant: {c}\n ... Assistant:
//            A transcript a base model continues naturally; it ends its turn
//            with a new "User:" line, hence the stop strings below.
//
// Special tokens: a recognised family's text carries its own bos (if any),
// so it is encoded without the tokenizer adding specials, as
// apply_chat_template(tokenize=True) does; plain text is encoded like a
// /v1/completions prompt (add_special_tokens() says which).
//
// Ending the assistant's turn: the instruct models of these families end a
// turn with their tokenizer's eos_token (Qwen instruct: <|im_end|>; OLMoE:
// <|endoftext|>; Mixtral: </s>), so generation stops at EOS. stop_strings()
// adds the family's next-turn markers as text stop strings for models that
// run on in plain text. A marker that is a special token (<|im_end|> in a
// base Qwen) is dropped by the detokenizer and cannot match as text; such a
// model stops at its own EOS or at max_tokens.
class ChatTemplate {
 public:
  enum class Family { kChatMl, kTulu, kMistral, kPlain };

  // The family of the tokenizer's chat_template(), with its bos/eos text.
  static ChatTemplate ForModel(const Tokenizer& tokenizer);
  // The same from a template's source and the bos/eos token texts ("" when
  // the model has none).
  static ChatTemplate FromJinja(std::string_view jinja, std::string bos_token, std::string eos_token);

  // The prompt for `messages`, ending with the assistant's turn opened.
  // InvalidArgument when the list is empty, a role is not system, user or
  // assistant, or a content is not a string; the message starts with the
  // field at fault ("messages[1].role ...") and ChatErrorField gives it.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages) const;

  // "chatml", "tulu", "mistral" or "plain".
  std::string_view name() const;
  Family family() const { return family_; }
  // True when the model had a template we did not recognise (and plain is
  // used instead), for the load-time log.
  bool unrecognised() const { return unrecognised_; }
  // Whether the rendered text is encoded with the tokenizer's own special
  // tokens (its bos when tokenizer_config asks for one): only for plain.
  bool add_special_tokens() const { return family_ == Family::kPlain; }
  // Text stop strings that end the assistant's turn (see above).
  const std::vector<std::string>& stop_strings() const { return stop_strings_; }
  // The system prompt written when a chat has none ("" for none).
  const std::string& default_system_prompt() const { return default_system_prompt_; }

 private:
  ChatTemplate() = default;

  Family family_ = Family::kPlain;
  bool unrecognised_ = false;
  std::string bos_;  // written first when the family wants it, else ""
  std::string eos_;
  std::string default_system_prompt_;
  std::vector<std::string> stop_strings_;
};

// The request field a Render error is about ("messages", "messages[2].role"),
// or "" for other statuses.
std::string ChatErrorField(const absl::Status& status);

}  // namespace expertd

#endif  // EXPERTD_TOKENIZER_CHAT_TEMPLATE_H_
