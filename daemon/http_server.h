#ifndef EXPERTD_DAEMON_HTTP_SERVER_H_
#define EXPERTD_DAEMON_HTTP_SERVER_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/config.h"
#include "daemon/inference_service.h"
#include "engine/chat_template.h"

namespace expertd {

// HTTP/1.1 + JSON on a Unix socket (Boost.Beast), OpenAI-compatible:
// POST /v1/completions and /v1/chat/completions (stream as SSE), GET
// /v1/models, /health, /v1/stats, /metrics. One thread per connection, at
// most max_connections: local clients are few, and a blocking session reads
// top to bottom. The engine runs on the service's own thread; connections
// only wait for it.
class HttpServer {
 public:
  // Creates the socket at socket_path with the configured mode and group
  // (replacing a stale socket file, refusing when a daemon answers there).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const ServerConfig& config, const std::string& socket_path,
                                                           InferenceService& service);
  ~HttpServer();
  // Stops accepting and closes the socket; open connections finish the
  // request they are serving. Idempotent.
  void Stop();

  struct Connection;

 private:
  HttpServer(const ServerConfig& config, std::string socket_path, InferenceService& service)
      : config_(config),
        socket_path_(std::move(socket_path)),
        service_(service),
        chat_template_(ChatTemplate::ForModel(service.model().tokenizer())) {}
  void AcceptLoop();
  void Serve(int fd);

  const ServerConfig config_;
  const std::string socket_path_;
  InferenceService& service_;
  const ChatTemplate chat_template_;  // the model's, recognised once at start
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<int> open_connections_{0};
  std::atomic<uint64_t> generation_requests_{0};  // numbers the response ids
  std::mutex threads_mu_;  // guards connection_threads_ and open_fds_
  std::vector<std::thread> connection_threads_;
  std::vector<int> open_fds_;  // connections now open, to wake idle ones on Stop
  std::thread accept_thread_;
};

}  // namespace expertd

#endif  // EXPERTD_DAEMON_HTTP_SERVER_H_
