#ifndef EXPERTD_DAEMON_LOG_LIMITER_H_
#define EXPERTD_DAEMON_LOG_LIMITER_H_

#include <chrono>
#include <cstdint>
#include <mutex>

namespace expertd::daemon {

// Rate limit for a log line that a client can cause at will (a malformed
// request, a refused connection): at most `per_window` lines per window, so
// a flood cannot fill the journal, and the count of lines left out is told
// with the next one allowed.
class LogLimiter {
 public:
  explicit LogLimiter(int per_window, std::chrono::steady_clock::duration window = std::chrono::seconds(10))
      : per_window_(per_window), window_(window) {}

  // Whether to log this occurrence; *suppressed receives how many were left
  // out since the last one logged.
  bool Allow(uint64_t* suppressed) {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= window_) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= per_window_) {
      ++suppressed_;
      return false;
    }
    ++in_window_;
    *suppressed = suppressed_;
    suppressed_ = 0;
    return true;
  }

 private:
  const int per_window_;
  const std::chrono::steady_clock::duration window_;
  std::mutex mu_;  // guards the three below
  std::chrono::steady_clock::time_point window_start_{};
  int in_window_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace expertd::daemon

#endif  // EXPERTD_DAEMON_LOG_LIMITER_H_
