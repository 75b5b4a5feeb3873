// The real daemon (`expertd serve`) on a temporary socket, driven through the
// client library and raw sockets: results, streaming, errors, concurrency,
// SIGHUP and SIGTERM.

#include <signal.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"
#include "tests/testing/test_models.h"

namespace expertd::integration {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

TEST_F(Daemon, ServesCompletionsThatMatchTheCli) {
  auto models = client().Models();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ((*models)["data"][0]["id"], "model");

  auto completion = client().Complete(Greedy("Once upon a time", 12));
  ASSERT_TRUE(completion.ok()) << completion.status();
  const std::string text = (*completion)["choices"][0]["text"];
  EXPECT_EQ((*completion)["usage"]["completion_tokens"], 12);

  // The same generation through `expertd run`.
  const std::string out = dir_.Sub("run.out");
  const std::string command = std::string(EXPERTD_BINARY) + " run --gpu off --model " + model_ +
                              " --prompt 'Once upon a time' -n 12 > " + out + " 2>/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::ifstream in(out);
  std::string run_output((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(run_output.substr(0, run_output.find("\nprompt:")), "Once upon a time" + text);

  // Streaming gives the same text in pieces.
  std::string streamed;
  std::string finish;
  absl::Status status = client().CompleteStream(Greedy("Once upon a time", 12), [&](const json& chunk) {
    streamed += chunk["choices"][0]["text"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null()) finish = chunk["choices"][0]["finish_reason"];
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(finish, "length");

  // dial-k changes the output; echo prepends the prompt.
  json k1 = Greedy("Once upon a time", 12);
  k1["experts_per_token"] = 1;
  k1["echo"] = true;
  auto other = client().Complete(k1);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_THAT((*other)["choices"][0]["text"].get<std::string>(), ::testing::StartsWith("Once upon a time"));

  auto stats = client().Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)["requests"]["completed"], 3);
  EXPECT_GT((*stats)["cache"]["dram"]["misses"].get<int>(), 0);
  // Each expert access once: hit, hidden (a prefetch made it ready) or miss.
  const json& dram = (*stats)["cache"]["dram"];
  EXPECT_EQ(dram["hits"].get<uint64_t>() + dram["hidden"].get<uint64_t>() + dram["misses"].get<uint64_t>(),
            dram["accesses"].get<uint64_t>());
  EXPECT_NEAR(dram["hit_rate"].get<double>() + dram["hidden_rate"].get<double>() + dram["miss_rate"].get<double>(),
              1.0, 1e-9);
  // The fixture's config prefetches with a measured budget, shown with what it comes from.
  EXPECT_GE((*stats)["prefetch"]["budget_per_layer"].get<int>(), 1);
  EXPECT_EQ((*stats)["prefetch"]["budget"], "measured");
  EXPECT_EQ((*stats)["model"]["runs_on"], "cpu") << "[device] gpu = \"off\"";
  // Which SIMD target the CPU kernels dispatched to: decode speed depends on it.
  EXPECT_THAT((*stats)["cpu"]["simd_target"].get<std::string>(), ::testing::MatchesRegex("[A-Z0-9_]+"));
  EXPECT_FALSE((*stats)["cpu"]["bf16_activations"].get<bool>()) << "off unless the config asks";
  EXPECT_GE((*stats)["cpu"]["threads"].get<int>(), 1);
}

// OpenAI's fields as its clients send them: the usage event of a stream,
// the model list's fields, logit_bias and the penalties.
TEST_F(Daemon, StreamUsageModelFieldsAndLogitAdjustments) {
  auto models = client().Models();
  ASSERT_TRUE(models.ok()) << models.status();
  const json& entry = (*models)["data"][0];
  EXPECT_EQ(entry["object"], "model");
  EXPECT_GT(entry["created"].get<int64_t>(), 1700000000);
  EXPECT_EQ(entry["owned_by"], "expertd");

  auto whole = client().Complete(Greedy("Once upon a time", 10));
  ASSERT_TRUE(whole.ok()) << whole.status();
  json request = Greedy("Once upon a time", 10);
  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  std::vector<json> chunks;
  absl::Status status = client().CompleteStream(request, [&](const json& chunk) { chunks.push_back(chunk); });
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_GE(chunks.size(), 2u);
  // The last event carries the usage and no choices; every other one a choice.
  const json& last = chunks.back();
  EXPECT_TRUE(last["choices"].empty()) << last.dump();
  EXPECT_EQ(last["usage"], (*whole)["usage"]);
  std::string streamed;
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    ASSERT_EQ(chunks[i]["choices"].size(), 1u) << chunks[i].dump();
    EXPECT_FALSE(chunks[i].contains("usage")) << chunks[i].dump();
    streamed += chunks[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(streamed, (*whole)["choices"][0]["text"]);
  // Without stream_options, no usage event.
  request.erase("stream_options");
  chunks.clear();
  ASSERT_TRUE(client().CompleteStream(request, [&](const json& chunk) { chunks.push_back(chunk); }).ok());
  for (const json& chunk : chunks) EXPECT_EQ(chunk["choices"].size(), 1u) << chunk.dump();

  // A bias of 100 on one token makes greedy decoding repeat it; one of
  // -100 bans it, so the next-biased token takes its place.
  auto biased_tokens = [&](const json& bias) {
    json biased = Greedy("Once upon a time", 6);
    biased["logit_bias"] = bias;
    biased["logprobs"] = 0;
    auto answer = client().Complete(biased);
    EXPECT_TRUE(answer.ok()) << answer.status();
    return answer.ok() ? (*answer)["choices"][0]["logprobs"]["tokens"] : json::array();
  };
  const json forced = biased_tokens({{"65", 100}, {"66", 50}});
  const json banned = biased_tokens({{"65", -100}, {"66", 50}});
  ASSERT_EQ(forced.size(), 6u);
  ASSERT_EQ(banned.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(forced[i], forced[0]);
    EXPECT_EQ(banned[i], banned[0]);
  }
  EXPECT_NE(forced[0], banned[0]);

  // Penalties are accepted at their bounds and refused beyond them.
  json penalised = Greedy("Once upon a time", 8);
  penalised["presence_penalty"] = 2;
  penalised["frequency_penalty"] = -2;
  EXPECT_TRUE(client().Complete(penalised).ok());
  penalised["presence_penalty"] = 2.5;
  EXPECT_EQ(client::HttpStatusOf(client().Complete(penalised).status()), 400);
}

// n choices per prompt and lists of prompts: choice p * n + i is prompt
// p's i-th, sampled with seed + i, the same as that request on its own;
// streamed, each event names its choice.
TEST_F(Daemon, SeveralChoicesAndPromptsAreIndependentGenerations) {
  auto single = [&](const json& prompt, uint64_t seed) {
    json request = {{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 1.0}, {"seed", seed}};
    auto answer = client().Complete(request);
    EXPECT_TRUE(answer.ok()) << answer.status();
    return answer.ok() ? std::pair{(*answer)["choices"][0]["text"].get<std::string>(),
                                   (*answer)["usage"]["prompt_tokens"].get<int>()}
                       : std::pair{std::string(), 0};
  };
  const json prompts = {"Once upon a time", "The end"};
  json request = {{"prompt", prompts}, {"n", 3}, {"max_tokens", 6}, {"temperature", 1.0}, {"seed", 5}};
  auto answer = client().Complete(request);
  ASSERT_TRUE(answer.ok()) << answer.status();
  const json& choices = (*answer)["choices"];
  ASSERT_EQ(choices.size(), 6u);
  int prompt_tokens = 0;
  for (int p = 0; p < 2; ++p) {
    for (int i = 0; i < 3; ++i) {
      const json& choice = choices[p * 3 + i];
      EXPECT_EQ(choice["index"], p * 3 + i);
      const auto [text, tokens] = single(prompts[p], 5 + i);
      EXPECT_EQ(choice["text"], text) << "prompt " << p << ", choice " << i;
      if (i == 0) prompt_tokens += tokens;
    }
  }
  EXPECT_EQ((*answer)["usage"]["prompt_tokens"], prompt_tokens) << "each prompt counts once, not once per choice";
  EXPECT_EQ((*answer)["usage"]["completion_tokens"], 36);

  // Streamed: the same texts, assembled by choice index; the usage event
  // sums them all.
  request["stream"] = true;
  request["stream_options"] = {{"include_usage", true}};
  std::map<int, std::string> streamed;
  std::map<int, std::string> finish;
  json usage;
  absl::Status status = client().CompleteStream(request, [&](const json& chunk) {
    if (chunk.contains("usage")) usage = chunk["usage"];
    for (const json& choice : chunk["choices"]) {
      streamed[choice["index"].get<int>()] += choice["text"].get<std::string>();
      if (!choice["finish_reason"].is_null()) finish[choice["index"].get<int>()] = choice["finish_reason"];
    }
  });
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(streamed.size(), 6u);
  ASSERT_EQ(finish.size(), 6u) << "every choice closes with its finish reason";
  for (int c = 0; c < 6; ++c) EXPECT_EQ(streamed[c], choices[c]["text"]) << "choice " << c;
  EXPECT_EQ(usage, (*answer)["usage"]);

  // Chat takes n too; more than 16 choices in all is a 400 naming n.
  json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"n", 2}, {"max_tokens", 3}};
  auto chat_answer = client().ChatComplete(chat);
  ASSERT_TRUE(chat_answer.ok()) << chat_answer.status();
  EXPECT_EQ((*chat_answer)["choices"].size(), 2u);
  EXPECT_EQ((*chat_answer)["choices"][1]["index"], 1);
  request.erase("stream");
  request["n"] = 9;
  EXPECT_EQ(client::HttpStatusOf(client().Complete(request).status()), 400);
}

TEST_F(Daemon, BadRequestsGetClearErrorsAndTheDaemonKeepsServing) {
  struct Case {
    json request;
    int http_status;
    std::string param;
  };
  const std::vector<Case> cases = {
      {{{"max_tokens", 4}}, 400, "prompt"},
      {{{"prompt", "hi"}, {"max_tokens", "many"}}, 400, "max_tokens"},
      {{{"prompt", "hi"}, {"experts_per_token", 9}}, 400, "experts_per_token"},
      {{{"prompt", "hi"}, {"experts_per_token", 0}}, 400, "experts_per_token"},
      {{{"prompt", "hi"}, {"temperature", -1}}, 400, "temperature"},
      {{{"prompt", "hi"}, {"top_p", 0}}, 400, "top_p"},
      {{{"prompt", "hi"}, {"model", "gpt-4"}}, 404, "model"},
      {{{"prompt", "hi"}, {"roster", {{"size", 0}}}}, 400, "roster.size"},
      {{{"prompt", "hi"}, {"max_tokens", 100000}}, 400, "max_tokens"},
  };
  for (const Case& c : cases) {
    auto result = client().Complete(c.request);
    ASSERT_FALSE(result.ok()) << c.request.dump();
    EXPECT_EQ(client::HttpStatusOf(result.status()), c.http_status) << c.request.dump();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(c.param)) << c.request.dump();
  }
  // Malformed JSON, malformed HTTP, an oversized body, unknown endpoints.
  EXPECT_THAT(RawExchange(socket_, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{oops"),
              HasSubstr("400 Bad Request"));
  EXPECT_THAT(RawExchange(socket_, "GARBAGE\r\n\r\n"), HasSubstr("400"));
  const std::string big(100 * 1024, 'x');
  EXPECT_THAT(RawExchange(socket_, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                       std::to_string(big.size()) + "\r\n\r\n" + big),
              HasSubstr("413"));
  EXPECT_THAT(RawExchange(socket_, "GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n"), HasSubstr("404 Not Found"));
  EXPECT_THAT(RawExchange(socket_, "DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n"), HasSubstr("405"));
  EXPECT_TRUE(client().Complete(Greedy("still here", 3)).ok());
}

TEST_F(Daemon, ManyClientsAtOnceAllGetTheRightAnswer) {
  auto reference = client().Complete(Greedy("The answer is", 6));
  ASSERT_TRUE(reference.ok());
  const std::string expected = (*reference)["choices"][0]["text"];
  std::atomic<int> correct{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 16; ++c) {
    clients.emplace_back([&] {
      for (int r = 0; r < 2; ++r) {
        auto result = client().Complete(Greedy("The answer is", 6));
        if (result.ok() && (*result)["choices"][0]["text"] == expected) ++correct;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(correct.load(), 32);
  // 16 clients at once share decode steps (continuous batching).
  auto stats = client().Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_GT((*stats)["batching"]["batched_steps"].get<int>(), 0) << stats->dump();
}

TEST_F(Daemon, ADisconnectMidStreamDoesNotHurt) {
  // Ask for a long stream and hang up after the headers.
  const int fd = StartStream(socket_, 500);
  char buffer[256];
  ASSERT_GT(::recv(fd, buffer, sizeof(buffer), 0), 0);
  ::close(fd);
  const auto start = std::chrono::steady_clock::now();
  auto after = client().Complete(Greedy("next", 3));
  EXPECT_TRUE(after.ok()) << after.status();
  // The abandoned generation was cancelled rather than run to 500 tokens.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST_F(Daemon, SighupResizesAndSigtermDrainsAndExitsCleanly) {
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  auto before = client().Stats();
  ASSERT_TRUE(before.ok());
  const int slots_before = (*before)["cache"]["dram"]["slots"];

  // The fixture's 1 MiB holds every expert of the test model (16 of 24 KiB),
  // so the cache was capped at what they take; a reload to 256 KiB shrinks it.
  WriteConfig("256KiB");
  ::kill(pid_, SIGHUP);
  int slots_after = slots_before;
  for (int i = 0; i < 100 && slots_after == slots_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto stats = client().Stats();
    if (stats.ok()) slots_after = (*stats)["cache"]["dram"]["slots"];
  }
  const int slot_bytes = (*before)["cache"]["slot_bytes"];
  // The packed types: the test model's f32 experts, packed as they are.
  EXPECT_EQ((*before)["cache"]["expert_dtypes"].get<std::string>(), "f32 x 16");
  EXPECT_EQ(slots_before, 16) << "every expert, not (1 MiB / slot) slots";
  EXPECT_EQ(slots_after, (256 << 10) / slot_bytes);

  // A request in flight when SIGTERM arrives still completes.
  std::thread in_flight([&] {
    auto result = client().Complete(Greedy("finish me", 40));
    EXPECT_TRUE(result.ok()) << result.status();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::kill(pid_, SIGTERM);
  in_flight.join();
  EXPECT_EQ(WaitForExit(), 0);
  EXPECT_NE(::access(socket_.c_str(), F_OK), 0) << "the socket file is removed on exit";
}

// --- /v1/chat/completions -----------------------------------------------------

json GreedyChat(const json& messages, int tokens) {
  return {{"messages", messages}, {"max_tokens", tokens}, {"temperature", 0}};
}

// Asks for the same generation as chat and as a completion of the prompt the
// chat renders to (with the stop strings the chat template adds), and checks
// they agree, streamed and not.
void ExpectChatMatchesCompletion(const client::Client& client, const json& messages, const std::string& rendered,
                                 const json& template_stops) {
  auto chat = client.ChatComplete(GreedyChat(messages, 12));
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_THAT((*chat)["id"].get<std::string>(), ::testing::StartsWith("chatcmpl-"));
  EXPECT_EQ((*chat)["object"], "chat.completion");
  EXPECT_EQ((*chat)["model"], "model");
  EXPECT_TRUE((*chat)["created"].is_number_integer());
  const json& choice = (*chat)["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_TRUE(choice["logprobs"].is_null());
  const std::string content = choice["message"]["content"];
  const json& usage = (*chat)["usage"];
  EXPECT_EQ(usage["total_tokens"], usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());

  json completion_request = Greedy(rendered, 12);
  completion_request["stop"] = template_stops;
  auto completion = client.Complete(completion_request);
  ASSERT_TRUE(completion.ok()) << completion.status();
  EXPECT_EQ(content, (*completion)["choices"][0]["text"]);
  EXPECT_EQ(choice["finish_reason"], (*completion)["choices"][0]["finish_reason"]);
  EXPECT_EQ(usage, (*completion)["usage"]);

  std::vector<json> chunks;
  absl::Status streamed = client.ChatCompleteStream(GreedyChat(messages, 12), [&](const json& c) { chunks.push_back(c); });
  ASSERT_TRUE(streamed.ok()) << streamed;
  ASSERT_GE(chunks.size(), 2u);
  EXPECT_EQ(chunks.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_NE(chunks.front()["id"], (*chat)["id"]) << "every answer has its own id";
  std::string text;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const json& c = chunks[i];
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    EXPECT_EQ(c["id"], chunks.front()["id"]);
    const json& delta = c["choices"][0]["delta"];
    if (delta.contains("content")) text += delta["content"].get<std::string>();
    // Only the last chunk says why the answer ended.
    EXPECT_EQ(c["choices"][0]["finish_reason"].is_null(), i + 1 < chunks.size()) << c.dump();
  }
  EXPECT_EQ(text, content);
  EXPECT_EQ(chunks.back()["choices"][0]["finish_reason"], choice["finish_reason"]);
}

TEST_F(Daemon, ChatWithoutATemplateUsesThePlainTranscript) {
  ExpectChatMatchesCompletion(client(), {{{"role", "system"}, {"content", "Be brief."}},
                                         {{"role", "user"}, {"content", "Once upon a time"}},
                                         {{"role", "assistant"}, {"content", "there was"}},
                                         {{"role", "user"}, {"content", "a cat"}}},
                              "System: Be brief.\nUser: Once upon a time\nAssistant: there was\nUser: a cat\nAssistant:",
                              {"\nUser:", "\nSystem:"});
  // Chat shares the completions' options: dial-k changes the answer's route.
  json k1 = GreedyChat({{{"role", "user"}, {"content", "hello"}}}, 4);
  k1["experts_per_token"] = 1;
  k1["seed"] = 7;
  k1["stop"] = "zzz";
  EXPECT_TRUE(client().ChatComplete(k1).ok());
}

class ChatMlDaemon : public Daemon {
 protected:
  ChatMlDaemon() {
    arch_ = "qwen3_moe";
    chat_template_ =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  }
};

TEST_F(ChatMlDaemon, ChatRendersTheModelsTemplate) {
  ExpectChatMatchesCompletion(client(), {{{"role", "system"}, {"content", "Be brief."}},
                                         {{"role", "user"}, {"content", "Once upon a time"}}},
                              "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nOnce upon a time<|im_end|>\n"
                              "<|im_start|>assistant\n",
                              {"<|im_end|>"});
}

// Mixtral's rule about roles and Qwen3's thinking switch, in one template.
class RuleTemplateDaemon : public Daemon {
 protected:
  RuleTemplateDaemon() {
    chat_template_ =
        "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{{ '[' + m.role + '] ' + m.content + '\\n' }}{% endfor %}{% if add_generation_prompt %}[assistant]"
        "{% if enable_thinking is defined and not enable_thinking %} (no thinking){% endif %}{% endif %}";
  }
};

TEST_F(RuleTemplateDaemon, TheTemplatesOptionsAndRulesReachTheClient) {
  const json user = {{"role", "user"}, {"content", "Once upon a time"}};
  ExpectChatMatchesCompletion(client(), json::array({user}), "[user] Once upon a time\n[assistant]", json::array());
  json no_thinking = GreedyChat(json::array({user}), 3);
  no_thinking["chat_template_kwargs"] = {{"enable_thinking", false}};
  json no_prompt = GreedyChat(json::array({user}), 3);
  no_prompt["add_generation_prompt"] = false;
  auto plain = client().ChatComplete(GreedyChat(json::array({user}), 3));
  auto longer = client().ChatComplete(no_thinking);
  auto shorter = client().ChatComplete(no_prompt);
  ASSERT_TRUE(plain.ok() && longer.ok() && shorter.ok());
  const int prompt_tokens = (*plain)["usage"]["prompt_tokens"];
  EXPECT_GT((*longer)["usage"]["prompt_tokens"].get<int>(), prompt_tokens);
  EXPECT_LT((*shorter)["usage"]["prompt_tokens"].get<int>(), prompt_tokens);

  auto refused = client().ChatComplete(GreedyChat(json::array({user, user}), 3));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(client::HttpStatusOf(refused.status()), 400);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("Conversation roles must alternate user/assistant/user/assistant/..."));
}

TEST_F(Daemon, BadChatRequestsNameTheFieldAndTheDaemonKeepsServing) {
  struct Case {
    json request;
    int http_status;
    std::string param;
  };
  const json user = {{"role", "user"}, {"content", "hi"}};
  const std::vector<Case> cases = {
      {{{"max_tokens", 4}}, 400, "messages"},
      {{{"messages", json::array()}}, 400, "messages"},
      {{{"messages", "hi"}}, 400, "messages"},
      {{{"messages", {"hi"}}}, 400, "messages[0]"},
      {{{"messages", {{{"content", "hi"}}}}}, 400, "messages[0].role"},
      {{{"messages", {{{"role", 3}, {"content", "hi"}}}}}, 400, "messages[0].role"},
      {{{"messages", json::array({user, {{"role", "tool"}, {"content", "42"}}})}}, 400, "messages[1].role"},
      {{{"messages", {{{"role", "user"}, {"content", 42}}}}}, 400, "messages[0].content"},
      {{{"messages", json::array({user, {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi"}}}}}})}}, 400,
       "messages[1].content"},
      {{{"messages", {{{"role", "user"}}}}}, 400, "messages[0].content"},
      {{{"messages", json::array({user})}, {"max_tokens", "many"}}, 400, "max_tokens"},
      {{{"messages", json::array({user})}, {"max_completion_tokens", -1}}, 400, "max_completion_tokens"},
      {{{"messages", json::array({user})}, {"temperature", -1}}, 400, "temperature"},
      {{{"messages", json::array({user})}, {"experts_per_token", 9}}, 400, "experts_per_token"},
      {{{"messages", json::array({user})}, {"stop", {1}}}, 400, "stop"},
      {{{"messages", json::array({user})}, {"roster", {{"size", 0}}}}, 400, "roster.size"},
      {{{"messages", json::array({user})}, {"model", "gpt-4"}}, 404, "model"},
      {{{"messages", json::array({user})}, {"logprobs", "yes"}}, 400, "logprobs"},
      {{{"messages", json::array({user})}, {"top_logprobs", 2}}, 400, "top_logprobs"},
  };
  for (const Case& c : cases) {
    auto result = client().ChatComplete(c.request);
    ASSERT_FALSE(result.ok()) << c.request.dump();
    EXPECT_EQ(client::HttpStatusOf(result.status()), c.http_status) << c.request.dump();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr("field '" + c.param + "'")) << c.request.dump();
  }
  // Streaming requests are validated before the stream starts.
  absl::Status stream = client().ChatCompleteStream({{"messages", json::array()}}, [](const json&) {});
  EXPECT_EQ(client::HttpStatusOf(stream), 400);
  EXPECT_THAT(RawExchange(socket_, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{oops"),
              HasSubstr("400 Bad Request"));
  EXPECT_THAT(RawExchange(socket_, "GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n"), HasSubstr("405"));
  auto after = client().ChatComplete(GreedyChat(json::array({user}), 3));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ((*after)["usage"]["completion_tokens"], 3);
  // Without max_tokens a chat may run to the end of its turn, capped by the
  // daemon's inference.max_tokens; this model seldom emits EOS, so ask for a
  // short one via max_completion_tokens instead.
  json short_answer = {{"messages", json::array({user})}, {"max_completion_tokens", 2}};
  auto two = client().ChatComplete(short_answer);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ((*two)["usage"]["completion_tokens"], 2);
}

std::string RunCommand(const std::string& command, int* exit_code) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

TEST_F(Daemon, ExpertctlChatPrintsTheAnswer) {
  auto chat = client().ChatComplete(GreedyChat({{{"role", "user"}, {"content", "Tell me a story"}}}, 10));
  ASSERT_TRUE(chat.ok()) << chat.status();
  const std::string answer = (*chat)["choices"][0]["message"]["content"];
  const std::string command = std::string(EXPERTCTL_BINARY) + " --socket " + socket_ +
                              " chat --prompt 'Tell me a story' -n 10 --temperature 0";
  int exit_code = -1;
  EXPECT_EQ(RunCommand(command + " 2>/dev/null", &exit_code), answer + "\n");
  EXPECT_EQ(exit_code, 0);
  EXPECT_EQ(RunCommand(command + " --no-stream 2>/dev/null", &exit_code), answer + "\n");
  EXPECT_EQ(exit_code, 0);
  // A daemon error reaches the user on stderr with exit code 1.
  const std::string bad = std::string(EXPERTCTL_BINARY) + " --socket " + socket_ + " chat --prompt hi --k 99 2>&1";
  EXPECT_THAT(RunCommand(bad, &exit_code), HasSubstr("experts_per_token"));
  EXPECT_EQ(exit_code, 1);
}

// A conversation: --system first, the turns of --messages, then --prompt.
TEST_F(Daemon, ExpertctlChatSendsSystemAndEarlierTurns) {
  const json turns = {{{"role", "user"}, {"content", "Hello"}}, {{"role", "assistant"}, {"content", "Hi there."}}};
  const std::string turns_file = dir_.Sub("turns.json");
  std::ofstream(turns_file) << turns.dump();
  json messages = json::array({{{"role", "system"}, {"content", "Be brief."}}});
  for (const json& turn : turns) messages.push_back(turn);
  messages.push_back({{"role", "user"}, {"content", "Tell me a story"}});
  auto chat = client().ChatComplete(GreedyChat(messages, 10));
  ASSERT_TRUE(chat.ok()) << chat.status();
  const std::string base = std::string(EXPERTCTL_BINARY) + " --socket " + socket_ + " chat -n 10 --temperature 0";
  int exit_code = -1;
  EXPECT_EQ(RunCommand(base + " --system 'Be brief.' --messages " + turns_file +
                           " --prompt 'Tell me a story' 2>/dev/null",
                       &exit_code),
            (*chat)["choices"][0]["message"]["content"].get<std::string>() + "\n");
  EXPECT_EQ(exit_code, 0);
  // Without --prompt the file's turns are the whole conversation; with
  // neither, a clear error.
  EXPECT_EQ(RunCommand(base + " --messages " + turns_file + " >/dev/null 2>&1", &exit_code), "");
  EXPECT_EQ(exit_code, 0);
  EXPECT_THAT(RunCommand(base + " 2>&1", &exit_code), HasSubstr("--prompt, --messages"));
  EXPECT_EQ(exit_code, 1);
  std::ofstream(dir_.Sub("bad.json")) << "{\"role\": \"user\"}";
  EXPECT_THAT(RunCommand(base + " --messages " + dir_.Sub("bad.json") + " 2>&1", &exit_code), HasSubstr("JSON list"));
  EXPECT_EQ(exit_code, 1);
}

TEST_F(Daemon, ExpertctlSendsTheRoster) {
  const std::string base = std::string(EXPERTCTL_BINARY) + " --socket " + socket_ +
                           " generate --prompt 'Once upon a time' -n 8 --temperature 0";
  int exit_code = -1;
  const std::string plain = RunCommand(base + " 2>&1", &exit_code);
  ASSERT_EQ(exit_code, 0) << plain;
  EXPECT_EQ(RunCommand(base + " --roster 4 --roster-temperature 0 2>&1", &exit_code), plain);
  EXPECT_EQ(exit_code, 0);
  RunCommand(base + " --roster 4 --roster-temperature 0.5 --roster-seed 9 2>&1", &exit_code);
  EXPECT_EQ(exit_code, 0);
  auto stats = client().Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)["requests"]["roster"], 2);
  EXPECT_THAT(RunCommand(base + " --roster 99 2>&1", &exit_code), HasSubstr("roster.size"));
  EXPECT_EQ(exit_code, 1);
}

// --- logprobs, Roster of Experts, continuous batching, back-pressure --------

TEST_F(Daemon, EchoLogprobsGiveTheCliPerplexity) {
  const std::string text = "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst.";
  std::ofstream(dir_.Sub("ppl.txt")) << text;
  int exit_code = -1;
  const std::string out = RunCommand(std::string(EXPERTD_BINARY) + " perplexity --gpu off --model " + model_ +
                                         " --text-file " + dir_.Sub("ppl.txt") + " --ctx 1024 2>/dev/null",
                                     &exit_code);
  ASSERT_EQ(exit_code, 0) << out;
  const double cli = std::stod(out.substr(out.find("perplexity: ") + 12));

  auto scored = client().Complete({{"prompt", text}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 0}});
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_EQ((*scored)["choices"][0]["text"], text);
  const json& logprobs = (*scored)["choices"][0]["logprobs"];
  ASSERT_TRUE(logprobs["token_logprobs"][0].is_null()) << "nothing predicts the first token";
  double nll = 0;
  std::string joined = logprobs["tokens"][0];
  for (size_t i = 1; i < logprobs["token_logprobs"].size(); ++i) {
    nll -= logprobs["token_logprobs"][i].get<double>();
    joined += logprobs["tokens"][i].get<std::string>();
    EXPECT_EQ(logprobs["text_offset"][i], joined.size() - logprobs["tokens"][i].get<std::string>().size());
  }
  EXPECT_EQ(joined, text);
  const double served = std::exp(nll / static_cast<double>(logprobs["token_logprobs"].size() - 1));
  EXPECT_NEAR(served, cli, 1e-3 * cli);
}

TEST_F(Daemon, LogprobsOfGreedyTokensAreTheTopChoices) {
  json request = Greedy("Once upon a time", 8);
  request["logprobs"] = 3;
  request["ignore_eos"] = true;
  auto whole = client().Complete(request);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const json& logprobs = (*whole)["choices"][0]["logprobs"];
  ASSERT_EQ(logprobs["token_logprobs"].size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    const double chosen = logprobs["token_logprobs"][i];
    EXPECT_LE(chosen, 0.0);
    const json& top = logprobs["top_logprobs"][i];
    ASSERT_EQ(top.size(), 3u);
    double best = -1e30;
    for (const auto& [token, value] : top.items()) best = std::max(best, value.get<double>());
    EXPECT_DOUBLE_EQ(best, chosen) << "greedy takes the most likely token";
  }
  // Streamed events carry the same logprobs, spread over the chunks.
  request["stream"] = true;
  json streamed = json::array();
  ASSERT_TRUE(client()
                  .CompleteStream(request,
                                  [&](const json& chunk) {
                                    const json& lp = chunk["choices"][0]["logprobs"];
                                    if (lp.is_null()) return;
                                    for (const json& v : lp["token_logprobs"]) streamed.push_back(v);
                                  })
                  .ok());
  EXPECT_EQ(streamed, logprobs["token_logprobs"]);
  // A streamed echo opens with the prompt and the prompt's logprobs.
  json echoed = Greedy("Once upon a time", 2);
  echoed["echo"] = true;
  echoed["logprobs"] = 0;
  echoed["stream"] = true;
  json first_event;
  ASSERT_TRUE(client()
                  .CompleteStream(echoed,
                                  [&](const json& chunk) {
                                    if (first_event.is_null()) first_event = chunk;
                                  })
                  .ok());
  EXPECT_EQ(first_event["choices"][0]["text"], "Once upon a time");
  std::string prompt_tokens;
  for (const json& t : first_event["choices"][0]["logprobs"]["tokens"]) prompt_tokens += t.get<std::string>();
  EXPECT_EQ(prompt_tokens, "Once upon a time");
  // Chat has its own shape.
  json chat = {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
               {"max_tokens", 4}, {"temperature", 0}, {"logprobs", true}, {"top_logprobs", 2}, {"ignore_eos", true}};
  auto answer = client().ChatComplete(chat);
  ASSERT_TRUE(answer.ok()) << answer.status();
  const json& content = (*answer)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  EXPECT_EQ(content[0]["top_logprobs"].size(), 2u);
  EXPECT_DOUBLE_EQ(content[0]["top_logprobs"][0]["logprob"].get<double>(), content[0]["logprob"].get<double>());
  // Bad values name the field.
  json bad = Greedy("x", 2);
  bad["logprobs"] = 21;
  EXPECT_EQ(client::HttpStatusOf(client().Complete(bad).status()), 400);
  chat["top_logprobs"] = -1;
  EXPECT_THAT(std::string(client().ChatComplete(chat).status().message()), HasSubstr("top_logprobs"));
}

TEST_F(Daemon, RosterRequestsAreServedAndReportTheirCost) {
  auto plain = client().Complete(Greedy("Once upon a time", 10));
  ASSERT_TRUE(plain.ok()) << plain.status();
  // tau = 0: every sample is the plain model, so greedy text is unchanged.
  json cold = Greedy("Once upon a time", 10);
  cold["roster"] = {{"size", 4}, {"temperature", 0}};
  auto same = client().Complete(cold);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ((*same)["choices"][0]["text"], (*plain)["choices"][0]["text"]);
  EXPECT_EQ((*same)["expertd"]["roster"]["samples"], 4);
  EXPECT_GT((*same)["expertd"]["roster"]["extra_compute"].get<double>(), 1.0);

  json hot = Greedy("Once upon a time", 10);
  hot["ignore_eos"] = true;
  hot["roster"] = {{"size", 8}, {"temperature", 1.0}, {"seed", 3}};
  auto first = client().Complete(hot);
  auto again = client().Complete(hot);
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ((*first)["choices"][0]["text"], (*again)["choices"][0]["text"]) << "same seed, same output";
  // 2 MoE layers x top-2 = 4 experts per token for one sample; noisy
  // samples add more.
  EXPECT_GT((*first)["expertd"]["roster"]["distinct_experts_per_token"].get<double>(), 4.0);

  struct Case {
    json roster;
    std::string param;
  };
  for (const Case& c : std::vector<Case>{{{{"size", 33}}, "roster.size"},
                                         {{{"temperature", 0.3}}, "roster.size"},
                                         {{{"size", 2}, {"temperature", -1}}, "roster.temperature"},
                                         {{{"size", 2}, {"layer_temperatures", {0.1}}}, "roster.layer_temperatures"},
                                         {{{"size", 2}, {"seed", "x"}}, "roster.seed"}}) {
    json request = Greedy("x", 2);
    request["roster"] = c.roster;
    auto result = client().Complete(request);
    EXPECT_EQ(client::HttpStatusOf(result.status()), 400) << c.roster.dump();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(c.param)) << c.roster.dump();
  }
  auto stats = client().Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)["requests"]["roster"], 3);
}

TEST_F(Daemon, ConcurrentRequestsShareDecodeSteps) {
  // A long stream is running; a second request joins its decode steps.
  const int fd = StartStream(socket_, 1000, /*ignore_eos=*/true);
  AwaitFirstEvent(fd);
  json request = Greedy("The answer is", 8);
  request["ignore_eos"] = true;
  auto result = client().Complete(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ((*result)["usage"]["completion_tokens"], 8);
  ::close(fd);
  auto stats = client().Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_GE((*stats)["batching"]["batched_steps"].get<int>(), 7) << stats->dump();
  EXPECT_GE((*stats)["batching"]["largest_batch"].get<int>(), 2);
  // Batching does not change what a request gets.
  auto alone = client().Complete(request);
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ((*alone)["choices"][0]["text"], (*result)["choices"][0]["text"]);
}

// One request at a time and a queue of one: the third concurrent request is
// refused with 503, and serving goes on.
class BusyDaemon : public Daemon {
 protected:
  void SetUp() override {
    server_extra_ = "max_queued_requests = 1\n";
    inference_extra_ = "max_batch = 1\n";
    Daemon::SetUp();
  }
};

TEST_F(BusyDaemon, AFullQueueAnswers503AndServingResumes) {
  const int running = StartStream(socket_, 1000, /*ignore_eos=*/true);
  AwaitFirstEvent(running);
  std::thread queued([&] {
    auto result = client().Complete(Greedy("queued", 3));
    EXPECT_TRUE(result.ok()) << result.status();
  });
  bool in_queue = false;
  for (int i = 0; i < 500 && !in_queue; ++i) {
    auto stats = client().Stats();
    in_queue = stats.ok() && (*stats)["requests"]["queued"] == 1;
    if (!in_queue) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(in_queue);
  auto refused = client().Complete(Greedy("refused", 3));
  EXPECT_EQ(client::HttpStatusOf(refused.status()), 503);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("too many requests queued"));
  ::close(running);  // the long stream is cancelled; the queued request runs
  queued.join();
  EXPECT_TRUE(client().Complete(Greedy("after", 3)).ok());
  auto stats = client().Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ((*stats)["requests"]["rejected"], 1);
}

// Short read timeout and the socket given to our own group.
class SlowClientDaemon : public Daemon {
 protected:
  void SetUp() override {
    const group* g = ::getgrgid(::getegid());
    ASSERT_NE(g, nullptr);
    group_name_ = g->gr_name;
    server_extra_ = "read_timeout_ms = 300\nsocket_group = \"" + group_name_ + "\"\n";
    Daemon::SetUp();
  }
  std::string group_name_;
};

TEST_F(SlowClientDaemon, SlowClientsAreDroppedAndDoNotHoldUpOthers) {
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, ::getegid()) << "server.socket_group " << group_name_;

  // A client that sends half a request and stalls...
  const int stalled = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::connect(stalled, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string half = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro";
  ASSERT_GT(::send(stalled, half.data(), half.size(), MSG_NOSIGNAL), 0);
  // ...and one that asks for a long stream and never reads it.
  const int deaf = StartStream(socket_, 1000, /*ignore_eos=*/true);
  // Others are served meanwhile.
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(client().Complete(Greedy("meanwhile", 4)).ok());
  // The stalled client is disconnected after the read timeout.
  const auto start = std::chrono::steady_clock::now();
  char buffer[256];
  ssize_t n;
  while ((n = ::recv(stalled, buffer, sizeof(buffer), 0)) > 0) {
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  ::close(stalled);
  ::close(deaf);
  EXPECT_TRUE(client().Complete(Greedy("after", 4)).ok());
}

}  // namespace
}  // namespace expertd::integration
