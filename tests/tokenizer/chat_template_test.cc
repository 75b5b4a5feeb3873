// Chat templates: the model's own Jinja template rendered through the
// interpreter (bos/eos, add_generation_prompt, kwargs, raise_exception), the
// plain fallback, and errors that name the field at fault.

#include "tokenizer/chat_template.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace expertd::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Template sources as tokenizer_config.json holds them after JSON decoding:
// the \n inside Jinja string literals are the two characters '\' 'n'.
constexpr char kQwen2Template[] =
    R"({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %})";
constexpr char kQwen3Template[] =
    R"({%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}{%- endif %}{%- for message in messages %}{%- if message.role == "user" or message.role == "system" %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %})";
constexpr char kOlmoeTemplate[] =
    R"({{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}{% if not loop.last %}{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}{% else %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %})";
constexpr char kTulu2Template[] =
    R"({% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %})";
constexpr char kMixtralTemplate[] =
    R"({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})";
constexpr char kPhi3Template[] =
    R"({% for message in messages %}{% if message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %})";
constexpr char kLlama3Template[] =
    R"({{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})";

std::string RenderOrDie(const ChatTemplate& t, const std::vector<ChatMessage>& messages, const ChatOptions& options = {}) {
  absl::StatusOr<std::string> text = t.Render(messages, options);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : std::string();
}

const std::vector<ChatMessage> kOneTurn = {{"user", "Hi there"}};
const std::vector<ChatMessage> kWithSystem = {{"system", "Be brief."}, {"user", "Hi there"}};
const std::vector<ChatMessage> kMultiTurn = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};

// The texts below are what Python's Jinja2 renders for these templates with
// transformers' settings (tests/tokenizer/chat_templates/ checks whole
// publisher templates the same way, over many more conversations).

TEST(ChatTemplateTest, RendersTheModelsOwnTemplate) {
  const ChatTemplate t = ChatTemplate::FromJinja(kQwen2Template, "", "<|im_end|>");
  EXPECT_EQ(t.name(), "jinja");
  EXPECT_TRUE(t.parse_status().ok());
  EXPECT_FALSE(t.add_special_tokens());
  EXPECT_THAT(t.stop_strings(), ElementsAre("<|im_end|>"));
  EXPECT_EQ(RenderOrDie(t, kOneTurn),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi there<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(RenderOrDie(t, kMultiTurn),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, AddGenerationPromptFalseRendersTheConversationAsItStands) {
  const ChatTemplate t = ChatTemplate::FromJinja(kQwen2Template, "", "<|im_end|>");
  EXPECT_EQ(RenderOrDie(t, kWithSystem, {.add_generation_prompt = false, .kwargs = nlohmann::json::object()}),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n");
  const ChatTemplate plain = ChatTemplate::FromJinja("", "", "");
  EXPECT_EQ(RenderOrDie(plain, kWithSystem, {.add_generation_prompt = false, .kwargs = nlohmann::json::object()}),
            "System: Be brief.\nUser: Hi there");
}

TEST(ChatTemplateTest, KwargsReachTheTemplate) {
  // Qwen3's switch, as its template writes it.
  const ChatTemplate t = ChatTemplate::FromJinja(
      "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{% if add_generation_prompt %}A:"
      "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}",
      "", "");
  EXPECT_EQ(RenderOrDie(t, kOneTurn), "user:Hi there;A:");
  EXPECT_EQ(RenderOrDie(t, kOneTurn, {.add_generation_prompt = true, .kwargs = {{"enable_thinking", false}}}),
            "user:Hi there;A:<think>\n\n</think>\n\n");
  EXPECT_EQ(RenderOrDie(t, kOneTurn, {.add_generation_prompt = true, .kwargs = {{"enable_thinking", true}}}), "user:Hi there;A:");
  absl::StatusOr<std::string> reserved = t.Render(kOneTurn, {.add_generation_prompt = true, .kwargs = {{"messages", 1}}});
  ASSERT_FALSE(reserved.ok());
  EXPECT_EQ(ChatErrorField(reserved.status()), "chat_template_kwargs.messages");
  nlohmann::json deep = 1;
  for (int i = 0; i < 100; ++i) deep = nlohmann::json::array({deep});
  absl::StatusOr<std::string> too_deep = t.Render(kOneTurn, {.add_generation_prompt = true, .kwargs = {{"deep", deep}}});
  ASSERT_FALSE(too_deep.ok());
  EXPECT_EQ(ChatErrorField(too_deep.status()), "chat_template_kwargs.deep");
}

TEST(ChatTemplateTest, ReasoningContentIsPassedWhenSet) {
  const ChatTemplate t = ChatTemplate::FromJinja(
      "{% for m in messages %}[{{ m.role }}|{{ m.reasoning_content if m.reasoning_content is defined else '-' }}|"
      "{{ m.content }}]{% endfor %}",
      "", "");
  std::vector<ChatMessage> messages = {{"user", "q"}, {"assistant", "a"}};
  messages[1].reasoning_content = "because";
  EXPECT_EQ(RenderOrDie(t, messages), "[user|-|q][assistant|because|a]");
}

TEST(ChatTemplateTest, BosAndEosComeFromTheTokenizer) {
  const ChatTemplate t = ChatTemplate::FromJinja(kOlmoeTemplate, "<|endoftext|>", "<|endoftext|>");
  EXPECT_FALSE(t.add_special_tokens());
  EXPECT_THAT(t.stop_strings(), ElementsAre("<|user|>"));
  EXPECT_EQ(RenderOrDie(t, kOneTurn), "<|endoftext|><|user|>\nHi there\n<|assistant|>\n");
  EXPECT_EQ(RenderOrDie(t, kMultiTurn),
            "<|endoftext|><|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>\n"
            "<|user|>\nBye\n<|assistant|>\n");
  EXPECT_EQ(RenderOrDie(t, {{"user", "Hi"}, {"assistant", "Hello!"}}),
            "<|endoftext|><|user|>\nHi\n<|assistant|>\nHello!<|endoftext|><|assistant|>\n");
  // Tulu 2's template writes no bos and drops system messages (the C++
  // family before the interpreter wrote them); trim_blocks takes the newline
  // after each block tag, not after {{ }}.
  const ChatTemplate tulu2 = ChatTemplate::FromJinja(kTulu2Template, "<s>", "</s>");
  EXPECT_EQ(RenderOrDie(tulu2, kMultiTurn), "<|user|>\nHi\n<|assistant|>\nHello!</s>\n<|user|>\nBye\n<|assistant|>\n");
}

TEST(ChatTemplateTest, RaiseExceptionIsTheTemplatesOwnMessage) {
  // Mixtral's template refuses system messages and roles that do not
  // alternate (the C++ families before the interpreter folded the system
  // prompt into the first user turn instead).
  const ChatTemplate t = ChatTemplate::FromJinja(kMixtralTemplate, "<s>", "</s>");
  EXPECT_THAT(t.stop_strings(), ElementsAre("[INST]"));
  EXPECT_EQ(RenderOrDie(t, {{"user", "a"}, {"assistant", "b"}, {"user", "c"}}), "<s>[INST] a [/INST]b</s>[INST] c [/INST]");
  absl::StatusOr<std::string> system = t.Render(kWithSystem);
  ASSERT_FALSE(system.ok());
  EXPECT_EQ(system.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsRaisedByChatTemplate(system.status()));
  EXPECT_EQ(ChatErrorField(system.status()), "messages");
  EXPECT_THAT(system.status().message(), HasSubstr("Conversation roles must alternate user/assistant/user/assistant/..."));
}

TEST(ChatTemplateTest, TemplatesTheFamiliesDidNotKnowAreRendered) {
  // Phi-3 and Llama 3 fell back to the plain transcript before.
  EXPECT_EQ(RenderOrDie(ChatTemplate::FromJinja(kPhi3Template, "<s>", "<|endoftext|>"), kWithSystem),
            "<|user|>\nHi there<|end|>\n<|assistant|>\n");
  const ChatTemplate llama = ChatTemplate::FromJinja(kLlama3Template, "<|begin_of_text|>", "<|eot_id|>");
  EXPECT_THAT(llama.stop_strings(), ElementsAre("<|eot_id|>"));
  EXPECT_EQ(RenderOrDie(llama, kWithSystem),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, PlainForModelsWithoutATemplate) {
  const ChatTemplate none = ChatTemplate::FromJinja("", "<|endoftext|>", "<|endoftext|>");
  EXPECT_EQ(none.name(), "plain");
  EXPECT_TRUE(none.add_special_tokens());
  EXPECT_THAT(none.stop_strings(), ElementsAre("\nUser:", "\nSystem:"));
  EXPECT_EQ(RenderOrDie(none, kOneTurn), "User: Hi there\nAssistant:");
  EXPECT_EQ(RenderOrDie(none, kMultiTurn), "System: Be brief.\nUser: Hi\nAssistant: Hello!\nUser: Bye\nAssistant:");
}

TEST(ChatTemplateTest, ATemplateThatDoesNotParseIsReportedNotReplaced) {
  const ChatTemplate broken = ChatTemplate::FromJinja("{% for m in messages %}{{ m.content }}", "", "");
  EXPECT_EQ(broken.name(), "jinja");
  EXPECT_EQ(broken.parse_status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(broken.parse_status().message(), HasSubstr("{% endfor %}"));
  absl::StatusOr<std::string> text = broken.Render(kOneTurn);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ChatTemplateTest, ErrorsNameTheField) {
  const ChatTemplate t = ChatTemplate::FromJinja(kQwen3Template, "", "");
  absl::StatusOr<std::string> empty = t.Render({});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChatErrorField(empty.status()), "messages");

  absl::StatusOr<std::string> role = t.Render({{"user", "hi"}, {"tool", "42"}});
  ASSERT_FALSE(role.ok());
  EXPECT_EQ(ChatErrorField(role.status()), "messages[1].role");
  EXPECT_THAT(role.status().message(), HasSubstr("messages[1].role"));
  EXPECT_THAT(role.status().message(), HasSubstr("\"tool\""));

  absl::StatusOr<std::string> content = t.Render({{"system", std::nullopt}});
  ASSERT_FALSE(content.ok());
  EXPECT_EQ(ChatErrorField(content.status()), "messages[0].content");
  EXPECT_THAT(content.status().message(), HasSubstr("must be a string"));

  // A template failing on the messages (here: an undefined eos_token used in
  // arithmetic) is the request's error, naming the template's line.
  const ChatTemplate needs_eos = ChatTemplate::FromJinja("{{ messages[0].content + eos_token }}", "", "");
  absl::StatusOr<std::string> failed = needs_eos.Render(kOneTurn);
  ASSERT_FALSE(failed.ok());
  EXPECT_FALSE(IsRaisedByChatTemplate(failed.status()));
  EXPECT_THAT(failed.status().message(), HasSubstr("line 1"));

  EXPECT_EQ(ChatErrorField(absl::InvalidArgumentError("other")), "");
}

// ForModel reads the template and the bos/eos texts through the tokenizer.
const nlohmann::json kTinyTokenizer = {
    {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", nlohmann::json::array()}}},
    {"added_tokens",
     {{{"id", 2}, {"content", "<s>"}, {"special", true}}, {{"id", 3}, {"content", "</s>"}, {"special", true}}}}};

std::unique_ptr<Tokenizer> TinyTokenizer(const nlohmann::json& config) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::FromJson(kTinyTokenizer.dump(), config.dump(), "tiny");
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded.ok() ? std::move(*loaded) : nullptr;
}

TEST(ChatTemplateTest, ForModelUsesTheTokenizersTemplateAndSpecialTokens) {
  auto mixtral = TinyTokenizer({{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"chat_template", kMixtralTemplate}});
  ASSERT_NE(mixtral, nullptr);
  EXPECT_EQ(mixtral->chat_template(), kMixtralTemplate);
  const ChatTemplate t = ChatTemplate::ForModel(*mixtral);
  EXPECT_EQ(t.name(), "jinja");
  EXPECT_EQ(RenderOrDie(t, {{"user", "a"}, {"assistant", "b"}, {"user", "a"}}), "<s>[INST] a [/INST]b</s>[INST] a [/INST]");

  // A list of named templates: the "default" one.
  auto named = TinyTokenizer({{"eos_token", "</s>"},
                              {"chat_template",
                               {{{"name", "tool_use"}, {"template", kQwen3Template}},
                                {{"name", "default"}, {"template", kOlmoeTemplate}}}}});
  ASSERT_NE(named, nullptr);
  EXPECT_EQ(RenderOrDie(ChatTemplate::ForModel(*named), kOneTurn), "<|user|>\nHi there\n<|assistant|>\n");

  auto bare = TinyTokenizer({{"eos_token", "</s>"}});
  ASSERT_NE(bare, nullptr);
  EXPECT_EQ(bare->chat_template(), "");
  EXPECT_EQ(ChatTemplate::ForModel(*bare).name(), "plain");
}

TEST(ChatTemplateTest, TheTemplateMayComeAsChatTemplateJinja) {
  // transformers >= 4.47 saves the template beside tokenizer_config.json.
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("chat_template_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << kTinyTokenizer.dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "</s>"})";
  std::ofstream(dir / "chat_template.jinja") << kQwen3Template;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile((dir / "tokenizer.json").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->chat_template(), kQwen3Template);
  EXPECT_EQ(RenderOrDie(ChatTemplate::ForModel(**tokenizer), kOneTurn), "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace expertd::tokenizer
