#ifndef EXPERTD_DAEMON_HTTP_SERVER_H_
#define EXPERTD_DAEMON_HTTP_SERVER_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "daemon/config.h"
#include "daemon/inference_service.h"
#include "daemon/log_limiter.h"
#include "tokenizer/chat_template.h"

namespace expertd::daemon {

// HTTP/1.1 + JSON on a Unix socket (Boost.Beast), OpenAI-compatible:
// POST /v1/completions and /v1/chat/completions (stream as SSE), GET
// /v1/models, /health, /v1/stats, /metrics. Each connection is served top
// to bottom by one thread of a bounded pool (at most max_connections
// threads, started as needed and reused, joined at shutdown): local clients
// are few, and a blocking session reads top to bottom. The engine runs on
// the service's own thread; connections only wait for it.
//
// Limits: max_connections in all and max_connections_per_uid per peer uid.
// A connection past either is answered by one overflow thread, which
// still serves GET /health and GET /metrics (monitoring keeps working when
// clients exhaust the pool) and answers anything else with 503; past a
// short overflow queue, connections get a 503 and are closed at once.
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
  // After Stop and the service's drain: gives the open connections `grace`
  // to write their last answers, then shuts every one down, so a client
  // that never reads cannot hold shutdown for its write timeout.
  void CloseConnections(std::chrono::milliseconds grace);

  struct Counters {
    uint64_t accepted = 0;             // connections served by the pool
    uint64_t refused_busy = 0;         // past max_connections
    uint64_t refused_uid = 0;          // past max_connections_per_uid
    uint64_t overflow_dropped = 0;     // refused without reading: the overflow queue was full
    uint64_t malformed_requests = 0;   // 400 for bad HTTP, 413 for a large body
    uint64_t open = 0;                 // connections open in the pool now
    uint64_t threads = 0;              // pool threads started (at most max_connections)
  };
  Counters counters() const;

 private:
  struct Accepted {
    int fd = -1;
    uid_t uid = 0;
  };
  HttpServer(const ServerConfig& config, std::string socket_path, InferenceService& service)
      : config_(config),
        socket_path_(std::move(socket_path)),
        service_(service),
        chat_template_(tokenizer::ChatTemplate::ForModel(service.model().tokenizer())),
        started_at_(std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch()).count()) {}
  void AcceptLoop();
  // Hands an accepted connection to the pool, or to the overflow thread.
  void Dispatch(Accepted connection);
  void WorkerLoop();
  void OverflowLoop();
  void Serve(const Accepted& connection);
  // Answers one request of a connection past the limits: /health and
  // /metrics as usual, anything else 503 naming the limit.
  void ServeOverflow(const Accepted& connection, const std::string& reason);
  std::string Metrics() const;  // the service's metrics and the server's

  const ServerConfig config_;
  const std::string socket_path_;
  InferenceService& service_;
  const tokenizer::ChatTemplate chat_template_;  // the model's, recognised once at start
  const int64_t started_at_;          // Unix seconds: /v1/models' "created" (when this daemon loaded the model)
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> generation_requests_{0};  // numbers the response ids

  mutable std::mutex mu_;  // guards every member below
  std::condition_variable work_ready_;        // pending_ grew, or stopping
  std::condition_variable connection_closed_;  // open_fds_ shrank
  std::deque<Accepted> pending_;              // accepted, waiting for a pool thread
  std::vector<std::thread> workers_;
  int idle_workers_ = 0;
  std::vector<int> open_fds_;  // pool connections now open, to wake or close them on shutdown
  std::unordered_map<uid_t, int> open_per_uid_;
  std::deque<std::pair<Accepted, std::string>> overflow_;  // with the limit it passed
  std::condition_variable overflow_ready_;
  Counters counters_;
  LogLimiter refusal_log_{/*per_window=*/5};    // refused connections, a client can cause them at will
  LogLimiter malformed_log_{/*per_window=*/5};  // 400s for bad HTTP and 413s

  std::thread overflow_thread_;
  std::thread accept_thread_;
};

}  // namespace expertd::daemon

#endif  // EXPERTD_DAEMON_HTTP_SERVER_H_
