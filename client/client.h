#ifndef EXPERTD_CLIENT_CLIENT_H_
#define EXPERTD_CLIENT_CLIENT_H_

// A synchronous client for expertd's HTTP/1.1 + JSON API on its Unix socket
// (DESIGN.md §7). Installed as <expertd/client.h>; in-tree it is
// "client/client.h". Only Abseil and nlohmann_json appear here, so apps that
// find_package(expertd) need no Boost.

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace expertd::client {

// The socket expertctl talks to when --socket is not given:
// `expertd_socket_env` ($EXPERTD_SOCKET) when set and non-empty, else
// /run/expertd/expertd.sock when that file exists (the system service), else
// $XDG_RUNTIME_DIR/expertd.sock (a daemon run by this user), else the system
// path anyway so the connection error names it. Arguments may be null.
std::string DefaultSocketPath(const char* expertd_socket_env, const char* xdg_runtime_dir);

// The HTTP status code of an error the server answered with (carried as a
// payload of the Status the Client returns); nullopt for errors that never
// got an HTTP answer (connection refused, timeout, malformed reply).
std::optional<int> HttpStatusOf(const absl::Status& status);

// One object per daemon; each call opens its own connection, so a Client is
// cheap, holds no socket between calls, and may be used from several threads
// at once.
//
// Errors: an HTTP error answer becomes a Status whose message is the
// server's error message (with its type and the offending field), coded
// 400/413 -> InvalidArgument, 401/403 -> PermissionDenied, 404 -> NotFound,
// 408/504 -> DeadlineExceeded, 429 -> ResourceExhausted, 501 ->
// Unimplemented, 503 -> Unavailable, other 5xx -> Internal, other 4xx ->
// FailedPrecondition; HttpStatusOf() gives the code. No socket or nobody
// listening -> Unavailable naming the path; no permission on the socket ->
// PermissionDenied; no reply within `timeout` -> DeadlineExceeded.
class Client {
 public:
  using ChunkCallback = std::function<void(const nlohmann::json& chunk)>;

  // `timeout` bounds connecting, sending, and each wait for more of the
  // reply: a stream may run longer as long as tokens keep arriving, but a
  // non-streamed completion must finish within it.
  explicit Client(std::string socket_path, std::chrono::milliseconds timeout = std::chrono::seconds(30));

  const std::string& socket_path() const { return socket_path_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // GET /health: {"status":"ok"}.
  absl::StatusOr<nlohmann::json> Health() const;
  // GET /v1/models: {"object":"list","data":[{"id":...,"object":"model"}]}.
  absl::StatusOr<nlohmann::json> Models() const;
  // GET /v1/stats: the daemon's figures, passed through as they come.
  absl::StatusOr<nlohmann::json> Stats() const;

  // POST /v1/completions with "stream": false (whatever `request` says).
  // `request` must be a JSON object ({"prompt", "max_tokens", ...}).
  absl::StatusOr<nlohmann::json> Complete(const nlohmann::json& request) const;
  // POST /v1/completions with "stream": true; calls `on_chunk` with each
  // server-sent event's JSON as soon as it arrives (chunk["choices"][0]
  // ["text"] is the new text) and returns OK after "data: [DONE]". A stream
  // that ends without [DONE] is Unavailable; an event carrying {"error":...}
  // ends the call with that error.
  absl::Status CompleteStream(const nlohmann::json& request, const ChunkCallback& on_chunk) const;

  // The same for POST /v1/chat/completions ({"messages": [...], ...});
  // streamed chunks carry choices[0].delta.content.
  absl::StatusOr<nlohmann::json> ChatComplete(const nlohmann::json& request) const;
  absl::Status ChatCompleteStream(const nlohmann::json& request, const ChunkCallback& on_chunk) const;

 private:
  absl::StatusOr<nlohmann::json> Call(const char* method, const std::string& target,
                                      const nlohmann::json* body) const;
  absl::Status CallStream(const std::string& target, const nlohmann::json& request,
                          const ChunkCallback& on_chunk) const;

  std::string socket_path_;
  std::chrono::milliseconds timeout_;
};

}  // namespace expertd::client

#endif  // EXPERTD_CLIENT_CLIENT_H_
