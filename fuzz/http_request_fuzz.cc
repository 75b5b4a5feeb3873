// The daemon's HTTP/1.1 request parsing (daemon/http_request_parser.h):
// Beast's request parser with the server's limits, fed by Beast's read loop
// as http::async_read feeds it from a socket.
//
// Input: byte 0 picks where the rest splits into two socket reads; the rest
// is everything a client sent on one connection before closing it. Requests
// are parsed one after another from the leftover bytes while the previous
// one keeps the connection alive, as HttpServer::Serve does.
//
// Asserts beyond "no crash": a parsed body never exceeds the body limit; a
// request takes at least one byte and no more than were sent; a parsed
// request has a method and a target; and one read or two give the same
// result (the parser must not depend on where the socket split the bytes).

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "daemon/http_request_parser.h"
#include "fuzz/fuzz_util.h"

namespace {

// Small, so the fuzzer reaches the limit (chunked or not) with short inputs;
// the server's own default is 1 MiB, through the same ConfigureRequestParser.
constexpr uint64_t kMaxBodyBytes = 1024;
constexpr int kMaxRequestsPerConnection = 16;

bool SameResult(const absl::StatusOr<expertd::ParsedHttpRequest>& a,
                const absl::StatusOr<expertd::ParsedHttpRequest>& b) {
  if (a.ok() != b.ok()) return false;
  if (!a.ok()) return a.status() == b.status();
  return a->method == b->method && a->target == b->target && a->version == b->version &&
         a->keep_alive == b->keep_alive && a->body == b->body && a->consumed_bytes == b->consumed_bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  absl::string_view sent(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t split = sent.size() * data[0] / 255;

  for (int i = 0; i < kMaxRequestsPerConnection && !sent.empty(); ++i) {
    const absl::string_view one_read[] = {sent};
    const absl::StatusOr<expertd::ParsedHttpRequest> request = expertd::ParseHttpRequest(one_read, kMaxBodyBytes);
    // The split applies to the first request only: later ones start
    // wherever the previous ended.
    const size_t at = i == 0 ? split : sent.size() / 2;
    const absl::string_view two_reads[] = {sent.substr(0, at), sent.substr(at)};
    FUZZ_CHECK(SameResult(request, expertd::ParseHttpRequest(two_reads, kMaxBodyBytes)));
    if (!request.ok()) break;

    FUZZ_CHECK(request->body.size() <= kMaxBodyBytes);
    FUZZ_CHECK(request->consumed_bytes > 0 && request->consumed_bytes <= sent.size());
    FUZZ_CHECK(!request->method.empty() && !request->target.empty());
    if (!request->keep_alive) break;
    sent.remove_prefix(request->consumed_bytes);
  }
  return 0;
}
