#ifndef EXPERTD_BENCH_DAEMON_PROCESS_H_
#define EXPERTD_BENCH_DAEMON_PROCESS_H_

// A real `expertd serve` started by a benchmark: its config written to a
// scratch directory, the process forked and waited on, its resident memory
// and threads read from /proc. Benchmarks that compare two configurations
// start one after the other in the same run, so their ratio is measured on
// the same machine state.

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "client/client.h"

namespace expertd::bench {

// A connection to the Unix socket at `path`; -1 when it cannot connect.
inline int ConnectUnixSocket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class DaemonProcess {
 public:
  // Starts `expertd serve` with `config_text` (which must set
  // server.socket_path = socket_path) written to dir/NAME.toml, its log in
  // dir/NAME.log. Check ok() before use.
  DaemonProcess(const std::string& expertd, const std::string& dir, const std::string& name,
                const std::string& config_text, const std::string& socket_path, int drain_seconds = 5)
      : socket_path_(socket_path), log_path_(dir + "/" + name + ".log") {
    const std::string config = dir + "/" + name + ".toml";
    std::ofstream(config) << config_text;
    pid_ = ::fork();
    if (pid_ == 0) {
      if (std::freopen(log_path_.c_str(), "w", stderr) == nullptr) std::_Exit(126);
      const std::string drain = std::to_string(drain_seconds);
      ::execl(expertd.c_str(), expertd.c_str(), "serve", "--config", config.c_str(), "--drain-seconds",
              drain.c_str(), nullptr);
      std::_Exit(127);
    }
    client::Client probe(socket_path_);
    for (int i = 0; i < 3000 && !ready_; ++i) {  // up to a minute: packing experts on first start
      ready_ = probe.Health().ok();
      if (!ready_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;
  ~DaemonProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  bool ok() const { return ready_; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  client::Client client(std::chrono::milliseconds timeout = std::chrono::minutes(5)) const {
    return client::Client(socket_path_, timeout);
  }

  // SIGTERM, then waits: the exit status and how long the exit took.
  int Stop(double* seconds) {
    const auto start = std::chrono::steady_clock::now();
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // A figure of /proc/PID/status, e.g. "VmRSS" (kB) or "Threads".
  long Status(const std::string& key) const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(key + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
    }
    return -1;
  }

 private:
  std::string socket_path_;
  std::string log_path_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

}  // namespace expertd::bench

#endif  // EXPERTD_BENCH_DAEMON_PROCESS_H_
