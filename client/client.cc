#include "client/client.h"

#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace expertd::client {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Json = nlohmann::json;
using Stream = beast::basic_stream<asio::local::stream_protocol>;
using ResponseParser = http::response_parser<http::buffer_body>;

constexpr absl::string_view kHttpStatusPayload = "type.expertd/http_status";
constexpr char kSystemSocketPath[] = "/run/expertd/expertd.sock";
// A non-streamed answer bigger than this is a daemon bug, not a reply.
constexpr uint64_t kMaxJsonBodyBytes = 64ull << 20;
// Bytes of a bad reply quoted in an error message.
constexpr size_t kQuoteBytes = 200;

std::string Quote(absl::string_view text) {
  if (text.size() <= kQuoteBytes) return std::string(text);
  return absl::StrCat(text.substr(0, kQuoteBytes), "...");
}

absl::string_view View(const std::string& s) { return absl::string_view(s.data(), s.size()); }

// Serialises without throwing on invalid UTF-8 in a prompt.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

absl::StatusCode CodeForHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
    case 413:  // body over the daemon's limit: the request must shrink
      return absl::StatusCode::kInvalidArgument;
    case 401:
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 408:
    case 504:
      return absl::StatusCode::kDeadlineExceeded;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 501:
      return absl::StatusCode::kUnimplemented;
    case 503:  // queue full: back-pressure, worth retrying
      return absl::StatusCode::kUnavailable;
    default:
      return http_status >= 500 ? absl::StatusCode::kInternal : absl::StatusCode::kFailedPrecondition;
  }
}

// The server's {"error":{"message","type","param"}} as a Status, or the raw
// body when it is not that shape (a proxy, a crash page).
absl::Status ErrorFromAnswer(int http_status, absl::string_view method, absl::string_view target,
                             absl::string_view body) {
  std::string detail;
  Json parsed = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_object()) {
    const Json& error = parsed["error"];
    std::string message = error.value("message", std::string("(no message)"));
    std::string qualifiers;
    if (error.contains("type") && error["type"].is_string()) {
      absl::StrAppend(&qualifiers, ", ", error["type"].get<std::string>());
    }
    if (error.contains("param") && error["param"].is_string()) {
      absl::StrAppend(&qualifiers, ", field '", error["param"].get<std::string>(), "'");
    }
    detail = absl::StrCat(message, " (HTTP ", http_status, qualifiers, ")");
  } else {
    detail = absl::StrCat("HTTP ", http_status, body.empty() ? "" : ": ", Quote(body));
  }
  absl::Status status(CodeForHttpStatus(http_status), absl::StrCat("expertd: ", method, " ", target, ": ", detail));
  status.SetPayload(kHttpStatusPayload, absl::Cord(absl::StrCat(http_status)));
  return status;
}

// One HTTP exchange on one connection. Beast's synchronous calls have no
// timeouts, so each step runs as an async operation on a private io_context
// and basic_stream's expiry cancels it.
class Connection {
 public:
  Connection(const std::string& socket_path, std::chrono::milliseconds timeout)
      : socket_path_(socket_path), timeout_(timeout), stream_(ioc_) {}

  absl::Status Connect() {
    if (socket_path_.empty()) {
      return absl::InvalidArgumentError("expertd socket path is empty; pass --socket or set EXPERTD_SOCKET");
    }
    if (socket_path_.size() >= sizeof(sockaddr_un::sun_path)) {
      return absl::InvalidArgumentError(absl::StrCat("expertd socket path '", socket_path_, "' is ",
                                                     socket_path_.size(), " bytes; Unix sockets allow at most ",
                                                     sizeof(sockaddr_un::sun_path) - 1));
    }
    asio::local::stream_protocol::endpoint endpoint(socket_path_);
    beast::error_code ec = Run([&](auto handler) { stream_.async_connect(endpoint, std::move(handler)); });
    if (!ec) return absl::OkStatus();
    if (ec == boost::system::errc::no_such_file_or_directory || ec == boost::system::errc::not_a_directory) {
      return absl::UnavailableError(absl::StrCat("cannot connect to expertd at ", socket_path_,
                                                 ": no such socket, so the daemon is not running there "
                                                 "(start expertd, or point --socket / EXPERTD_SOCKET at its socket)"));
    }
    if (ec == asio::error::connection_refused) {
      return absl::UnavailableError(absl::StrCat("cannot connect to expertd at ", socket_path_,
                                                 ": connection refused, so the daemon is not running "
                                                 "(the socket file is left over from an earlier run); start expertd"));
    }
    if (ec == asio::error::access_denied || ec == asio::error::no_permission) {
      return absl::PermissionDeniedError(absl::StrCat("cannot connect to expertd at ", socket_path_,
                                                      ": permission denied; the daemon is running but this user "
                                                      "is not in the socket's group (see server.socket_group)"));
    }
    return StepError("connect to", ec);
  }

  absl::Status Send(http::request<http::string_body>& request) {
    beast::error_code ec = Run([&](auto handler) { http::async_write(stream_, request, std::move(handler)); });
    return ec ? StepError("send the request to", ec) : absl::OkStatus();
  }

  absl::Status ReadHead(ResponseParser& parser) {
    beast::error_code ec = Run([&](auto handler) { http::async_read_header(stream_, buffer_, parser, std::move(handler)); });
    return ec ? StepError("read the reply from", ec) : absl::OkStatus();
  }

  // Reads body bytes as they arrive (not waiting for `sink`'s worth) and
  // hands each piece to `sink`, which returns false to stop early. Ends when
  // the body is complete, the sink stops, or with an error.
  template <typename Sink>
  absl::Status ReadBody(ResponseParser& parser, Sink&& sink) {
    char piece[16 * 1024];
    while (!parser.is_done()) {
      parser.get().body().data = piece;
      parser.get().body().size = sizeof(piece);
      beast::error_code ec = Run([&](auto handler) { http::async_read_some(stream_, buffer_, parser, std::move(handler)); });
      // need_buffer only says `piece` is full; it is emptied below.
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return StepError("read the reply from", ec);
      size_t filled = sizeof(piece) - parser.get().body().size;
      if (filled == 0) continue;
      absl::StatusOr<bool> more = sink(absl::string_view(piece, filled));
      if (!more.ok()) return more.status();
      if (!*more) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

 private:
  template <typename Start>
  beast::error_code Run(Start&& start) {
    beast::error_code result = asio::error::operation_aborted;
    stream_.expires_after(timeout_);
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  absl::Status StepError(absl::string_view step, const beast::error_code& ec) const {
    if (ec == beast::error::timeout) {
      return absl::DeadlineExceededError(absl::StrCat("no answer from expertd at ", socket_path_, " within ",
                                                      timeout_.count(),
                                                      " ms; the daemon may be overloaded or stuck "
                                                      "(raise the timeout, or check its log)"));
    }
    if (ec == http::error::partial_message || ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::broken_pipe) {
      return absl::UnavailableError(absl::StrCat("expertd at ", socket_path_,
                                                 " closed the connection mid-reply (", ec.message(),
                                                 "); the daemon may have stopped or dropped the request, see its log"));
    }
    if (ec.category() == http::make_error_code(http::error::body_limit).category()) {  // beast's parse errors
      return absl::DataLossError(absl::StrCat("expertd at ", socket_path_, " sent a malformed HTTP reply: ",
                                              ec.message()));
    }
    return absl::UnavailableError(absl::StrCat("cannot ", step, " expertd at ", socket_path_, ": ", ec.message()));
  }

  const std::string& socket_path_;
  std::chrono::milliseconds timeout_;
  asio::io_context ioc_;
  Stream stream_;
  beast::flat_buffer buffer_;
};

http::request<http::string_body> MakeRequest(http::verb verb, const std::string& target, std::string body) {
  http::request<http::string_body> request(verb, target, 11);
  request.set(http::field::host, "localhost");
  request.set(http::field::user_agent, "expertd-client");
  request.keep_alive(false);
  if (verb == http::verb::post) {
    request.set(http::field::content_type, "application/json");
    request.body() = std::move(body);
    request.prepare_payload();
  }
  return request;
}

// Splits a text/event-stream into events (https://html.spec.whatwg.org/
// multipage/server-sent-events.html): lines end in LF or CRLF, a blank line
// ends an event, "data:" lines join with LF, comments and other fields are
// skipped. Bytes may arrive split anywhere.
class SseDecoder {
 public:
  // Calls on_event(data) for each complete event that carries data; stops at
  // the first error on_event returns.
  template <typename OnEvent>
  absl::Status Feed(absl::string_view bytes, OnEvent&& on_event) {
    pending_.append(bytes.data(), bytes.size());
    size_t start = 0;
    for (size_t end; (end = pending_.find('\n', start)) != std::string::npos; start = end + 1) {
      absl::string_view line(pending_.data() + start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) {
        if (has_data_) {
          has_data_ = false;
          absl::Status status = on_event(View(data_));
          data_.clear();
          if (!status.ok()) return status;
        }
        continue;
      }
      if (line.front() == ':') continue;
      size_t colon = line.find(':');
      absl::string_view field = line.substr(0, colon);
      absl::string_view value = colon == absl::string_view::npos ? absl::string_view() : line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      if (field != "data") continue;
      if (has_data_) data_.push_back('\n');
      data_.append(value.data(), value.size());
      has_data_ = true;
    }
    pending_.erase(0, start);
    return absl::OkStatus();
  }

 private:
  std::string pending_;  // bytes after the last complete line
  std::string data_;     // the current event's data so far
  bool has_data_ = false;
};

std::string ContentType(const ResponseParser& parser) {
  auto it = parser.get().find(http::field::content_type);
  return it == parser.get().end() ? std::string() : std::string(it->value());
}

}  // namespace

std::string DefaultSocketPath(const char* expertd_socket_env, const char* xdg_runtime_dir) {
  if (expertd_socket_env != nullptr && *expertd_socket_env != '\0') return expertd_socket_env;
  std::error_code ignored;
  if (std::filesystem::exists(kSystemSocketPath, ignored)) return kSystemSocketPath;
  if (xdg_runtime_dir != nullptr && *xdg_runtime_dir != '\0') {
    return absl::StrCat(xdg_runtime_dir, "/expertd.sock");
  }
  return kSystemSocketPath;
}

std::optional<int> HttpStatusOf(const absl::Status& status) {
  auto payload = status.GetPayload(kHttpStatusPayload);  // absl::optional<absl::Cord>
  int code = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &code)) return std::nullopt;
  return code;
}

Client::Client(std::string socket_path, std::chrono::milliseconds timeout)
    : socket_path_(std::move(socket_path)), timeout_(timeout) {}

absl::StatusOr<Json> Client::Health() const { return Call("GET", "/health", nullptr); }
absl::StatusOr<Json> Client::Models() const { return Call("GET", "/v1/models", nullptr); }
absl::StatusOr<Json> Client::Stats() const { return Call("GET", "/v1/stats", nullptr); }

absl::StatusOr<Json> Client::Complete(const Json& request) const {
  if (!request.is_object()) return absl::InvalidArgumentError("completion request must be a JSON object");
  Json body = request;
  body["stream"] = false;
  return Call("POST", "/v1/completions", &body);
}

absl::StatusOr<Json> Client::ChatComplete(const Json& request) const {
  if (!request.is_object()) return absl::InvalidArgumentError("chat request must be a JSON object");
  Json body = request;
  body["stream"] = false;
  return Call("POST", "/v1/chat/completions", &body);
}

absl::Status Client::CompleteStream(const Json& request, const ChunkCallback& on_chunk) const {
  return CallStream("/v1/completions", request, on_chunk);
}

absl::Status Client::ChatCompleteStream(const Json& request, const ChunkCallback& on_chunk) const {
  return CallStream("/v1/chat/completions", request, on_chunk);
}

absl::StatusOr<Json> Client::Call(const char* method, const std::string& target, const Json* body) const {
  Connection connection(socket_path_, timeout_);
  if (absl::Status s = connection.Connect(); !s.ok()) return s;
  http::verb verb = body == nullptr ? http::verb::get : http::verb::post;
  auto request = MakeRequest(verb, target, body == nullptr ? std::string() : Dump(*body));
  if (absl::Status s = connection.Send(request); !s.ok()) return s;

  ResponseParser parser;
  parser.body_limit(kMaxJsonBodyBytes);
  if (absl::Status s = connection.ReadHead(parser); !s.ok()) return s;
  std::string text;
  absl::Status read = connection.ReadBody(parser, [&text](absl::string_view piece) -> absl::StatusOr<bool> {
    text.append(piece.data(), piece.size());
    return true;
  });
  if (!read.ok()) return read;

  int http_status = static_cast<int>(parser.get().result_int());
  if (http_status < 200 || http_status > 299) return ErrorFromAnswer(http_status, method, target, View(text));
  Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return absl::DataLossError(absl::StrCat("expertd: ", method, " ", target, " answered HTTP ", http_status,
                                            " with a body that is not JSON: ", Quote(View(text))));
  }
  return parsed;
}

absl::Status Client::CallStream(const std::string& target, const Json& request, const ChunkCallback& on_chunk) const {
  if (!request.is_object()) return absl::InvalidArgumentError(absl::StrCat(target, " request must be a JSON object"));
  Json body = request;
  body["stream"] = true;

  Connection connection(socket_path_, timeout_);
  if (absl::Status s = connection.Connect(); !s.ok()) return s;
  auto http_request = MakeRequest(http::verb::post, target, Dump(body));
  http_request.set(http::field::accept, "text/event-stream");
  if (absl::Status s = connection.Send(http_request); !s.ok()) return s;

  ResponseParser parser;
  if (absl::Status s = connection.ReadHead(parser); !s.ok()) return s;
  int http_status = static_cast<int>(parser.get().result_int());

  if (http_status < 200 || http_status > 299) {
    parser.body_limit(kMaxJsonBodyBytes);
    std::string text;
    absl::Status read = connection.ReadBody(parser, [&text](absl::string_view piece) -> absl::StatusOr<bool> {
      text.append(piece.data(), piece.size());
      return true;
    });
    // An error answer cut short still says more than the cut.
    if (!read.ok() && text.empty()) return read;
    return ErrorFromAnswer(http_status, "POST", target, View(text));
  }
  std::string content_type = ContentType(parser);
  if (!content_type.empty() && absl::string_view(content_type).substr(0, 17) != "text/event-stream") {
    return absl::DataLossError(absl::StrCat("expertd: POST ", target, " with \"stream\": true answered with ",
                                            content_type, ", not text/event-stream; is the daemon older than "
                                            "this client?"));
  }

  // A stream lasts as long as the generation; only the wait for each piece
  // is bounded (by the connection's timeout).
  parser.body_limit(std::numeric_limits<uint64_t>::max());
  SseDecoder decoder;
  bool done = false;
  size_t events = 0;
  auto on_event = [&](absl::string_view data) -> absl::Status {
    if (data == "[DONE]") {
      done = true;
      return absl::OkStatus();
    }
    if (done) return absl::OkStatus();  // nothing is meant to follow [DONE]
    Json chunk = Json::parse(data.begin(), data.end(), nullptr, /*allow_exceptions=*/false);
    if (chunk.is_discarded()) {
      return absl::DataLossError(absl::StrCat("expertd: POST ", target, " stream event ", events + 1,
                                              " is not JSON: ", Quote(data)));
    }
    if (chunk.is_object() && chunk.contains("error")) {
      // A failure after the 200 head went out can only be told in-band.
      return ErrorFromAnswer(500, "POST", target, data);
    }
    ++events;
    on_chunk(chunk);
    return absl::OkStatus();
  };
  absl::Status read = connection.ReadBody(parser, [&](absl::string_view piece) -> absl::StatusOr<bool> {
    if (absl::Status s = decoder.Feed(piece, on_event); !s.ok()) return s;
    return !done;
  });
  if (!read.ok()) return read;
  if (!done) {
    return absl::UnavailableError(absl::StrCat("expertd at ", socket_path_, " ended the stream of POST ", target,
                                               " after ", events,
                                               " chunks without [DONE]; the daemon may have stopped or dropped the "
                                               "request, see its log"));
  }
  return absl::OkStatus();
}

}  // namespace expertd::client
