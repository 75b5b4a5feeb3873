// The client against an in-process fake daemon: Beast on a temporary Unix
// socket, one thread per connection, answering by the prompt it is sent.

#include "client/client.h"

#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace expertd::client {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using Json = nlohmann::json;
using Local = asio::local::stream_protocol;
using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/expertd_client_test_XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Answers like expertd would, keyed on the request's prompt:
//   "status:N"        -> HTTP N with an OpenAI-style JSON error
//   "stream"          -> chunked SSE in pieces, an event split across two
//                        pieces, waiting for first_chunk_seen after the first
//   "stream-close"    -> SSE with CRLF lines, ended by closing the connection
//   "stream-no-done"  -> SSE that stops without [DONE]
//   "stream-error"    -> an in-band {"error":...} event after a good one
//   "hang"            -> never answers (until the server stops)
//   anything else     -> a completion echoing the prompt
class FakeDaemon {
 public:
  explicit FakeDaemon(std::string path) : path_(std::move(path)), acceptor_(ioc_, Local::endpoint(path_)) {
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~FakeDaemon() {
    stopping_.Notify();
    // Wakes the blocking accept; the loop sees stopping_ and exits.
    Local::socket wake(ioc_);
    boost::system::error_code ignored;
    wake.connect(Local::endpoint(path_), ignored);
    accept_thread_.join();
  }

  // Set by the test's chunk callback; the "stream" answer waits for it
  // before sending the rest, so a client that buffers the whole reply fails.
  absl::Notification first_chunk_seen;
  bool streamed_incrementally() const { return streamed_incrementally_.load(); }

  Json last_body() const {
    absl::MutexLock lock(&mu_);
    return last_body_;
  }

 private:
  void AcceptLoop() {
    std::vector<std::thread> connections;
    while (true) {
      Local::socket socket(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      if (stopping_.HasBeenNotified()) break;
      if (ec) continue;
      connections.emplace_back([this, s = std::move(socket)]() mutable { Serve(s); });
    }
    for (std::thread& t : connections) t.join();
  }

  void Serve(Local::socket& socket) {
    boost::beast::flat_buffer buffer;
    http::request<http::string_body> request;
    boost::system::error_code ec;
    http::read(socket, buffer, request, ec);
    if (ec) return;
    std::string target(request.target());
    if (request.method() == http::verb::get && target == "/health") {
      return Reply(socket, 200, {{"status", "ok"}});
    }
    if (request.method() == http::verb::get && target == "/v1/models") {
      return Reply(socket, 200,
                   {{"object", "list"}, {"data", Json::array({{{"id", "olmoe-test"}, {"object", "model"}}})}});
    }
    if (request.method() == http::verb::get && target == "/v1/stats") {
      return Reply(socket, 200, {{"cache", {{"hits", 3}, {"misses", 1}}}});
    }
    if (request.method() != http::verb::post || target != "/v1/completions") {
      return ReplyError(socket, 404, absl::StrCat("no route ", target));
    }
    Json body = Json::parse(request.body(), nullptr, false);
    {
      absl::MutexLock lock(&mu_);
      last_body_ = body;
    }
    std::string prompt = body.value("prompt", "");
    int code = 0;
    if (absl::SimpleAtoi(absl::string_view(prompt).substr(0, 7) == "status:" ? prompt.substr(7) : "x", &code)) {
      return ReplyError(socket, code, absl::StrCat("refused with ", code));
    }
    if (prompt == "hang") {
      stopping_.WaitForNotificationWithTimeout(absl::Seconds(10));
      return;
    }
    if (prompt == "stream") return StreamChunked(socket);
    if (prompt == "stream-close") {
      Write(socket,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            "data: {\"choices\":[{\"index\":0,\"text\":\"x\"}]}\r\n\r\n"
            "data: {\"choices\":[{\"index\":0,\"text\":\"y\"}]}\r\n\r\n"
            "data: [DONE]\r\n\r\n");
      return;  // closing the socket ends the body
    }
    if (prompt == "stream-no-done") {
      Write(socket,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            "data: {\"choices\":[{\"index\":0,\"text\":\"x\"}]}\n\n");
      return;
    }
    if (prompt == "stream-error") {
      Write(socket,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            "data: {\"choices\":[{\"index\":0,\"text\":\"x\"}]}\n\n"
            "data: {\"error\":{\"message\":\"engine failed\",\"type\":\"server_error\",\"param\":null}}\n\n");
      return;
    }
    Reply(socket, 200,
          {{"id", "cmpl-1"},
           {"object", "text_completion"},
           {"created", 1},
           {"model", "olmoe-test"},
           {"choices", Json::array({{{"index", 0}, {"text", "echo:" + prompt}, {"finish_reason", "length"}}})},
           {"usage", {{"prompt_tokens", 2}, {"completion_tokens", 3}, {"total_tokens", 5}}}});
  }

  static std::string Chunk(absl::string_view data) { return absl::StrFormat("%x\r\n%s\r\n", data.size(), data); }

  void StreamChunked(Local::socket& socket) {
    auto event = [](absl::string_view text) {
      return absl::StrCat("data: {\"choices\":[{\"index\":0,\"text\":\"", text, "\"}]}\n\n");
    };
    Write(socket,
          absl::StrCat("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                       Chunk(event("Hel"))));
    streamed_incrementally_ = first_chunk_seen.WaitForNotificationWithTimeout(absl::Seconds(10));
    std::string second = event("lo");
    Write(socket, Chunk(absl::string_view(second).substr(0, 10)));  // half an event
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    Write(socket, Chunk(absl::StrCat(absl::string_view(second).substr(10), ": keep-alive comment\n\n")));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    Write(socket, Chunk(absl::StrCat(event(", world"), "data: [DONE]\n\n")));
    Write(socket, "0\r\n\r\n");
  }

  static void Write(Local::socket& socket, const std::string& bytes) {
    boost::system::error_code ignored;
    asio::write(socket, asio::buffer(bytes), ignored);
  }

  static void Reply(Local::socket& socket, int status, const Json& body) {
    http::response<http::string_body> response(static_cast<http::status>(status), 11);
    response.set(http::field::content_type, "application/json");
    response.body() = body.dump();
    response.prepare_payload();
    boost::system::error_code ignored;
    http::write(socket, response, ignored);
  }

  static void ReplyError(Local::socket& socket, int status, const std::string& message) {
    Reply(socket, status,
          {{"error", {{"message", message}, {"type", "invalid_request_error"}, {"param", "max_tokens"}}}});
  }

  std::string path_;
  asio::io_context ioc_;
  Local::acceptor acceptor_;
  absl::Notification stopping_;
  std::atomic<bool> streamed_incrementally_{false};
  mutable absl::Mutex mu_;
  Json last_body_ ABSL_GUARDED_BY(mu_);
  std::thread accept_thread_;
};

class ClientTest : public ::testing::Test {
 protected:
  ClientTest() : socket_path_(dir_.path() + "/expertd.sock"), daemon_(socket_path_), client_(socket_path_) {}

  TempDir dir_;
  std::string socket_path_;
  FakeDaemon daemon_;
  Client client_;
};

TEST_F(ClientTest, HealthModelsAndStatsParseJson) {
  absl::StatusOr<Json> health = client_.Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ((*health)["status"], "ok");

  absl::StatusOr<Json> models = client_.Models();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ((*models)["data"][0]["id"], "olmoe-test");

  absl::StatusOr<Json> stats = client_.Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ((*stats)["cache"]["hits"], 3);
}

TEST_F(ClientTest, CompleteForcesStreamOffAndReturnsTheAnswer) {
  absl::StatusOr<Json> answer = client_.Complete({{"prompt", "hi"}, {"max_tokens", 3}, {"stream", true}});
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ((*answer)["choices"][0]["text"], "echo:hi");
  EXPECT_EQ((*answer)["usage"]["total_tokens"], 5);
  Json sent = daemon_.last_body();
  EXPECT_EQ(sent["stream"], false);
  EXPECT_EQ(sent["max_tokens"], 3);
}

TEST_F(ClientTest, StreamDeliversChunksAsTheyArriveInOrder) {
  std::vector<std::string> texts;
  absl::Status status = client_.CompleteStream({{"prompt", "stream"}}, [&](const Json& chunk) {
    texts.push_back(chunk["choices"][0]["text"].get<std::string>());
    if (!daemon_.first_chunk_seen.HasBeenNotified()) daemon_.first_chunk_seen.Notify();
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_THAT(texts, ::testing::ElementsAre("Hel", "lo", ", world"));
  EXPECT_TRUE(daemon_.streamed_incrementally()) << "the first chunk reached the callback only after the server "
                                                   "gave up waiting: the client buffered the stream";
  EXPECT_EQ(daemon_.last_body()["stream"], true);
}

TEST_F(ClientTest, StreamEndedByConnectionCloseWithCrlfLines) {
  std::string text;
  absl::Status status = client_.CompleteStream(
      {{"prompt", "stream-close"}, {"stream", false}},
      [&](const Json& chunk) { text += chunk["choices"][0]["text"].get<std::string>(); });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(text, "xy");
  EXPECT_EQ(daemon_.last_body()["stream"], true);
}

TEST_F(ClientTest, StreamWithoutDoneIsUnavailable) {
  int chunks = 0;
  absl::Status status = client_.CompleteStream({{"prompt", "stream-no-done"}}, [&](const Json&) { ++chunks; });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("[DONE]"));
  EXPECT_EQ(chunks, 1);
}

TEST_F(ClientTest, InBandStreamErrorEndsTheCall) {
  int chunks = 0;
  absl::Status status = client_.CompleteStream({{"prompt", "stream-error"}}, [&](const Json&) { ++chunks; });
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_THAT(status.message(), HasSubstr("engine failed"));
  EXPECT_EQ(chunks, 1);
}

TEST_F(ClientTest, ErrorBodyGivesMessageFieldAndHttpCode) {
  absl::StatusOr<Json> answer = client_.Complete({{"prompt", "status:400"}});
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(answer.status().message(), HasSubstr("refused with 400"));
  EXPECT_THAT(answer.status().message(), HasSubstr("max_tokens"));
  EXPECT_EQ(HttpStatusOf(answer.status()), 400);

  // The same answer to a streamed request.
  bool called = false;
  absl::Status streamed = client_.CompleteStream({{"prompt", "status:400"}}, [&](const Json&) { called = true; });
  EXPECT_EQ(streamed.code(), absl::StatusCode::kInvalidArgument) << streamed;
  EXPECT_THAT(streamed.message(), HasSubstr("refused with 400"));
  EXPECT_EQ(HttpStatusOf(streamed), 400);
  EXPECT_FALSE(called);
}

TEST_F(ClientTest, UnknownRouteIsNotFound) {
  absl::StatusOr<Json> answer = client_.ChatComplete({{"messages", Json::array()}});
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kNotFound) << answer.status();
  EXPECT_THAT(answer.status().message(), HasSubstr("/v1/chat/completions"));
}

TEST_F(ClientTest, NoAnswerWithinTheTimeoutIsDeadlineExceeded) {
  Client impatient(socket_path_, std::chrono::milliseconds(100));
  absl::StatusOr<Json> answer = impatient.Complete({{"prompt", "hang"}});
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kDeadlineExceeded) << answer.status();
  EXPECT_THAT(answer.status().message(), HasSubstr(socket_path_));
}

TEST_F(ClientTest, RequestMustBeAnObject) {
  EXPECT_EQ(client_.Complete(Json::array()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_.CompleteStream("text", [](const Json&) {}).code(), absl::StatusCode::kInvalidArgument);
}

struct CodeCase {
  int http_status;
  absl::StatusCode code;
};

class ClientErrorCodeTest : public ClientTest, public ::testing::WithParamInterface<CodeCase> {};

TEST_P(ClientErrorCodeTest, MapsHttpStatus) {
  absl::StatusOr<Json> answer = client_.Complete({{"prompt", absl::StrCat("status:", GetParam().http_status)}});
  ASSERT_FALSE(answer.ok());
  EXPECT_EQ(answer.status().code(), GetParam().code) << answer.status();
  EXPECT_EQ(HttpStatusOf(answer.status()), GetParam().http_status);
}

INSTANTIATE_TEST_SUITE_P(Codes, ClientErrorCodeTest,
                         ::testing::Values(CodeCase{400, absl::StatusCode::kInvalidArgument},
                                           CodeCase{404, absl::StatusCode::kNotFound},
                                           CodeCase{413, absl::StatusCode::kInvalidArgument},
                                           CodeCase{429, absl::StatusCode::kResourceExhausted},
                                           CodeCase{500, absl::StatusCode::kInternal},
                                           CodeCase{503, absl::StatusCode::kUnavailable}));

TEST(ClientConnectTest, MissingSocketIsUnavailableNamingThePath) {
  TempDir dir;
  std::string path = dir.path() + "/absent.sock";
  Client client(path);
  absl::StatusOr<Json> health = client.Health();
  EXPECT_EQ(health.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(health.status().message(), HasSubstr(path));
  EXPECT_THAT(health.status().message(), HasSubstr("not running"));
  EXPECT_EQ(HttpStatusOf(health.status()), std::nullopt);
}

TEST(ClientConnectTest, StaleSocketIsConnectionRefused) {
  TempDir dir;
  std::string path = dir.path() + "/stale.sock";
  {
    // Bound but never listening: what a crashed daemon leaves behind.
    asio::io_context ioc;
    Local::socket socket(ioc);
    socket.open();
    socket.bind(Local::endpoint(path));
  }
  Client client(path);
  absl::Status status = client.CompleteStream({{"prompt", "x"}}, [](const Json&) {});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr(path));
  EXPECT_THAT(status.message(), HasSubstr("refused"));
}

TEST(DefaultSocketPathTest, EnvironmentFirstThenRuntimeDir) {
  EXPECT_EQ(DefaultSocketPath("/x/e.sock", "/run/user/1000"), "/x/e.sock");
  if (!std::filesystem::exists("/run/expertd/expertd.sock")) {
    EXPECT_EQ(DefaultSocketPath("", "/run/user/1000"), "/run/user/1000/expertd.sock");
    EXPECT_EQ(DefaultSocketPath(nullptr, nullptr), "/run/expertd/expertd.sock");
  }
}

}  // namespace
}  // namespace expertd::client
