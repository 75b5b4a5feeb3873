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
// request has a method and a target; and one read or two accept or refuse
// alike, and accept the same request (the parser must not depend on where
// the socket split the bytes).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "daemon/http_request_parser.h"
#include "fuzz/fuzz_util.h"

namespace {

// Small, so the fuzzer reaches the limit (chunked or not) with short inputs;
// the server's own default is 1 MiB, through the same ConfigureRequestParser.
constexpr uint64_t kMaxBodyBytes = 1024;
constexpr int kMaxRequestsPerConnection = 16;

bool SameResult(const absl::StatusOr<expertd::daemon::ParsedHttpRequest>& a,
                const absl::StatusOr<expertd::daemon::ParsedHttpRequest>& b) {
  if (a.ok() != b.ok()) return false;
  // Errors may differ in kind: after a read ends inside the header, Beast
  // waits for the header's end before parsing on, so a bad line ending seen
  // at once in one read becomes "partial message" at end of input. Either
  // way the server answers 400.
  if (!a.ok()) return true;
  return a->method == b->method && a->target == b->target && a->version == b->version &&
         a->keep_alive == b->keep_alive && a->body == b->body && a->consumed_bytes == b->consumed_bytes;
}

std::string Describe(const absl::StatusOr<expertd::daemon::ParsedHttpRequest>& r) {
  if (!r.ok()) return r.status().ToString();
  return absl::StrCat(r->method, " ", r->target, " version ", r->version, " keep_alive ", r->keep_alive, " body ",
                      r->body.size(), " bytes, consumed ", r->consumed_bytes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  absl::string_view sent(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t split = sent.size() * data[0] / 255;

  for (int i = 0; i < kMaxRequestsPerConnection && !sent.empty(); ++i) {
    const absl::string_view one_read[] = {sent};
    const absl::StatusOr<expertd::daemon::ParsedHttpRequest> request = expertd::daemon::ParseHttpRequest(one_read, kMaxBodyBytes);
    // The split applies to the first request only: later ones start
    // wherever the previous ended.
    const size_t at = i == 0 ? split : sent.size() / 2;
    const absl::string_view two_reads[] = {sent.substr(0, at), sent.substr(at)};
    const absl::StatusOr<expertd::daemon::ParsedHttpRequest> split_request = expertd::daemon::ParseHttpRequest(two_reads, kMaxBodyBytes);
    if (!SameResult(request, split_request)) {
      std::fprintf(stderr, "one read: %s\nsplit at %zu: %s\n", Describe(request).c_str(), at,
                   Describe(split_request).c_str());
    }
    FUZZ_CHECK(SameResult(request, split_request));
    if (!request.ok()) break;

    FUZZ_CHECK(request->body.size() <= kMaxBodyBytes);
    FUZZ_CHECK(request->consumed_bytes > 0 && request->consumed_bytes <= sent.size());
    FUZZ_CHECK(!request->method.empty() && !request->target.empty());
    if (!request->keep_alive) break;
    sent.remove_prefix(request->consumed_bytes);
  }
  return 0;
}
