// The JSON bodies of POST /v1/completions and /v1/chat/completions
// (daemon/openai_api.h): every input goes through ParseCompletionRequest
// and through ParseChatRequest under each chat template family, against a
// tiny generated model (mkmodel, Qwen3-MoE shape with a 64-token context so
// the context checks are reachable).
//
// Asserts beyond "no crash": a refused request is a 4xx with a message; an
// accepted one holds what the server relies on: a non-empty prompt of ids in
// the vocabulary, max_new_tokens in 0 .. inference.max_tokens and within the
// context, temperature in [0, 100], top_p in (0, 1], top_k >= 0,
// experts_per_token 0 (the model's) or 1 .. num_experts, a roster within
// inference.max_roster, non-empty stop strings, logprobs -1 .. 20.

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "daemon/openai_api.h"
#include "model/model.h"
#include "fuzz/fuzz_util.h"
#include "tokenizer/chat_template.h"
#include "tools/mkmodel/make_model.h"

namespace {

using expertd::daemon::ApiError;
using expertd::tokenizer::ChatTemplate;
using expertd::daemon::GenerationRequest;
using expertd::daemon::InferenceConfig;
using expertd::model::Model;

constexpr char kModelName[] = "fuzz-model";

// Made once by LLVMFuzzerInitialize, read-only afterwards: libFuzzer gives a
// target no other place to keep what every input shares.
struct Fixture {
  std::unique_ptr<Model> model;
  std::vector<ChatTemplate> templates;  // the model's own (none: plain), then Jinja ones in ChatML, Tulu, Mistral shape
  InferenceConfig limits;
};
std::unique_ptr<Fixture> fixture;

void CheckError(const ApiError& error) {
  FUZZ_CHECK(error.http_status >= 400 && error.http_status < 500);
  FUZZ_CHECK(!error.message.empty());
}

void CheckRequest(const GenerationRequest& r, int max_stop_strings) {
  const expertd::model::ModelConfig& config = fixture->model->config();
  const InferenceConfig& limits = fixture->limits;
  const expertd::engine::GenerateOptions& o = r.options;
  FUZZ_CHECK(o.max_new_tokens >= 0 && o.max_new_tokens <= limits.max_tokens);
  // Every prompt non-empty, in the vocabulary, leaving room for max_tokens;
  // at most 16 choices in all.
  FUZZ_CHECK(!r.prompts.empty());
  FUZZ_CHECK(r.n >= 1 && r.prompts.size() * static_cast<size_t>(r.n) <= 16);
  for (const expertd::daemon::PromptInput& prompt : r.prompts) {
    FUZZ_CHECK(!prompt.tokens.empty());
    for (int32_t id : prompt.tokens) FUZZ_CHECK(id >= 0 && id < config.vocab_size);
    FUZZ_CHECK(static_cast<int64_t>(prompt.tokens.size()) + o.max_new_tokens <= config.max_position_embeddings);
  }
  for (const auto& [token, bias] : o.sampling.logit_bias) {
    FUZZ_CHECK(token >= 0 && token < config.vocab_size && bias >= -100.0f && bias <= 100.0f);
  }
  FUZZ_CHECK(o.sampling.presence_penalty >= -2.0f && o.sampling.presence_penalty <= 2.0f);
  FUZZ_CHECK(o.sampling.frequency_penalty >= -2.0f && o.sampling.frequency_penalty <= 2.0f);
  FUZZ_CHECK(o.sampling.temperature >= 0.0f && o.sampling.temperature <= 100.0f);
  FUZZ_CHECK(o.sampling.top_p > 0.0f && o.sampling.top_p <= 1.0f);
  FUZZ_CHECK(o.sampling.top_k >= 0);
  FUZZ_CHECK(o.forward.experts_per_token == limits.default_experts_per_token ||
             (o.forward.experts_per_token >= 1 && o.forward.experts_per_token <= config.num_experts));
  FUZZ_CHECK(o.roster.samples >= 1 && o.roster.samples <= limits.max_roster);
  FUZZ_CHECK(o.roster.temperature >= 0.0f && o.roster.temperature <= 100.0f);
  FUZZ_CHECK(o.roster.skip_layers >= 0 && o.roster.skip_layers <= config.num_layers);
  FUZZ_CHECK(static_cast<int>(r.stop.size()) <= max_stop_strings);
  for (const std::string& s : r.stop) FUZZ_CHECK(!s.empty());
  for (int32_t id : r.stop_token_ids) FUZZ_CHECK(id >= 0 && id < config.vocab_size);
  FUZZ_CHECK(r.logprobs >= -1 && r.logprobs <= 20);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  char dir_template[] = "/tmp/expertd-fuzz-model-XXXXXX";
  const char* dir = ::mkdtemp(dir_template);
  FUZZ_CHECK(dir != nullptr);
  expertd::tools::MakeModelOptions options;
  options.arch = "qwen3_moe";  // <|im_start|>/<|im_end|> are special tokens: the chatml stop-by-id path
  options.layers = 1;
  options.max_position = 64;
  const absl::Status made = expertd::tools::MakeModel(options, dir);
  FUZZ_CHECK(made.ok());
  auto model = Model::Load(dir);
  FUZZ_CHECK(model.ok());
  // Load has read what the parser needs (config, tokenizer); the files are
  // not needed again.
  std::filesystem::remove_all(dir);

  fixture = std::make_unique<Fixture>();
  fixture->model = std::move(*model);
  const expertd::tokenizer::Tokenizer& tokenizer = fixture->model->tokenizer();
  auto text_of = [&](std::optional<int32_t> id) { return id ? std::string(tokenizer.TokenText(*id)) : ""; };
  const std::string bos = text_of(tokenizer.bos_id());
  const std::string eos = text_of(tokenizer.eos_id());
  fixture->templates.push_back(ChatTemplate::ForModel(tokenizer));
  // Small templates in the families' shapes: ChatML with enable_thinking,
  // Tulu, and Mistral's raise_exception on roles that do not alternate.
  fixture->templates.push_back(ChatTemplate::FromJinja(
      "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
      "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
      "{% endif %}",
      bos, eos));
  fixture->templates.push_back(ChatTemplate::FromJinja(
      "{{ bos_token }}{% for m in messages %}{{ '<|' + m.role + '|>\\n' + m.content + '\\n' }}{% endfor %}"
      "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
      bos, eos));
  fixture->templates.push_back(ChatTemplate::FromJinja(
      "{{ bos_token }}{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
      "{% if m.role == 'user' %}{{ '[INST] ' + m.content + ' [/INST]' }}{% else %}{{ m.content + eos_token }}{% endif %}"
      "{% endfor %}",
      bos, eos));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  {
    expertd::daemon::CompletionRequest request;
    ApiError error;
    if (expertd::daemon::ParseCompletionRequest(body, *fixture->model, kModelName, fixture->limits, &request, &error)) {
      CheckRequest(request, 4);
      FUZZ_CHECK(request.prompt_logprobs == (request.echo && request.logprobs >= 0));
    } else {
      CheckError(error);
    }
  }
  for (const ChatTemplate& chat_template : fixture->templates) {
    expertd::daemon::ChatRequest request;
    ApiError error;
    if (expertd::daemon::ParseChatRequest(body, *fixture->model, chat_template, kModelName, fixture->limits, &request,
                                  &error)) {
      CheckRequest(request, 4 + static_cast<int>(chat_template.stop_strings().size()));
    } else {
      CheckError(error);
    }
  }
  return 0;
}
