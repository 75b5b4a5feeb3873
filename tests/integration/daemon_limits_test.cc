// The daemon under load and abuse (issue 13): connections are served by a
// bounded pool, one uid cannot lock out others or monitoring, abandoned
// requests are cancelled, shutdown is bounded whatever clients do, prompts
// are prefilled in chunks, requests are admitted by KV memory, and failures
// are counted and logged with their reason.

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_fixture.h"

namespace expertd::integration {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;

// A figure of /proc/PID/status ("Threads", "VmRSS" in kB).
long ProcStatus(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  }
  return -1;
}

// Mappings of the process: every thread stack that was never joined keeps
// two (stack and guard page).
long MapCount(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  long lines = 0;
  std::string line;
  while (std::getline(in, line)) ++lines;
  return lines;
}

// GET `target` on a fresh connection; the raw answer.
std::string RawGet(const std::string& socket, const std::string& target) {
  return RawExchange(socket, "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

json StatsOf(const client::Client& client) {
  auto stats = client.Stats();
  EXPECT_TRUE(stats.ok()) << stats.status();
  return stats.ok() ? *stats : json::object();
}

// Polls /v1/stats until `done` holds (up to 10 s).
template <typename Predicate>
bool AwaitStats(const client::Client& client, Predicate done) {
  for (int i = 0; i < 1000; ++i) {
    auto stats = client.Stats();
    if (stats.ok() && done(*stats)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Sends a non-streaming completion on a fresh connection and returns the
// fd without reading the answer.
int SendCompletion(const std::string& socket, const json& body) {
  const int fd = ConnectTo(socket);
  const std::string text = body.dump();
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(text.size()) + "\r\n\r\n" + text;
  [[maybe_unused]] ssize_t sent = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  return fd;
}

TEST_F(Daemon, ThousandsOfConnectionsLeaveThreadsAndMemoryFlat) {
  // Before: every connection's thread stayed unjoined until shutdown, two
  // mappings and ~24 KiB each, until the daemon aborted at vm.max_map_count.
  for (int i = 0; i < 200; ++i) ASSERT_THAT(RawGet(socket_, "/health"), HasSubstr("200 OK"));
  const long maps_before = MapCount(pid_);
  const long threads_before = ProcStatus(pid_, "Threads");
  [[maybe_unused]] const long rss_before_kb = ProcStatus(pid_, "VmRSS");
  constexpr int kConnections = 3000;
  for (int i = 0; i < kConnections; ++i) {
    const std::string reply = RawGet(socket_, "/health");
    ASSERT_THAT(reply, HasSubstr("200 OK")) << "connection " << i;
  }
  // Sequential clients need about one pool thread, more when the next
  // connection arrives before the last one's thread is idle again (a loaded
  // machine: CI runs tests side by side), but never more than the pool's
  // limit, server.max_connections (64 here, the default): the old code added
  // a thread, and two mappings, per connection.
  constexpr int kMaxPoolThreads = 64;
  EXPECT_LT(MapCount(pid_) - maps_before, 2 * kMaxPoolThreads + 20) << kConnections << " connections";
  EXPECT_LE(ProcStatus(pid_, "Threads"), threads_before + kMaxPoolThreads);
#ifndef __SANITIZE_ADDRESS__
  // (Under AddressSanitizer freed memory sits in its quarantine instead of
  // being reused, so RSS grows by design; the mappings and threads above
  // still catch unjoined connection threads.)
  // The leak it guards against was ~24 KiB per connection (72 MiB here);
  // a pool at its limit and its malloc arenas stay far below this.
  EXPECT_LT(ProcStatus(pid_, "VmRSS") - rss_before_kb, 8192) << "kB of RSS grown over " << kConnections
                                                              << " connections";
#endif
  const json stats = StatsOf(client());
  EXPECT_LE(stats["connections"]["threads"].get<int>(), kMaxPoolThreads);
}

class FairnessDaemon : public Daemon {
 protected:
  void SetUp() override {
    server_extra_ = "max_connections = 4\nmax_connections_per_uid = 2\n";
    Daemon::SetUp();
  }
};

// A keep-alive connection that the daemon's pool holds, shown by a
// /health answer that keeps it open (the overflow thread, which answers
// connections past the limits, always closes). A connection the client has
// just closed stays counted until its thread reads the end, so one opened
// right after may land in the overflow: it is then retried. -1 if none is
// held within a few seconds.
int HeldConnection(const std::string& socket_path) {
  static constexpr char kHealth[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int attempt = 0; attempt < 300; ++attempt) {
    const int fd = ConnectTo(socket_path);
    if (fd < 0) return -1;
    [[maybe_unused]] ssize_t sent = ::send(fd, kHealth, sizeof(kHealth) - 1, MSG_NOSIGNAL);
    std::string reply;
    char buffer[4096];
    ssize_t n;
    // The answer is small; its JSON body ends in '}'.
    while ((reply.empty() || reply.back() != '}') && (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) {
      reply.append(buffer, n);
    }
    if (reply.find("200 OK") != std::string::npos && reply.find("Connection: close") == std::string::npos) {
      return fd;
    }
    ::close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

TEST_F(FairnessDaemon, OneUidsIdleConnectionsLockOutNeitherOthersNorMonitoring) {
  // Two idle keep-alive connections use up this uid's share.
  const int idle1 = HeldConnection(socket_);
  ASSERT_GE(idle1, 0);
  const int idle2 = HeldConnection(socket_);
  ASSERT_GE(idle2, 0);
  // A third connection of the same uid is refused with a reason...
  const std::string refused =
      RawExchange(socket_, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_THAT(refused, HasSubstr("503"));
  EXPECT_THAT(refused, HasSubstr("max_connections_per_uid"));
  // ...but health checks and metrics are still answered.
  EXPECT_THAT(RawGet(socket_, "/health"), HasSubstr("200 OK"));
  const std::string metrics = RawGet(socket_, "/metrics");
  EXPECT_THAT(metrics, HasSubstr("200 OK"));
  EXPECT_THAT(metrics, HasSubstr("expertd_connections_rejected_total{reason=\"uid\"}"));
  // Once the idle connections go, everything is served again.
  ::close(idle1);
  ::close(idle2);
  bool served = false;
  for (int i = 0; i < 100 && !served; ++i) {
    served = client().Complete(Greedy("after", 3)).ok();
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(served);
  EXPECT_THAT(ReadFile(dir_.Sub("daemon.log")), HasSubstr("max_connections_per_uid"))
      << "a refused connection is logged with its reason";
}

class OneAtATimeDaemon : public Daemon {
 protected:
  void SetUp() override {
    inference_extra_ = "max_batch = 1\n";
    Daemon::SetUp();
  }
};

TEST_F(OneAtATimeDaemon, AbandonedRequestsAreCancelledRunningOrQueued) {
  // A non-streaming request whose client goes while it runs...
  json long_request = Greedy("abandoned", 2000);
  long_request["ignore_eos"] = true;
  const int running = SendCompletion(socket_, long_request);
  ASSERT_TRUE(AwaitStats(client(), [](const json& s) { return s["requests"]["running"] == 1; }));
  // ...and one queued behind it.
  const int queued = SendCompletion(socket_, long_request);
  ASSERT_TRUE(AwaitStats(client(), [](const json& s) { return s["requests"]["queued"] == 1; }));
  ::close(queued);
  ASSERT_TRUE(AwaitStats(client(), [](const json& s) { return s["requests"]["cancelled"] == 1; }))
      << "the queued request is dropped";
  EXPECT_EQ(StatsOf(client())["requests"]["queued"], 0);
  ::close(running);
  ASSERT_TRUE(AwaitStats(client(), [](const json& s) { return s["requests"]["cancelled"] == 2; }))
      << "the running request is cancelled: " << StatsOf(client()).dump();
  const json stats = StatsOf(client());
  EXPECT_EQ(stats["requests"]["running"], 0);
  EXPECT_EQ(stats["requests"]["completed"], 0);
  EXPECT_LT(stats["batching"]["steps"].get<int>(), 2000) << "not all of the 2,000 tokens nobody waits for were generated";
  EXPECT_TRUE(client().Complete(Greedy("after", 3)).ok());
  EXPECT_THAT(ReadFile(dir_.Sub("daemon.log")), HasSubstr("499"));
}

TEST_F(Daemon, ShutdownIsBoundedWhenAClientNeverReads) {
  // A stream with 20 alternatives per token fills the socket's buffer and
  // then blocks its writer on a client that never reads.
  json request = {{"prompt", "deaf"}, {"max_tokens", 2000}, {"stream", true}, {"ignore_eos", true}, {"logprobs", 20}};
  const int deaf = ConnectTo(socket_);
  const std::string text = request.dump();
  const std::string http = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                           std::to_string(text.size()) + "\r\n\r\n" + text;
  ASSERT_GT(::send(deaf, http.data(), http.size(), MSG_NOSIGNAL), 0);
  ASSERT_TRUE(AwaitStats(client(), [](const json& s) { return s["batching"]["steps"].get<int>() > 300; }));
  const auto start = std::chrono::steady_clock::now();
  ::kill(pid_, SIGTERM);
  EXPECT_EQ(WaitForExit(), 0);
  // --drain-seconds 5 (the fixture's) plus a second's grace, not the 30 s
  // write timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(8));
  ::close(deaf);
}

class ChunkedPrefillDaemon : public Daemon {
 protected:
  void SetUp() override {
    inference_extra_ = "prefill_chunk_tokens = 8\n";
    Daemon::SetUp();
  }
};

TEST_F(ChunkedPrefillDaemon, ALongPromptRunsInChunksBetweenDecodeSteps) {
  const int stream = StartStream(socket_, 1000, /*ignore_eos=*/true);
  AwaitFirstEvent(stream);
  json prompt = json::array();
  for (int i = 0; i < 200; ++i) prompt.push_back(1 + (i * 37) % 500);
  json request = {{"prompt", prompt}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}};
  const json before = StatsOf(client());
  auto chunked = client().Complete(request);
  ASSERT_TRUE(chunked.ok()) << chunked.status();
  const json after = StatsOf(client());
  ::close(stream);
  EXPECT_GE(after["batching"]["prefill_chunks"].get<int>() - before["batching"]["prefill_chunks"].get<int>(), 25)
      << "200 tokens in chunks of 8";
  // The running stream kept decoding while the prompt was prefilled.
  EXPECT_GE(after["batching"]["steps"].get<int>() - before["batching"]["steps"].get<int>(), 25);
}

class KvBudgetDaemon : public Daemon {
 protected:
  void SetUp() override {
    // The test model keeps 512 bytes of KV per position (2 layers x keys
    // and values x 2 KV heads x 16 dims x 4 bytes): 128 positions fit.
    inference_extra_ = "kv_budget = \"64KiB\"\n";
    Daemon::SetUp();
  }
};

TEST_F(KvBudgetDaemon, RequestsAreAdmittedWhileTheirKvCacheFits) {
  // Too large for the whole budget: refused, naming what to change.
  auto too_large = client().Complete(Greedy("hi", 400));
  EXPECT_EQ(client::HttpStatusOf(too_large.status()), 400);
  EXPECT_THAT(std::string(too_large.status().message()), HasSubstr("kv_budget"));
  // Two requests of 100 tokens each fit one at a time: both are served, in
  // turn, though max_batch would run them together.
  json request = Greedy("hi", 100);
  request["ignore_eos"] = true;
  std::thread other([&] { EXPECT_TRUE(client().Complete(request).ok()); });
  EXPECT_TRUE(client().Complete(request).ok());
  other.join();
  const json stats = StatsOf(client());
  EXPECT_EQ(stats["requests"]["completed"], 2);
  EXPECT_EQ(stats["batching"]["largest_batch"], 1) << "the second request waited for KV memory";
  EXPECT_EQ(stats["kv_cache"]["reserved_bytes"], 0);
}

TEST_F(Daemon, MetricsAreIntegersAndFailuresAreCountedAndLogged) {
  // Corrupt the second half of the packed experts before anything reads
  // them: loads fail their checksum.
  const std::string experts = model_ + "/model.experts";
  std::fstream file(experts, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file.good());
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  file.seekp(size / 2);
  const std::string garbage(static_cast<size_t>(size - size / 2), '\x5a');
  file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  file.close();
  bool failed = false;
  for (int i = 0; i < 8 && !failed; ++i) {
    auto result = client().Complete(Greedy("corrupt " + std::to_string(i), 8));
    failed = client::HttpStatusOf(result.status()) == 500;
  }
  ASSERT_TRUE(failed) << "some request needs a corrupted expert";
  const std::string metrics = RawGet(socket_, "/metrics");
  EXPECT_THAT(metrics, HasSubstr("expertd_cache_checksum_failures_total{tier=\"dram\"} "));
  EXPECT_THAT(metrics, Not(HasSubstr("expertd_cache_checksum_failures_total{tier=\"dram\"} 0\n")));
  EXPECT_THAT(metrics, HasSubstr("expertd_requests_failed_total "));
  EXPECT_THAT(metrics, HasSubstr("expertd_requests_cancelled_total 0\n"));
  EXPECT_THAT(metrics, Not(HasSubstr("e+"))) << "counters print as integers";
  // The request log says why the request failed. Its line is written after
  // the answer went out, so the client can be first: wait for it.
  std::string log = ReadFile(dir_.Sub("daemon.log"));
  for (int i = 0; i < 250 && log.find(" 500 in ") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    log = ReadFile(dir_.Sub("daemon.log"));
  }
  EXPECT_THAT(log, HasSubstr(" 500 in "));
  EXPECT_THAT(log, HasSubstr("is corrupt (XXH3"));
}

}  // namespace
}  // namespace expertd::integration
