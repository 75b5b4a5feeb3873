#include "daemon/http_request_parser.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "boost/asio/buffer.hpp"
#include "boost/asio/error.hpp"
#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http/error.hpp"
#include "boost/beast/http/read.hpp"

namespace expertd::daemon {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// A SyncReadStream over fixed reads: each read_some returns bytes of the
// current read only (never joining two), then end of file, as a socket
// whose peer wrote `reads` one at a time and closed.
class ScriptedStream {
 public:
  explicit ScriptedStream(absl::Span<const absl::string_view> reads) : reads_(reads) {}

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers, beast::error_code& ec) {
    while (next_ < reads_.size() && offset_ == reads_[next_].size()) {
      ++next_;
      offset_ = 0;
    }
    if (next_ == reads_.size()) {
      ec = asio::error::eof;
      return 0;
    }
    ec = {};
    const absl::string_view read = reads_[next_].substr(offset_);
    const size_t n = asio::buffer_copy(buffers, asio::buffer(read.data(), read.size()));
    offset_ += n;
    return n;
  }
  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers) {
    beast::error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

  // Bytes not yet handed to a reader.
  uint64_t unread_bytes() const {
    uint64_t n = 0;
    for (size_t i = next_; i < reads_.size(); ++i) n += reads_[i].size();
    return next_ < reads_.size() ? n - offset_ : 0;
  }

 private:
  absl::Span<const absl::string_view> reads_;
  size_t next_ = 0;    // the read now being served
  size_t offset_ = 0;  // bytes of it already served
};

}  // namespace

void ConfigureRequestParser(http::request_parser<http::string_body>& parser, uint64_t max_body_bytes) {
  parser.body_limit(max_body_bytes);
  parser.header_limit(kMaxRequestHeaderBytes);
}

absl::StatusOr<ParsedHttpRequest> ParseHttpRequest(absl::Span<const absl::string_view> reads,
                                                   uint64_t max_body_bytes) {
  uint64_t total_bytes = 0;
  for (absl::string_view read : reads) total_bytes += read.size();

  http::request_parser<http::string_body> parser;
  ConfigureRequestParser(parser, max_body_bytes);
  ScriptedStream stream(reads);
  beast::flat_buffer buffer;  // as the server's: unbounded, the parser's limits bound it
  beast::error_code ec;
  http::read(stream, buffer, parser, ec);
  if (ec == http::error::body_limit) {
    return absl::ResourceExhaustedError(absl::StrCat("request body exceeds ", max_body_bytes, " bytes"));
  }
  if (ec == http::error::end_of_stream) {
    return absl::OutOfRangeError("the connection closed before a request began");
  }
  if (ec) return absl::InvalidArgumentError(absl::StrCat("malformed HTTP request: ", ec.message()));

  const http::request<http::string_body>& request = parser.get();
  ParsedHttpRequest parsed;
  parsed.method = std::string(request.method_string());
  parsed.target = std::string(request.target());
  parsed.version = request.version();
  parsed.keep_alive = request.keep_alive();
  parsed.body = request.body();
  parsed.consumed_bytes = total_bytes - stream.unread_bytes() - buffer.size();
  return parsed;
}

}  // namespace expertd::daemon
