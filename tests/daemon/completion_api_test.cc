// Request parsing details that the integration tests cannot force with a
// random model.

#include "daemon/completion_api.h"

#include <fstream>

#include "engine/chat_template.h"
#include "gtest/gtest.h"
#include "tests/testing/test_models.h"

namespace expertd {
namespace {

TEST(ChatRequestTest, SpecialEndOfTurnMarkersStopByTokenId) {
  testing::ScopedTempDir dir("completion_api");
  tools::MakeModelOptions o;
  o.arch = "qwen3_moe";  // EOS <|endoftext|>; <|im_end|> is another special token
  o.layers = 1;
  const std::string path = testing::MakeTestModel(dir, "model", o);
  auto model = Model::Load(path);
  ASSERT_TRUE(model.ok()) << model.status();
  const ChatTemplate chatml = ChatTemplate::FromJinja(
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
  const ChatTemplate plain = ChatTemplate::FromJinja("", "", "<|endoftext|>");
  ChatRequest plain_request;
  ASSERT_TRUE(ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}]})", **model, plain, "model",
                               InferenceConfig{}, &plain_request, &error))
      << error.message;
  EXPECT_TRUE(plain_request.stop_token_ids.empty());
  EXPECT_FALSE(plain_request.stop.empty());
}

}  // namespace
}  // namespace expertd
