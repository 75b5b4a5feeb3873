// The real daemon (`expertd serve`) on a temporary socket, driven through the
// client library and raw sockets: results, streaming, errors, concurrency,
// SIGHUP and SIGTERM.

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_models.h"

namespace expertd {
namespace {

using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;
using ::testing::HasSubstr;
using nlohmann::json;

// Sends raw bytes on a fresh connection and returns what comes back.
// Opens a connection and sends a streaming completion request; the caller
// owns (and eventually closes) the returned fd.
int StartStream(const std::string& socket_path, int max_tokens) {
  const std::string body =
      nlohmann::json{{"prompt", "hello"}, {"max_tokens", max_tokens}, {"stream", true}}.dump();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) return fd;
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  [[maybe_unused]] ssize_t sent = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  return fd;
}

std::string RawExchange(const std::string& socket_path, const std::string& bytes) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return "";
  }
  [[maybe_unused]] ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  std::string reply;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) reply.append(buffer, n);
  ::close(fd);
  return reply;
}

class Daemon : public ::testing::Test {
 protected:
  void SetUp() override {
    tools::MakeModelOptions o;
    o.layers = 2;
    o.experts = 8;
    o.top_k = 2;
    model_ = MakeTestModel(dir_, "model", o);
    socket_ = dir_.Sub("expertd.sock");
    config_ = dir_.Sub("expertd.toml");
    WriteConfig("1MiB");
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string log = dir_.Sub("daemon.log");
      FILE* out = std::freopen(log.c_str(), "w", stderr);
      (void)out;
      ::execl(EXPERTD_BINARY, EXPERTD_BINARY, "serve", "--config", config_.c_str(), "--drain-seconds", "5", nullptr);
      std::_Exit(127);
    }
    // Ready when /health answers.
    for (int i = 0; i < 300; ++i) {
      if (client().Health().ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL() << "the daemon did not come up";
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void WriteConfig(const std::string& dram_budget) {
    std::ofstream(config_) << "[server]\nsocket_path = \"" << socket_ << "\"\nmax_body = \"64KiB\"\n"
                           << "[model]\npath = \"" << model_ << "\"\n"
                           << "[cache]\ndram_budget = \"" << dram_budget << "\"\n";
  }
  client::Client client() const { return client::Client(socket_); }
  // Waits for the daemon to exit and returns its exit status.
  int WaitForExit() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  ScopedTempDir dir_{"daemon"};
  std::string model_, socket_, config_;
  pid_t pid_ = -1;
};

json Greedy(const std::string& prompt, int tokens) {
  return {{"prompt", prompt}, {"max_tokens", tokens}, {"temperature", 0}};
}

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
  const std::string command = std::string(EXPERTD_BINARY) + " run --model " + model_ +
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

  WriteConfig("2MiB");
  ::kill(pid_, SIGHUP);
  int slots_after = slots_before;
  for (int i = 0; i < 100 && slots_after == slots_before; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto stats = client().Stats();
    if (stats.ok()) slots_after = (*stats)["cache"]["dram"]["slots"];
  }
  const int slot_bytes = (*before)["cache"]["slot_bytes"];
  EXPECT_EQ(slots_before, (1 << 20) / slot_bytes);
  EXPECT_EQ(slots_after, (2 << 20) / slot_bytes);

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

}  // namespace
}  // namespace expertd
