#include "daemon/serve.h"

#include <signal.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "daemon/config.h"
#include "daemon/http_server.h"
#include "daemon/inference_service.h"
#include "spdlog/spdlog.h"

namespace expertd::daemon {

absl::Status Serve(const std::string& config_path, int drain_seconds) {
  // Signals are taken synchronously by this thread (sigwait); every thread
  // started below inherits the blocked mask, so none is interrupted.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill us

  ASSIGN_OR_RETURN(DaemonConfig config, LoadDaemonConfig(config_path));
  const std::string socket_path = ResolveSocketPath(config.server, ::getuid(), std::getenv("XDG_RUNTIME_DIR"));
  ASSIGN_OR_RETURN(auto service, InferenceService::Create(config));
  ASSIGN_OR_RETURN(auto server, HttpServer::Start(config.server, socket_path, *service));
  sd_notifyf(0, "READY=1\nSTATUS=serving %s on %s", service->model_name().c_str(), socket_path.c_str());
  spdlog::info("serving {} on {}", service->model_name(), socket_path);

  while (true) {
    int signal = 0;
    if (sigwait(&signals, &signal) != 0) continue;
    if (signal == SIGHUP) {
      sd_notify(0, "RELOADING=1");
      absl::StatusOr<CacheConfig> budgets = LoadCacheBudgets(config_path);
      absl::Status applied = budgets.ok() ? service->ReloadBudgets(*budgets) : budgets.status();
      if (applied.ok()) {
        spdlog::info("SIGHUP: cache budgets now dram {} bytes, device {} bytes", budgets->dram_budget_bytes,
                     budgets->device_budget_bytes);
      } else {
        spdlog::error("SIGHUP: budgets not changed: {}", std::string(applied.message()));
      }
      sd_notify(0, "READY=1");
      continue;
    }
    spdlog::info("{}: draining (up to {} s)", signal == SIGTERM ? "SIGTERM" : "SIGINT", drain_seconds);
    sd_notify(0, "STOPPING=1");
    server->Stop();
    service->Drain(std::chrono::seconds(drain_seconds));
    // Every job is done now; a connection gets a moment to write its last
    // answer, and one whose client does not read is closed, so exit comes
    // within drain_seconds plus this grace, whatever the clients do.
    server->CloseConnections(std::chrono::seconds(1));
    server.reset();  // joins the connection threads
    service.reset();
    spdlog::info("stopped");
    return absl::OkStatus();
  }
}

}  // namespace expertd::daemon
