#ifndef EXPERTD_DAEMON_HTTP_REQUEST_PARSER_H_
#define EXPERTD_DAEMON_HTTP_REQUEST_PARSER_H_

// How the daemon reads an HTTP/1.1 request: one Boost.Beast request parser,
// configured in one place so the server (daemon/http_server.cc) and the
// fuzzer (fuzz/http_request_fuzz.cc) parse with the same limits.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "boost/beast/http/parser.hpp"
#include "boost/beast/http/string_body.hpp"

namespace expertd::daemon {

// Request line plus headers. Beast's default (8 KiB) is enough for curl, but
// not for every OpenAI client that sends long auth or tracing headers; 64 KiB
// still bounds what a connection thread buffers before the body limit
// applies.
inline constexpr uint32_t kMaxRequestHeaderBytes = 64 * 1024;

// Sets the limits every request is read under: the body (after any chunked
// decoding) may hold at most max_body_bytes (server.max_body_bytes; more is
// http::error::body_limit, answered with 413), the header
// kMaxRequestHeaderBytes (http::error::header_limit, answered with 400).
void ConfigureRequestParser(boost::beast::http::request_parser<boost::beast::http::string_body>& parser,
                            uint64_t max_body_bytes);

// What the server looks at in a request.
struct ParsedHttpRequest {
  std::string method;  // as sent: "GET", "POST", ...
  std::string target;  // "/v1/completions"
  unsigned version = 11;  // 10 * major + minor, as sent (11 for HTTP/1.1)
  bool keep_alive = false;
  std::string body;  // chunked bodies decoded
  // Bytes of the input this request took; the next request on a keep-alive
  // connection starts there.
  uint64_t consumed_bytes = 0;
};

// Parses the first request in `reads`, the bytes of successive reads from a
// socket that closes after the last one, with a parser configured as above
// and Beast's own read loop (http::read), so each read's boundaries reach
// the parser as they would from a client. Errors: ResourceExhausted for a
// body over max_body_bytes, OutOfRange when the input holds no byte of a
// request (the client closed an idle connection), InvalidArgument for a
// malformed or incomplete request; the message carries Beast's reason.
absl::StatusOr<ParsedHttpRequest> ParseHttpRequest(absl::Span<const absl::string_view> reads,
                                                   uint64_t max_body_bytes);

}  // namespace expertd::daemon

#endif  // EXPERTD_DAEMON_HTTP_REQUEST_PARSER_H_
