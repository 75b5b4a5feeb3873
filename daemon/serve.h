#ifndef EXPERTD_DAEMON_SERVE_H_
#define EXPERTD_DAEMON_SERVE_H_

#include <string>

#include "absl/status/status.h"

namespace expertd::daemon {

// `expertd serve --config FILE`: loads the model, listens on the Unix
// socket, tells systemd READY=1, and runs until SIGTERM or SIGINT (stop
// accepting, finish or cancel in-flight requests within drain_seconds, exit
// cleanly). SIGHUP re-reads the cache budgets and resizes the tiers live.
// Must be called before any other thread is started (it blocks the signals
// it waits for, and threads inherit the mask).
absl::Status Serve(const std::string& config_path, int drain_seconds = 30);

}  // namespace expertd::daemon

#endif  // EXPERTD_DAEMON_SERVE_H_
