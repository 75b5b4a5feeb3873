#ifndef EXPERTD_TESTS_INTEGRATION_DAEMON_FIXTURE_H_
#define EXPERTD_TESTS_INTEGRATION_DAEMON_FIXTURE_H_

// The real daemon (`expertd serve`) on a temporary socket, for the
// integration tests: a fixture that starts it on a small generated model,
// and raw-socket helpers.

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "client/client.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/test_models.h"

namespace expertd::integration {

using ::expertd::testing::MakeTestModel;
using ::expertd::testing::ScopedTempDir;

// A connection to the Unix socket at socket_path; -1 when it cannot connect.
inline int ConnectTo(const std::string& socket_path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Opens a connection and sends a streaming completion request; the caller
// owns (and eventually closes) the returned fd. With ignore_eos the stream
// runs to max_tokens, however soon the model would end it.
inline int StartStream(const std::string& socket_path, int max_tokens, bool ignore_eos = false) {
  const std::string body =
      nlohmann::json{{"prompt", "hello"}, {"max_tokens", max_tokens}, {"stream", true}, {"ignore_eos", ignore_eos}}
          .dump();
  const int fd = ConnectTo(socket_path);
  if (fd < 0) return fd;
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  [[maybe_unused]] ssize_t sent = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  return fd;
}

// Sends raw bytes on a fresh connection, shuts its writing side, and
// returns what comes back.
inline std::string RawExchange(const std::string& socket_path, const std::string& bytes) {
  const int fd = ConnectTo(socket_path);
  if (fd < 0) return "";
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
    o.arch = arch_;
    o.layers = 2;
    o.experts = 8;
    o.top_k = 2;
    model_ = MakeTestModel(dir_, "model", o);
    if (!chat_template_.empty()) {
      const std::string path = model_ + "/tokenizer_config.json";
      nlohmann::json tokenizer_config = nlohmann::json::parse(std::ifstream(path));
      tokenizer_config["chat_template"] = chat_template_;
      std::ofstream(path) << tokenizer_config.dump(2);
    }
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
                           << server_extra_ << "[model]\npath = \"" << model_ << "\"\n"
                           << "[cache]\ndram_budget = \"" << dram_budget << "\"\n"
                           // What the prefetcher figures below need (the default, auto, is none on a CPU).
                           << "[prefetch]\nkind = \"cross-layer\"\n"
                           << "[inference]\n" << inference_extra_
                           // The CPU even on a GPU machine: these tests compare with the CLI bit for bit.
                           << "[device]\ngpu = \"off\"\n";
  }
  client::Client client() const { return client::Client(socket_); }
  // Waits for the daemon to exit and returns its exit status.
  int WaitForExit() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Set by fixtures below before SetUp: the model's architecture and the
  // chat_template its tokenizer_config.json carries ("" = none).
  std::string arch_ = "olmoe";
  std::string chat_template_;
  // Extra lines for the config's [server] and [inference] sections.
  std::string server_extra_, inference_extra_;
  ScopedTempDir dir_{"daemon"};
  std::string model_, socket_, config_;
  pid_t pid_ = -1;
};

inline nlohmann::json Greedy(const std::string& prompt, int tokens) {
  return {{"prompt", prompt}, {"max_tokens", tokens}, {"temperature", 0}};
}

// Waits until the stream on `fd` has sent its first event: its request is
// then running in the engine.
inline void AwaitFirstEvent(int fd) {
  std::string seen;
  char buffer[512];
  while (seen.find("data:") == std::string::npos) {
    const ssize_t n = ::recv(fd, buffer, sizeof(buffer), 0);
    ASSERT_GT(n, 0) << "the stream ended before its first event";
    seen.append(buffer, n);
  }
}

}  // namespace expertd::integration

#endif  // EXPERTD_TESTS_INTEGRATION_DAEMON_FIXTURE_H_
