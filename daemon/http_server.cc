#include "daemon/http_server.h"

#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "boost/asio/local/stream_protocol.hpp"
#include "boost/asio/steady_timer.hpp"
#include "boost/asio/write.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "daemon/openai_api.h"
#include "daemon/http_request_parser.h"
#include "spdlog/spdlog.h"

namespace expertd::daemon {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Socket = asio::local::stream_protocol::socket;
using nlohmann::json;

// How often a connection waiting for its job looks whether the client is
// still there (a poll of its socket).
constexpr auto kHangUpPoll = std::chrono::milliseconds(50);
// Logged (never sent) for a request whose client left before its answer,
// as nginx does.
constexpr int kClientClosedRequest = 499;
// A connection past the limits gets this long to send its request (the
// overflow thread serves them one at a time).
constexpr auto kOverflowReadTimeout = std::chrono::milliseconds(500);
// Connections waiting for the overflow thread; past this they are refused
// without being read.
constexpr size_t kOverflowQueue = 32;

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

http::response<http::string_body> JsonResponse(http::status status, const json& body, unsigned version,
                                               bool keep_alive) {
  http::response<http::string_body> response{status, version};
  response.set(http::field::server, "expertd");
  response.set(http::field::content_type, "application/json");
  response.keep_alive(keep_alive);
  response.body() = body.dump();
  response.prepare_payload();
  return response;
}

// Prometheus' text format.
http::response<http::string_body> PlainResponse(std::string body, unsigned version, bool keep_alive) {
  http::response<http::string_body> response{http::status::ok, version};
  response.set(http::field::server, "expertd");
  response.set(http::field::content_type, "text/plain; version=0.0.4");
  response.keep_alive(keep_alive);
  response.body() = std::move(body);
  response.prepare_payload();
  return response;
}

http::response<http::string_body> ErrorResponse(const ApiError& error, unsigned version, bool keep_alive) {
  return JsonResponse(static_cast<http::status>(error.http_status), error.ToJson(), version, keep_alive);
}

// A client connection whose every read and write must finish within a
// deadline, or fail with timed_out (the connection is then dropped). Asio's
// blocking calls cannot do this: they ignore SO_RCVTIMEO/SO_SNDTIMEO, polling
// until the socket is ready, so a stalled client would hold its thread
// forever. Each operation therefore runs asynchronously on the connection's
// own io_context against a timer, and the calling thread waits for it.
class TimedConnection {
 public:
  TimedConnection(int fd, std::chrono::milliseconds timeout)
      : socket_(io_, asio::local::stream_protocol(), fd), timer_(io_), timeout_(timeout) {}

  void Read(beast::flat_buffer& buffer, http::request_parser<http::string_body>& parser, beast::error_code& ec) {
    Run([&](auto done) { http::async_read(socket_, buffer, parser, done); }, ec);
  }
  void Write(const http::response<http::string_body>& response, beast::error_code& ec) {
    Run([&](auto done) { http::async_write(socket_, response, done); }, ec);
  }
  void WriteHeader(http::response_serializer<http::empty_body>& serializer, beast::error_code& ec) {
    Run([&](auto done) { http::async_write_header(socket_, serializer, done); }, ec);
  }
  // One chunk of a chunked body; an empty `text` ends the body.
  void WriteChunk(const std::string& text, beast::error_code& ec) {
    if (text.empty()) {
      Run([&](auto done) { asio::async_write(socket_, http::make_chunk_last(), done); }, ec);
    } else {
      Run([&](auto done) { asio::async_write(socket_, http::make_chunk(asio::buffer(text)), done); }, ec);
    }
  }
  void Shutdown() {
    beast::error_code ignored;
    socket_.shutdown(asio::local::stream_protocol::socket::shutdown_both, ignored);
  }
  // Whether the client has closed its end entirely. On a Unix stream socket
  // POLLHUP means both directions are shut: the peer closed (or died). A
  // peer that only shut its writing side (it still reads the answer), and
  // our own SHUT_RD at shutdown, raise POLLRDHUP alone, so neither counts.
  bool PeerClosed() {
    pollfd p{socket_.native_handle(), 0, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR)) != 0;
  }

 private:
  template <typename Start>
  void Run(Start&& start, beast::error_code& ec) {
    bool finished = false;
    start([&](beast::error_code result, std::size_t) {
      ec = result;
      finished = true;
      timer_.cancel();
    });
    timer_.expires_after(timeout_);
    timer_.async_wait([&](beast::error_code result) {
      if (!result && !finished) socket_.cancel();  // the operation completes with operation_aborted
    });
    io_.restart();
    io_.run();
    if (ec == asio::error::operation_aborted) ec = asio::error::timed_out;
  }

  asio::io_context io_;
  Socket socket_;
  asio::steady_timer timer_;
  std::chrono::milliseconds timeout_;
};

// The request log's figures of a job (call with job.mu held).
std::string Summary(const engine::Request& job) {
  std::string summary = absl::StrFormat("%zu prompt + %d tokens, queue %.3f s, prefill %.3f s, decode %.3f s",
                                        job.prompt.size(), job.completion_tokens, job.queue_seconds,
                                        job.prefill_seconds, job.decode_seconds);
  if (job.options.roster.samples > 1) {
    absl::StrAppendFormat(&summary, ", roster %d: %.1f distinct experts/token, %.2fx compute",
                          job.options.roster.samples, job.costs.distinct_experts_per_token(),
                          job.costs.extra_compute());
  }
  return summary;
}

// What ServeGeneration did, for the request log.
struct Served {
  int status_code = 200;
  std::string summary;
  bool streamed = false;  // a stream's end closes the connection
};

// Submits `parsed` as one Request per choice (prompts x n) and answers on
// `connection`: one JSON body with every choice, or server-sent events over
// chunked transfer (one event per piece of text as the engine produces it,
// a choice's events in order and the choices one after another, each
// event naming its choice; then [DONE]). The choices run in the engine at
// once, batched, whatever order their events go out in.
Served ServeGeneration(InferenceService& service, TimedConnection& connection, unsigned version, bool keep_alive,
                       const GenerationRequest& parsed, const AnswerShape& shape, beast::error_code& ec) {
  Served served;
  struct Choice {
    std::shared_ptr<engine::Request> job;
    AnswerShape shape;
  };
  std::vector<Choice> choices;
  for (size_t p = 0; p < parsed.prompts.size(); ++p) {
    for (int i = 0; i < parsed.n; ++i) {
      auto job = std::make_shared<engine::Request>();
      job->prompt = parsed.prompts[p].tokens;
      job->options = parsed.options;
      job->options.sampling.seed += static_cast<uint64_t>(i);
      job->stop = parsed.stop;
      job->stop_token_ids = parsed.stop_token_ids;
      job->logprobs = parsed.logprobs;
      job->prompt_logprobs = parsed.prompt_logprobs;
      const int index = static_cast<int>(choices.size());
      choices.push_back({std::move(job), shape.ForChoice(index, shape.echo.empty() ? "" : parsed.prompts[p].text)});
    }
  }
  const bool with_logprobs = parsed.logprobs >= 0;
  auto send = [&](http::response<http::string_body> response) {
    served.status_code = response.result_int();
    connection.Write(response, ec);
  };
  for (size_t c = 0; c < choices.size(); ++c) {
    if (absl::Status submitted = service.Submit(choices[c].job); !submitted.ok()) {
      for (size_t earlier = 0; earlier < c; ++earlier) service.Cancel(choices[earlier].job);
      // Too large for the KV budget ever: the request must change (400);
      // otherwise the daemon is busy or stopping: retry later (503).
      const bool too_large = absl::IsInvalidArgument(submitted);
      served.summary = std::string(submitted.message());
      send(ErrorResponse(too_large ? ApiError{400, std::string(submitted.message()), "max_tokens", "invalid_request_error"}
                                   : ApiError{503, std::string(submitted.message()), "", "overloaded"},
                         version, keep_alive));
      return served;
    }
  }
  // Waits for pred (job.mu held) while the client is there; false when it
  // has gone: every choice is then cancelled, wherever it is, and nobody is
  // answered.
  auto wait_for_job = [&](engine::Request& job, std::unique_lock<std::mutex>& lock, auto pred) {
    while (!job.cv.wait_for(lock, kHangUpPoll, pred)) {
      lock.unlock();
      const bool gone = connection.PeerClosed();
      lock.lock();
      if (gone && !pred()) {
        lock.unlock();
        for (const Choice& choice : choices) service.Cancel(choice.job);
        lock.lock();
        served.status_code = kClientClosedRequest;
        served.summary = absl::StrCat("client went away after ", job.completion_tokens, " tokens; cancelled");
        return false;
      }
    }
    return true;
  };
  // The log line: one choice's figures, or the sum of several.
  auto summary = [&] {
    std::string text;
    for (const Choice& choice : choices) {
      std::lock_guard lock(choice.job->mu);
      absl::StrAppend(&text, text.empty() ? "" : "; ", Summary(*choice.job));
    }
    return text;
  };
  // OpenAI counts each prompt's tokens once, however many choices it has.
  auto usage = [&] {
    size_t prompt_tokens = 0, completion_tokens = 0;
    for (const PromptInput& prompt : parsed.prompts) prompt_tokens += prompt.tokens.size();
    for (const Choice& choice : choices) {
      std::lock_guard lock(choice.job->mu);
      completion_tokens += choice.job->completion_tokens;
    }
    return std::pair{prompt_tokens, completion_tokens};
  };

  if (!parsed.stream) {
    std::vector<json> wholes;
    json figures;
    for (const Choice& choice : choices) {
      engine::Request& job = *choice.job;
      std::unique_lock lock(job.mu);
      if (!wait_for_job(job, lock, [&] { return job.done; })) return served;
      if (!job.status.ok()) {
        served.summary = absl::StrCat(Summary(job), ": ", job.status.ToString());
        const int code = absl::IsCancelled(job.status) ? 503 : 500;
        ApiError error{code, std::string(job.status.message()), "", code == 503 ? "overloaded" : "server_error"};
        lock.unlock();
        for (const Choice& other : choices) service.Cancel(other.job);
        send(ErrorResponse(error, version, keep_alive));
        return served;
      }
      wholes.push_back(choice.shape.Whole(job.text, job.finish_reason, job.prompt_token_logprobs, job.token_logprobs,
                                          with_logprobs));
      if (figures.is_null()) figures = ExpertdFigures(job);  // the first choice's; the log has them all
    }
    json body = AnswerShape::CombineChoices(std::move(wholes));
    const auto [prompt_tokens, completion_tokens] = usage();
    body["usage"] = AnswerShape::Usage(prompt_tokens, completion_tokens);
    body["expertd"] = std::move(figures);
    served.summary = summary();
    send(JsonResponse(http::status::ok, body, version, keep_alive));
    return served;
  }

  served.streamed = true;
  http::response<http::empty_body> header{http::status::ok, version};
  header.set(http::field::server, "expertd");
  header.set(http::field::content_type, "text/event-stream");
  header.set(http::field::cache_control, "no-cache");
  header.keep_alive(false);
  header.chunked(true);
  http::response_serializer<http::empty_body> serializer{header};
  connection.WriteHeader(serializer, ec);
  auto event = [&](const json& data) {
    if (ec) return;
    const std::string text = absl::StrCat("data: ", data.dump(), "\n\n");
    connection.WriteChunk(text, ec);
  };
  bool failed = false;
  for (const Choice& choice : choices) {
    engine::Request& job = *choice.job;
    const AnswerShape& choice_shape = choice.shape;
    // Token logprobs go with the event that carries their text; those of a
    // token that ended inside a UTF-8 character wait for the next event.
    size_t logprobs_sent = 0;
    size_t text_offset = 0;
    std::optional<json> opening = choice_shape.Opening();
    if (with_logprobs && parsed.prompt_logprobs) {
      // The prompt is scored by the prefill: wait for it, then echo it with
      // its logprobs.
      std::unique_lock lock(job.mu);
      if (!wait_for_job(job, lock, [&] { return job.done || job.completion_tokens > 0 || !job.prompt_token_logprobs.empty(); })) {
        return served;
      }
      if (opening) (*opening)["choices"][0]["logprobs"] = choice_shape.StreamLogprobs(job.prompt_token_logprobs, &text_offset);
    }
    if (opening) event(*opening);
    while (true) {
      std::unique_lock lock(job.mu);
      if (!wait_for_job(job, lock, [&] { return job.done || !job.pieces.empty(); })) return served;
      std::deque<std::string> pieces;
      pieces.swap(job.pieces);
      const bool done = job.done;
      const absl::Status status = job.status;
      const std::string finish = job.finish_reason;
      json new_logprobs = nullptr;
      if (with_logprobs && job.token_logprobs.size() > logprobs_sent && (!pieces.empty() || done)) {
        new_logprobs = choice_shape.StreamLogprobs(absl::MakeConstSpan(job.token_logprobs).subspan(logprobs_sent), &text_offset);
        logprobs_sent = job.token_logprobs.size();
      }
      json figures = done ? ExpertdFigures(job) : json(nullptr);
      lock.unlock();
      for (size_t i = 0; i < pieces.size(); ++i) {
        event(choice_shape.Piece(pieces[i], i + 1 == pieces.size() ? std::exchange(new_logprobs, nullptr) : json(nullptr)));
      }
      if (ec) {  // the engine stops at its next token
        for (const Choice& other : choices) service.Cancel(other.job);
      }
      if (!done) continue;
      if (status.ok()) {
        json closing = choice_shape.Closing(finish, std::move(new_logprobs));
        closing["expertd"] = std::move(figures);
        event(closing);
      } else {
        served.status_code = 500;
        served.summary = status.ToString();
        event(ApiError{500, std::string(status.message()), "", "server_error"}.ToJson());
        failed = true;
      }
      break;
    }
    if (failed || ec) break;
  }
  if (failed) {
    for (const Choice& choice : choices) service.Cancel(choice.job);
  } else if (parsed.include_usage) {
    const auto [prompt_tokens, completion_tokens] = usage();
    event(shape.UsageEvent(prompt_tokens, completion_tokens));
  }
  if (!ec) {
    const std::string done_text = "data: [DONE]\n\n";
    connection.WriteChunk(done_text, ec);
    // A client may close as soon as it has [DONE], before the chunked
    // body's last (empty) chunk: it did not go away early.
    if (!ec) {
      beast::error_code after_done;
      connection.WriteChunk("", after_done);
    }
  }
  served.summary = absl::StrCat("streamed ", summary(), ec ? " (client went away)" : "",
                                served.summary.empty() ? "" : ": ", served.summary);
  return served;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const ServerConfig& config,
                                                             const std::string& socket_path,
                                                             InferenceService& service) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", socket_path, " is too long"));
  }
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);

  // A socket file may be left from a crash; a live daemon would answer.
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::AlreadyExistsError(absl::StrCat(socket_path, " exists and is not a socket"));
    }
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool live = ::connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    ::close(probe);
    if (live) return absl::AlreadyExistsError(absl::StrCat("another daemon is listening on ", socket_path));
    ::unlink(socket_path.c_str());
  }

  auto server = std::unique_ptr<HttpServer>(new HttpServer(config, socket_path, service));
  server->listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (server->listen_fd_ < 0 || ::bind(server->listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(server->listen_fd_, 128) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", socket_path, ": ", std::strerror(errno)));
  }
  if (::chmod(socket_path.c_str(), config.socket_mode) != 0) {
    return absl::PermissionDeniedError(absl::StrCat("cannot chmod ", socket_path, ": ", std::strerror(errno)));
  }
  if (!config.socket_group.empty()) {
    const group* g = ::getgrnam(config.socket_group.c_str());
    if (g == nullptr) return absl::NotFoundError(absl::StrCat("server.socket_group '", config.socket_group, "' does not exist"));
    if (::chown(socket_path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0) {
      return absl::PermissionDeniedError(absl::StrCat("cannot give ", socket_path, " to group ", config.socket_group,
                                                      ": ", std::strerror(errno)));
    }
  }
  const tokenizer::ChatTemplate& chat = server->chat_template_;
  if (!chat.parse_status().ok()) {
    spdlog::error("chat template: {} Chat requests are answered with this error; completions work.",
                  std::string(chat.parse_status().message()));
  } else if (chat.name() == "plain") {
    spdlog::info("chat template: the model has no chat_template; chats use the plain \"User: ...\\nAssistant:\" "
                 "transcript (tokenizer/chat_template.h)");
  } else {
    spdlog::info("chat template: the model's own (Jinja), stop strings: {}", absl::StrJoin(chat.stop_strings(), ", "));
  }
  server->overflow_thread_ = std::thread([raw = server.get()] { raw->OverflowLoop(); });
  server->accept_thread_ = std::thread([raw = server.get()] { raw->AcceptLoop(); });
  spdlog::info("listening on {} (mode {:o})", socket_path, config.socket_mode);
  return server;
}

HttpServer::~HttpServer() {
  Stop();
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(mu_);
    workers.swap(workers_);
  }
  work_ready_.notify_all();
  overflow_ready_.notify_all();
  for (std::thread& t : workers) t.join();
  if (overflow_thread_.joinable()) overflow_thread_.join();
}

void HttpServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (accept_thread_.joinable()) accept_thread_.join();
  {
    // Connections idle between keep-alive requests would otherwise sit in
    // read() until their timeout; shutting the read side wakes them, and a
    // response still being written is unaffected.
    std::lock_guard lock(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RD);
  }
  work_ready_.notify_all();
  overflow_ready_.notify_all();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  ::unlink(socket_path_.c_str());
}

void HttpServer::CloseConnections(std::chrono::milliseconds grace) {
  std::unique_lock lock(mu_);
  if (!connection_closed_.wait_for(lock, grace, [&] { return open_fds_.empty(); })) {
    spdlog::warn("shutdown: {} connection(s) still writing after {} ms; closing them", open_fds_.size(),
                 grace.count());
    // A write blocked on a client that does not read fails at once.
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
}

HttpServer::Counters HttpServer::counters() const {
  std::lock_guard lock(mu_);
  Counters counters = counters_;
  counters.open = open_fds_.size();
  counters.threads = workers_.size();
  return counters;
}

std::string HttpServer::Metrics() const {
  const Counters c = counters();
  std::string out = service_.PrometheusMetrics();
  auto one = [&](const char* name, const char* type, const char* help, const std::string& samples) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", samples);
  };
  one("expertd_connections_accepted_total", "counter", "Connections served by the connection pool.",
      absl::StrCat("expertd_connections_accepted_total ", c.accepted, "\n"));
  one("expertd_connections_rejected_total", "counter",
      "Connections refused: past max_connections (busy), max_connections_per_uid (uid), or without being read "
      "(overflow).",
      absl::StrCat("expertd_connections_rejected_total{reason=\"busy\"} ", c.refused_busy, "\n",
                   "expertd_connections_rejected_total{reason=\"uid\"} ", c.refused_uid, "\n",
                   "expertd_connections_rejected_total{reason=\"overflow\"} ", c.overflow_dropped, "\n"));
  one("expertd_malformed_requests_total", "counter", "Requests answered 400 (bad HTTP) or 413 (body too large).",
      absl::StrCat("expertd_malformed_requests_total ", c.malformed_requests, "\n"));
  one("expertd_connections_open", "gauge", "Connections open in the pool.",
      absl::StrCat("expertd_connections_open ", c.open, "\n"));
  one("expertd_connection_threads", "gauge", "Connection pool threads (at most server.max_connections).",
      absl::StrCat("expertd_connection_threads ", c.threads, "\n"));
  return out;
}

void HttpServer::AcceptLoop() {
  pthread_setname_np(pthread_self(), "expertd-accept");
  while (!stopping_) {
    // Poll with a timeout so Stop() is noticed without closing the fd under
    // a blocked accept().
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: the backlog waits; retrying at once would spin.
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    ucred peer{};
    socklen_t peer_len = sizeof(peer);
    ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len);
    Dispatch(Accepted{fd, peer.uid});
  }
}

void HttpServer::Dispatch(Accepted connection) {
  std::string refused;
  {
    std::lock_guard lock(mu_);
    int& for_uid = open_per_uid_[connection.uid];
    if (static_cast<int>(open_fds_.size()) >= config_.max_connections) {
      ++counters_.refused_busy;
      refused = absl::StrCat("too many connections (", open_fds_.size(), " open, server.max_connections = ",
                             config_.max_connections, ")");
    } else if (for_uid >= config_.max_connections_per_uid) {
      ++counters_.refused_uid;
      refused = absl::StrCat("too many connections from uid ", connection.uid, " (", for_uid,
                             " open, server.max_connections_per_uid = ", config_.max_connections_per_uid, ")");
    }
    if (for_uid == 0 && !refused.empty()) open_per_uid_.erase(connection.uid);
    if (refused.empty()) {
      ++for_uid;
      ++counters_.accepted;
      open_fds_.push_back(connection.fd);
      pending_.push_back(connection);
      // A thread per open connection at most: start one only when none is
      // idle, so the pool grows to the peak of concurrent connections and
      // stays there.
      if (idle_workers_ < static_cast<int>(pending_.size())) {
        workers_.emplace_back([this] { WorkerLoop(); });
      }
      work_ready_.notify_one();
      return;
    }
    if (overflow_.size() < kOverflowQueue) {
      overflow_.emplace_back(connection, refused);
      overflow_ready_.notify_one();
      return;
    }
    ++counters_.overflow_dropped;
  }
  uint64_t suppressed = 0;
  if (refusal_log_.Allow(&suppressed)) {
    spdlog::warn("uid {}: connection refused unread: {}; overflow queue full{}", connection.uid, refused,
                 suppressed > 0 ? absl::StrCat(" (", suppressed, " similar lines suppressed)") : "");
  }
  static constexpr char kBusy[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
      "Content-Length: 73\r\n\r\n{\"error\":{\"message\":\"too many connections\",\"type\":\"overloaded\",\"param\":null}}";
  [[maybe_unused]] ssize_t ignored = ::send(connection.fd, kBusy, sizeof(kBusy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  ::close(connection.fd);
}

void HttpServer::WorkerLoop() {
  pthread_setname_np(pthread_self(), "expertd-conn");
  std::unique_lock lock(mu_);
  while (true) {
    ++idle_workers_;
    work_ready_.wait(lock, [&] { return !pending_.empty() || (stopping_ && workers_.empty()); });
    --idle_workers_;
    if (pending_.empty()) return;  // the destructor took the threads to join
    const Accepted connection = pending_.front();
    pending_.pop_front();
    lock.unlock();
    Serve(connection);
    lock.lock();
    // Forget the fd before the socket closes it (Serve's connection object
    // has closed it by now, but no other fd can be this one while it is
    // listed: it is removed under the same lock), so shutdown never touches
    // a reused descriptor.
    open_fds_.erase(std::find(open_fds_.begin(), open_fds_.end(), connection.fd));
    if (--open_per_uid_[connection.uid] == 0) open_per_uid_.erase(connection.uid);
    connection_closed_.notify_all();
  }
}

void HttpServer::OverflowLoop() {
  pthread_setname_np(pthread_self(), "expertd-overflow");
  std::unique_lock lock(mu_);
  while (true) {
    overflow_ready_.wait(lock, [&] { return !overflow_.empty() || stopping_; });
    if (overflow_.empty()) return;
    auto [connection, reason] = std::move(overflow_.front());
    overflow_.pop_front();
    lock.unlock();
    ServeOverflow(connection, reason);
    lock.lock();
  }
}

void HttpServer::ServeOverflow(const Accepted& accepted, const std::string& reason) {
  TimedConnection connection(accepted.fd, std::chrono::duration_cast<std::chrono::milliseconds>(kOverflowReadTimeout));
  beast::flat_buffer buffer;
  http::request_parser<http::string_body> parser;
  ConfigureRequestParser(parser, config_.max_body_bytes);
  beast::error_code ec;
  connection.Read(buffer, parser, ec);
  if (!ec) {
    const auto& request = parser.get();
    const std::string target(request.target());
    if (request.method() == http::verb::get && target == "/health") {
      connection.Write(JsonResponse(http::status::ok, {{"status", "ok"}, {"model", service_.model_name()}},
                                    request.version(), false),
                       ec);
    } else if (request.method() == http::verb::get && target == "/metrics") {
      connection.Write(PlainResponse(Metrics(), request.version(), false), ec);
    } else {
      connection.Write(ErrorResponse(ApiError{503, reason, "", "overloaded"}, request.version(), false), ec);
      uint64_t suppressed = 0;
      if (refusal_log_.Allow(&suppressed)) {
        spdlog::warn("uid {} {} {} 503: {}{}", accepted.uid, std::string(request.method_string()), target, reason,
                     suppressed > 0 ? absl::StrCat(" (", suppressed, " similar lines suppressed)") : "");
      }
    }
  }
  connection.Shutdown();
}

void HttpServer::Serve(const Accepted& accepted) {
  // A client slower than this on a read or write is dropped.
  TimedConnection connection(accepted.fd, std::chrono::milliseconds(config_.read_timeout_ms));
  beast::flat_buffer buffer;
  const std::string& model_name = service_.model_name();
  auto log_malformed = [&](int code, const std::string& what) {
    {
      std::lock_guard lock(mu_);
      ++counters_.malformed_requests;
    }
    uint64_t suppressed = 0;
    if (malformed_log_.Allow(&suppressed)) {
      spdlog::warn("uid {}: {} {}{}", accepted.uid, code, what,
                   suppressed > 0 ? absl::StrCat(" (", suppressed, " similar lines suppressed)") : "");
    }
  };

  while (!stopping_) {
    http::request_parser<http::string_body> parser;
    ConfigureRequestParser(parser, config_.max_body_bytes);
    beast::error_code ec;
    connection.Read(buffer, parser, ec);
    if (ec == http::error::body_limit) {
      ApiError error{413, absl::StrCat("request body exceeds ", config_.max_body_bytes, " bytes (server.max_body)"),
                     "", "invalid_request_error"};
      log_malformed(413, error.message);
      connection.Write(ErrorResponse(error, 11, false), ec);
      break;
    }
    if (ec == asio::error::timed_out) {
      // Idle between keep-alive requests, or stalled inside one.
      if (buffer.size() > 0 || parser.got_some()) {
        spdlog::info("uid {}: request not received within {} ms; connection dropped", accepted.uid,
                     config_.read_timeout_ms);
      }
      break;
    }
    if (ec) {
      if (ec != http::error::end_of_stream && ec != asio::error::eof && ec != asio::error::connection_reset &&
          !stopping_) {
        auto error = ApiError{400, absl::StrCat("malformed HTTP request: ", ec.message()), "", "invalid_request_error"};
        log_malformed(400, error.message);
        connection.Write(ErrorResponse(error, 11, false), ec);
      }
      break;
    }
    const auto start = std::chrono::steady_clock::now();
    http::request<http::string_body> request = parser.release();
    const bool keep_alive = request.keep_alive();
    const std::string target(request.target());
    int status_code = 200;
    std::string summary;

    auto send = [&](http::response<http::string_body> response) {
      status_code = response.result_int();
      connection.Write(response, ec);
    };

    if (request.method() == http::verb::get && target == "/health") {
      send(JsonResponse(http::status::ok, {{"status", "ok"}, {"model", model_name}}, request.version(), keep_alive));
    } else if (request.method() == http::verb::get && target == "/v1/models") {
      send(JsonResponse(http::status::ok,
                        {{"object", "list"},
                         {"data", {{{"id", model_name}, {"object", "model"}, {"created", started_at_}, {"owned_by", "expertd"}}}}},
                        request.version(), keep_alive));
    } else if (request.method() == http::verb::get && target == "/v1/stats") {
      json stats = service_.Stats();
      const Counters c = counters();
      stats["connections"] = {{"open", c.open},
                              {"threads", c.threads},
                              {"accepted", c.accepted},
                              {"refused_busy", c.refused_busy},
                              {"refused_uid", c.refused_uid},
                              {"refused_unread", c.overflow_dropped},
                              {"malformed_requests", c.malformed_requests},
                              {"max_connections", config_.max_connections},
                              {"max_connections_per_uid", config_.max_connections_per_uid}};
      send(JsonResponse(http::status::ok, stats, request.version(), keep_alive));
    } else if (request.method() == http::verb::get && target == "/metrics") {
      send(PlainResponse(Metrics(), request.version(), keep_alive));
    } else if ((target == "/v1/completions" || target == "/v1/chat/completions") &&
               request.method() == http::verb::post) {
      const bool chat = target == "/v1/chat/completions";
      CompletionRequest completion;
      ChatRequest chat_request;
      ApiError error;
      const bool ok = chat ? ParseChatRequest(request.body(), service_.model(), chat_template_, model_name,
                                              service_.limits(), &chat_request, &error)
                           : ParseCompletionRequest(request.body(), service_.model(), model_name, service_.limits(),
                                                    &completion, &error);
      if (!ok) {
        summary = absl::StrCat(error.param.empty() ? "" : absl::StrCat(error.param, ": "), error.message);
        send(ErrorResponse(error, request.version(), keep_alive));
      } else {
        AnswerShape shape;
        shape.chat = chat;
        // Unique per daemon run: connections reuse fds, so the number counts
        // generation requests across all of them.
        shape.id = absl::StrCat(chat ? "chatcmpl-" : "cmpl-", ::getpid(), "-", ++generation_requests_);
        shape.created = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
        shape.model = model_name;
        // Each choice echoes its own prompt (ServeGeneration); non-empty marks that echo is on.
        if (!chat && completion.echo) shape.echo = completion.prompts.front().text;
        const Served served = ServeGeneration(service_, connection, request.version(), keep_alive,
                                              chat ? chat_request : completion, shape, ec);
        status_code = served.status_code;
        summary = served.summary;
        if (served.streamed || status_code == kClientClosedRequest) {
          spdlog::log(status_code >= 500 ? spdlog::level::warn : spdlog::level::info, "uid {} POST {} {} in {:.3f} s: {}",
                      accepted.uid, target, status_code, Since(start), summary);
          break;  // the stream's end closes the connection; a client gone has nothing more to ask
        }
      }
    } else {
      const bool known = target == "/health" || target == "/v1/models" || target == "/v1/stats" || target == "/metrics" ||
                         target == "/v1/completions" || target == "/v1/chat/completions";
      send(ErrorResponse(known ? ApiError{405, absl::StrCat("method ", std::string(request.method_string()),
                                                            " is not allowed on ", target), "", "invalid_request_error"}
                               : ApiError{404, absl::StrCat("no such endpoint: ", target), "", "not_found_error"},
                         request.version(), keep_alive));
    }
    // Monitoring polls (/health, /metrics) log at debug level only; failures
    // at warn, with their reason.
    const bool monitoring = status_code == 200 && (target == "/health" || target == "/metrics");
    spdlog::log(status_code >= 500 ? spdlog::level::warn : monitoring ? spdlog::level::debug : spdlog::level::info,
                "uid {} {} {} {} in {:.3f} s{}{}", accepted.uid, std::string(request.method_string()), target,
                status_code, Since(start), summary.empty() ? "" : ": ", summary);
    if (ec || !keep_alive) break;
  }
  connection.Shutdown();
}

}  // namespace expertd::daemon
