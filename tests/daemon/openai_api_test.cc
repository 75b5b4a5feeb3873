// Request parsing details that the integration tests cannot force with a
// random model, and the rendering of answers field by field.

#include "daemon/openai_api.h"

#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/roster.h"
#include "engine/sampler.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_models.h"
#include "tokenizer/chat_template.h"

namespace expertd::daemon {
namespace {

TEST(ChatRequestTest, SpecialEndOfTurnMarkersStopByTokenId) {
  testing::ScopedTempDir dir("openai_api");
  tools::MakeModelOptions o;
  o.arch = "qwen3_moe";  // EOS <|endoftext|>; <|im_end|> is another special token
  o.layers = 1;
  const std::string path = testing::MakeTestModel(dir, "model", o);
  auto model = model::Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const tokenizer::ChatTemplate chatml = tokenizer::ChatTemplate::FromJinja(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>\\n'}}{% endfor %}",
      "", "<|endoftext|>");
  ChatRequest request;
  ApiError error;
  ASSERT_TRUE(ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}]})", **model, chatml, "model",
                               InferenceConfig{}, &request, &error))
      << error.message;
  const std::optional<int32_t> im_end = (*model)->tokenizer().TokenId("<|im_end|>");
  ASSERT_TRUE(im_end.has_value());
  EXPECT_EQ(request.stop_token_ids, std::vector<int32_t>{*im_end});

  // A plain transcript's markers are text, not tokens.
  const tokenizer::ChatTemplate plain = tokenizer::ChatTemplate::FromJinja("", "", "<|endoftext|>");
  ChatRequest plain_request;
  ASSERT_TRUE(ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}]})", **model, plain, "model",
                               InferenceConfig{}, &plain_request, &error))
      << error.message;
  EXPECT_TRUE(plain_request.stop_token_ids.empty());
  EXPECT_FALSE(plain_request.stop.empty());
}


TEST(ChatRequestTest, TemplateOptionsAndTheTemplatesOwnErrors) {
  testing::ScopedTempDir dir("openai_api_template");
  tools::MakeModelOptions o;
  o.layers = 1;
  auto model = model::Model::Load(testing::MakeTestModel(dir, "model", o));
  ASSERT_TRUE(model.ok()) << model.status();
  // Mixtral's rule about roles, and Qwen3's thinking switch.
  const tokenizer::ChatTemplate t = tokenizer::ChatTemplate::FromJinja(
      "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
      "[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]"
      "{% if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}{% endif %}",
      "", "");
  auto parse = [&](const std::string& body, ChatRequest* request, ApiError* error) {
    return ParseChatRequest(body, **model, t, "model", InferenceConfig{}, request, error);
  };
  ChatRequest request;
  ApiError error;
  ASSERT_TRUE(parse(R"({"messages": [{"role": "user", "content": "hi"}]})", &request, &error)) << error.message;
  EXPECT_EQ(request.prompts.at(0).text, "[user]hi[assistant]");
  request = ChatRequest();
  ASSERT_TRUE(parse(R"({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": false,
                        "chat_template_kwargs": {"enable_thinking": false}})",
                    &request, &error))
      << error.message;
  EXPECT_EQ(request.prompts.at(0).text, "[user]hi");
  request = ChatRequest();
  ASSERT_TRUE(parse(R"({"messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"enable_thinking": false}})",
                    &request, &error))
      << error.message;
  EXPECT_EQ(request.prompts.at(0).text, "[user]hi[assistant]<think></think>");

  // The template's raise_exception is a 400 carrying its message.
  request = ChatRequest();
  EXPECT_FALSE(parse(R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})", &request, &error));
  EXPECT_EQ(error.http_status, 400);
  EXPECT_EQ(error.param, "messages");
  EXPECT_THAT(error.message, ::testing::HasSubstr("Conversation roles must alternate user/assistant/user/assistant/..."));

  for (const auto& [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({"messages": [{"role": "user", "content": "a"}], "add_generation_prompt": "yes"})", "add_generation_prompt"},
           {R"({"messages": [{"role": "user", "content": "a"}], "chat_template_kwargs": [1]})", "chat_template_kwargs"},
           {R"({"messages": [{"role": "user", "content": "a"}], "chat_template_kwargs": {"messages": []}})",
            "chat_template_kwargs.messages"},
           {R"({"messages": [{"role": "user", "content": "a", "reasoning_content": 3}]})", "messages[0].reasoning_content"},
       }) {
    request = ChatRequest();
    error = ApiError();
    EXPECT_FALSE(parse(body, &request, &error)) << body;
    EXPECT_EQ(error.http_status, 400) << body;
    EXPECT_EQ(error.param, param) << body;
  }
}


// Request numbers: every field is read at full width and range-checked in
// the type the engine uses, so a hostile value is a 400 naming the field,
// never a request that parses and then fails in the engine (a 500), and
// never one silently truncated into another value.
class RequestNumbersTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::ScopedTempDir("openai_api_numbers");
    tools::MakeModelOptions o;  // olmoe: 2 MoE layers, 8 experts, vocab 512
    auto model = model::Model::Load(testing::MakeTestModel(*dir_, "model", o));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }

  // Parses a completion (chat: a chat request) body; the error when it fails.
  static bool Parse(const std::string& body, bool chat, GenerationRequest* request, ApiError* error) {
    if (chat) {
      const tokenizer::ChatTemplate plain = tokenizer::ChatTemplate::FromJinja("", "", "");
      return ParseChatRequest(body, *model_, plain, "model", InferenceConfig{}, request, error);
    }
    CompletionRequest completion;
    const bool ok = ParseCompletionRequest(body, *model_, "model", InferenceConfig{}, &completion, error);
    *request = completion;
    return ok;
  }

  static testing::ScopedTempDir* dir_;
  static model::Model* model_;
};
testing::ScopedTempDir* RequestNumbersTest::dir_ = nullptr;
model::Model* RequestNumbersTest::model_ = nullptr;

struct NumberField {
  std::string param;            // the field, as the error's param names it
  std::string body_before;      // the body up to the value
  std::string body_after;       // and after it
  bool chat = false;
  std::vector<std::string> bad;  // JSON values that must be a 400 naming param
};

// Not integers, or integers beyond int32 (and int64, and uint64).
const std::vector<std::string> kNotInt32 = {
    "-1", "2147483648", "4294967296", "4294967301", "9223372036854775807", "9223372036854775808",
    "18446744073709551615", "18446744073709551616", "-2147483649", "-9223372036854775808",
    "-9223372036854775809", "1e300", "-1e300", "1e-300", "0.5", "5.0", "\"5\"", "true", "[]", "{}"};
// Not numbers in [0, 100], as doubles or once converted to float.
const std::vector<std::string> kNotTemperature = {
    "-1", "-1e-300", "100.00001", "1e39", "1e300", "-1e300", "18446744073709551615", "-9223372036854775808",
    "\"1\"", "true", "[]", "{}"};
const std::vector<std::string> kNotSeed = {"1.5", "18446744073709551616", "-9223372036854775809", "1e300",
                                           "\"1\"", "true", "[]", "{}"};

std::vector<std::string> Plus(std::vector<std::string> values, std::vector<std::string> more) {
  values.insert(values.end(), more.begin(), more.end());
  return values;
}

TEST_F(RequestNumbersTest, HostileValuesAreA400NamingTheField) {
  const std::string prompt = R"({"prompt": "hi", )";
  const std::string chat = R"({"messages": [{"role": "user", "content": "hi"}], )";
  const std::string roster = R"({"prompt": "hi", "roster": {"size": 2, )";
  const std::vector<NumberField> fields = {
      {"max_tokens", prompt + R"("max_tokens": )", "}", false, Plus(kNotInt32, {"2049"})},
      {"max_completion_tokens", chat + R"("max_completion_tokens": )", "}", true, Plus(kNotInt32, {"2049"})},
      {"temperature", prompt + R"("temperature": )", "}", false, kNotTemperature},
      {"top_p", prompt + R"("top_p": )", "}", false,
       {"0", "-0.0", "1e-300", "1e-46", "-1", "1.0000001", "2", "1e39", "1e300", "-1e300", "18446744073709551615",
        "-9223372036854775808", "\"0.5\"", "true", "[]", "{}"}},
      {"top_k", prompt + R"("top_k": )", "}", false, kNotInt32},
      {"seed", prompt + R"("seed": )", "}", false, kNotSeed},
      {"n", prompt + R"("n": )", "}", false, Plus(kNotInt32, {"0", "17"})},
      {"n", R"({"prompt": ["a", "b", "c"], "n": )", "}", false, {"6", "0"}},
      {"prompt", R"({"prompt": )", "}", false,
       {"[[1, 2], \"a\"]", "[\"a\", [1]]", "[[1], [512]]", "[[]]", "[\"\"]", "[{}]", "7", "{}",
        "[\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\", \"j\", \"k\", \"l\", "
        "\"m\", \"n\", \"o\", \"p\", \"q\"]"}},
      {"experts_per_token", prompt + R"("experts_per_token": )", "}", false, Plus(kNotInt32, {"0", "9"})},
      {"logprobs", prompt + R"("logprobs": )", "}", false, Plus(kNotInt32, {"21"})},
      {"top_logprobs", chat + R"("logprobs": true, "top_logprobs": )", "}", true, Plus(kNotInt32, {"21"})},
      {"prompt", R"({"prompt": [1, )", "]}", false, Plus(kNotInt32, {"512"})},
      {"roster.size", R"({"prompt": "hi", "roster": {"size": )", "}}", false, Plus(kNotInt32, {"0", "33"})},
      {"roster.temperature", roster + R"("temperature": )", "}}", false, kNotTemperature},
      {"roster.seed", roster + R"("seed": )", "}}", false, kNotSeed},
      {"roster.skip_layers", roster + R"("skip_layers": )", "}}", false, Plus(kNotInt32, {"3"})},
      {"roster.layer_temperatures", roster + R"("layer_temperatures": [0.5, )", "]}}", false, kNotTemperature},
      {"roster.resident_bonus", roster + R"("resident_bonus": )", "}}", false, kNotTemperature},
      {"presence_penalty", prompt + R"("presence_penalty": )", "}", false,
       {"-2.0001", "2.5", "1e300", "\"1\"", "true", "[]", "{}"}},
      {"frequency_penalty", chat + R"("frequency_penalty": )", "}", true, {"-3", "2.0001", "\"0\"", "[]"}},
      {"logit_bias", prompt + R"("logit_bias": )", "}", false,
       {"[]", "1", "\"x\"", R"({"512": 1})", R"({"-1": 1})", R"({"a": 1})", R"({"1.5": 1})"}},
      {"logit_bias[\"7\"]", prompt + R"("logit_bias": {"7": )", "}}", false,
       {"100.5", "-101", "\"1\"", "true", "[]", "1e300"}},
      {"stream_options", prompt + R"("stream": true, "stream_options": )", "}", false, {"true", "[]", "1"}},
      {"stream_options.include_usage", prompt + R"("stream": true, "stream_options": {"include_usage": )", "}}",
       false, {"1", "\"yes\"", "[]"}},
  };
  for (const NumberField& field : fields) {
    for (const std::string& value : field.bad) {
      const std::string body = field.body_before + value + field.body_after;
      GenerationRequest request;
      ApiError error;
      EXPECT_FALSE(Parse(body, field.chat, &request, &error)) << body;
      EXPECT_EQ(error.http_status, 400) << body;
      EXPECT_EQ(error.param, field.param) << body << ": " << error.message;
      EXPECT_NE(error.message.find(field.param), std::string::npos) << body << ": " << error.message;
    }
  }
}

// What expertd cannot do yet is refused by name (a client asking for JSON
// output or tool calls would misread a plain answer); the values that ask
// for nothing pass.
TEST_F(RequestNumbersTest, UnsupportedFeaturesAreA400NamingTheField) {
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"response_format", R"({"prompt": "hi", "response_format": {"type": "json_object"}})"},
      {"response_format", R"({"prompt": "hi", "response_format": "json"})"},
      {"tools", R"({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function",
                  "function": {"name": "f", "parameters": {}}}]})"},
      {"tool_choice", R"({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"})"},
      {"functions", R"({"messages": [{"role": "user", "content": "hi"}], "functions": [{"name": "f"}]})"},
      {"user", R"({"prompt": "hi", "user": 7})"},
  };
  for (const auto& [param, body] : refused) {
    GenerationRequest request;
    ApiError error;
    EXPECT_FALSE(Parse(body, body.find("messages") != std::string::npos, &request, &error)) << body;
    EXPECT_EQ(error.http_status, 400) << body;
    EXPECT_EQ(error.param, param) << body << ": " << error.message;
  }
  const std::vector<std::string> accepted = {
      R"({"prompt": "hi", "response_format": {"type": "text"}, "user": "someone"})",
      R"({"messages": [{"role": "user", "content": "hi"}], "tools": [], "tool_choice": "none"})",
  };
  for (const std::string& body : accepted) {
    GenerationRequest request;
    ApiError error;
    EXPECT_TRUE(Parse(body, body.find("messages") != std::string::npos, &request, &error)) << body << ": "
                                                                                           << error.message;
  }
}

// A number JSON cannot hold as a double makes the body invalid: still a 400.
TEST_F(RequestNumbersTest, NumbersBeyondDoubleAreA400) {
  for (const std::string field : {"max_tokens", "temperature", "top_p", "top_k", "seed"}) {
    for (const std::string value : {"1e400", "-1e400"}) {
      const std::string body = absl::StrCat(R"({"prompt": "hi", ")", field, "\": ", value, "}");
      GenerationRequest request;
      ApiError error;
      EXPECT_FALSE(Parse(body, false, &request, &error)) << body;
      EXPECT_EQ(error.http_status, 400) << body;
    }
  }
}

// What parses is taken at its value, and the engine accepts it.
TEST_F(RequestNumbersTest, BoundaryValuesParseExactlyAndPassTheEngine) {
  struct Good {
    std::string body;
    std::function<void(const GenerationRequest&)> check;
  };
  const std::vector<Good> goods = {
      {R"({"prompt": "hi", "top_k": 2147483647})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.sampling.top_k, 2147483647);
       }},
      {R"({"prompt": "hi", "top_k": 0})", [](const GenerationRequest& r) { EXPECT_EQ(r.options.sampling.top_k, 0); }},
      {R"({"prompt": "hi", "top_p": 1e-45})", [](const GenerationRequest& r) {
         EXPECT_GT(r.options.sampling.top_p, 0.0f);
       }},
      {R"({"prompt": "hi", "top_p": 1})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.sampling.top_p, 1.0f);
       }},
      {R"({"prompt": "hi", "temperature": 1e-300})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.sampling.temperature, 0.0f);
       }},
      {R"({"prompt": "hi", "temperature": 100})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.sampling.temperature, 100.0f);
       }},
      {R"({"prompt": "hi", "seed": 18446744073709551615})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.sampling.seed, UINT64_MAX);
       }},
      {R"({"prompt": "hi", "seed": -1})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.sampling.seed, UINT64_MAX);
       }},
      {R"({"prompt": "hi", "seed": -9223372036854775808})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.sampling.seed, uint64_t{1} << 63);
       }},
      {R"({"prompt": "hi", "max_tokens": 2048})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.max_new_tokens, 2048);
       }},
      {R"({"prompt": [0, 511], "experts_per_token": 8, "n": 1, "logprobs": 20})", [](const GenerationRequest& r) {
         EXPECT_EQ(r.prompts.at(0).tokens, (std::vector<int32_t>{0, 511}));
         EXPECT_EQ(r.options.forward.experts_per_token, 8);
         EXPECT_EQ(r.logprobs, 20);
       }},
      {R"({"prompt": ["hi", "there"], "n": 8})", [](const GenerationRequest& r) {
         ASSERT_EQ(r.prompts.size(), 2u);
         EXPECT_EQ(r.prompts[1].text, "there");
         EXPECT_FALSE(r.prompts[1].tokens.empty());
         EXPECT_EQ(r.n, 8);
       }},
      {R"({"prompt": [[1, 2], [3]], "n": 1})", [](const GenerationRequest& r) {
         ASSERT_EQ(r.prompts.size(), 2u);
         EXPECT_EQ(r.prompts[0].tokens, (std::vector<int32_t>{1, 2}));
         EXPECT_EQ(r.prompts[1].tokens, (std::vector<int32_t>{3}));
       }},
      {R"({"prompt": "hi", "n": 16})", [](const GenerationRequest& r) { EXPECT_EQ(r.n, 16); }},
      {R"({"prompt": "hi", "presence_penalty": -2, "frequency_penalty": 2, "logit_bias": {"0": -100, "511": 100},
           "stream": true, "stream_options": {"include_usage": true}})",
       [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.sampling.presence_penalty, -2.0f);
         EXPECT_EQ(r.options.sampling.frequency_penalty, 2.0f);
         EXPECT_EQ(r.options.sampling.logit_bias,
                   (std::vector<std::pair<int32_t, float>>{{0, -100.0f}, {511, 100.0f}}));
         EXPECT_TRUE(r.include_usage);
       }},
      {R"({"prompt": "hi", "roster": {"size": 32, "temperature": 100, "seed": 18446744073709551615,
           "skip_layers": 2, "layer_temperatures": [0, 100], "resident_bonus": 100}})",
       [](const GenerationRequest& r) {
         EXPECT_EQ(r.options.roster.samples, 32);
         EXPECT_EQ(r.options.roster.seed, UINT64_MAX);
         EXPECT_EQ(r.options.roster.layer_temperatures, (std::vector<float>{0.0f, 100.0f}));
       }},
  };
  for (const Good& good : goods) {
    GenerationRequest request;
    ApiError error;
    ASSERT_TRUE(Parse(good.body, false, &request, &error)) << good.body << ": " << error.message;
    good.check(request);
    EXPECT_TRUE(engine::ValidateSamplingOptions(request.options.sampling, model_->config().vocab_size).ok()) << good.body;
    EXPECT_TRUE(engine::ValidateRosterOptions(request.options.roster, model_->config(), 32).ok()) << good.body;
  }
}

// Rendering: OpenAI's field names and shapes, as its clients parse them.
engine::TokenLogprob Scored(int32_t token, std::string text, std::optional<float> logprob,
                    std::vector<std::pair<std::string, float>> top = {}) {
  engine::TokenLogprob t;
  t.token = token;
  t.text = std::move(text);
  t.logprob = logprob;
  t.top = std::move(top);
  return t;
}

TEST(AnswerShapeTest, WholeCompletionEchoesThePromptAndCountsTextOffsetsAcrossIt) {
  AnswerShape shape{.chat = false, .id = "cmpl-1", .created = 7, .model = "m", .echo = "Hi"};
  const std::vector<engine::TokenLogprob> prompt = {Scored(1, "H", std::nullopt), Scored(2, "i", -0.5f)};
  const std::vector<engine::TokenLogprob> generated = {Scored(3, " there", -1.0f, {{" there", -1.0f}, {"!", -2.0f}})};
  const nlohmann::json body = shape.Whole(" there", "length", prompt, generated, /*with_logprobs=*/true);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["id"], "cmpl-1");
  EXPECT_EQ(body["created"], 7);
  EXPECT_EQ(body["model"], "m");
  const nlohmann::json& choice = body["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["text"], "Hi there");
  EXPECT_EQ(choice["finish_reason"], "length");
  const nlohmann::json& logprobs = choice["logprobs"];
  EXPECT_EQ(logprobs["tokens"], nlohmann::json({"H", "i", " there"}));
  EXPECT_EQ(logprobs["text_offset"], nlohmann::json({0, 1, 2}));
  EXPECT_TRUE(logprobs["token_logprobs"][0].is_null()) << "nothing predicts a prompt's first token";
  EXPECT_TRUE(logprobs["top_logprobs"][0].is_null());
  EXPECT_FLOAT_EQ(logprobs["token_logprobs"][2].get<float>(), -1.0f);
  EXPECT_FLOAT_EQ(logprobs["top_logprobs"][2]["!"].get<float>(), -2.0f);
}

TEST(AnswerShapeTest, WholeChatIsAnAssistantMessageWithContentLogprobs) {
  AnswerShape shape{.chat = true, .id = "chatcmpl-1", .created = 7, .model = "m", .echo = ""};
  const std::vector<engine::TokenLogprob> generated = {Scored(3, "\xc3", -0.25f)};
  const nlohmann::json body = shape.Whole("ok", "stop", {}, generated, /*with_logprobs=*/true);
  EXPECT_EQ(body["object"], "chat.completion");
  const nlohmann::json& choice = body["choices"][0];
  EXPECT_EQ(choice["message"], nlohmann::json({{"role", "assistant"}, {"content", "ok"}}));
  EXPECT_EQ(choice["finish_reason"], "stop");
  const nlohmann::json& token = choice["logprobs"]["content"][0];
  EXPECT_EQ(token["bytes"], nlohmann::json({0xc3})) << "bytes are the token's raw bytes";
  EXPECT_FLOAT_EQ(token["logprob"].get<float>(), -0.25f);
  EXPECT_TRUE(token["top_logprobs"].is_array());
  // Without logprobs asked for, the field is there and null.
  EXPECT_TRUE(shape.Whole("ok", "stop", {}, {}, false)["choices"][0]["logprobs"].is_null());
}

TEST(AnswerShapeTest, StreamEventsOpenCarryPiecesAndClose) {
  AnswerShape chat{.chat = true, .id = "c", .created = 1, .model = "m", .echo = ""};
  const std::optional<nlohmann::json> opening = chat.Opening();
  ASSERT_TRUE(opening.has_value()) << "a chat stream opens with the role";
  EXPECT_EQ((*opening)["object"], "chat.completion.chunk");
  EXPECT_EQ((*opening)["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(chat.Piece("a")["choices"][0]["delta"], nlohmann::json({{"content", "a"}}));
  EXPECT_TRUE(chat.Piece("a")["choices"][0]["finish_reason"].is_null());
  const nlohmann::json closing = chat.Closing("length");
  EXPECT_EQ(closing["choices"][0]["delta"], nlohmann::json::object());
  EXPECT_EQ(closing["choices"][0]["finish_reason"], "length");

  AnswerShape completion{.chat = false, .id = "c", .created = 1, .model = "m", .echo = ""};
  EXPECT_FALSE(completion.Opening().has_value()) << "nothing to open with unless the prompt is echoed";
  completion.echo = "Hi";
  ASSERT_TRUE(completion.Opening().has_value());
  EXPECT_EQ((*completion.Opening())["choices"][0]["text"], "Hi");
  EXPECT_EQ(completion.Piece("a")["object"], "text_completion");
  EXPECT_EQ(completion.Closing("stop")["choices"][0]["text"], "");
  // Streamed completion logprobs count text offsets on from where the last
  // event left them.
  size_t offset = 2;
  const nlohmann::json logprobs = completion.StreamLogprobs(std::vector<engine::TokenLogprob>{Scored(5, "ab", -1.0f)}, &offset);
  EXPECT_EQ(logprobs["text_offset"], nlohmann::json({2}));
  EXPECT_EQ(offset, 4u);
}

}  // namespace
}  // namespace expertd::daemon
