// Soak: the daemon's memory and threads stay flat under connection churn
// and a mixed load with abandoned clients and SIGHUPs (issue 13). Starts
// `expertd serve` (bench/daemon_process.h), then
//   1. --connections sequential connections, each one GET /health;
//   2. --seconds of mixed load from --clients threads: whole and streamed
//      completions, streams dropped after their first event, non-streamed
//      requests abandoned before their answer, /metrics and /v1/stats,
//      while another thread sends SIGHUP every half second;
// and prints resident memory and threads at start, after 1 and after 2,
// beside what the daemon holds by design (dense weights, DRAM budget, KV
// reserved). Exits non-zero when a request that was not abandoned failed
// with anything but 503, or when the daemon does not exit cleanly.
//
//   soak_bench --expertd build/daemon/expertd --model models/olmoe-kjv
//       [--connections 100000] [--seconds 60] [--clients 16] [--dram-budget 2MiB]

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/daemon_process.h"
#include "nlohmann/json.hpp"

namespace {

using nlohmann::json;

// Sends `request` on a fresh connection; reads up to `read_bytes` of the
// answer (all of it when negative), then closes. Returns what was read.
std::string Exchange(const std::string& socket, const std::string& request, long read_bytes = -1) {
  const int fd = expertd::bench::ConnectUnixSocket(socket);
  if (fd < 0) return "";
  [[maybe_unused]] ssize_t sent = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string reply;
  char buffer[4096];
  ssize_t n;
  while ((read_bytes < 0 || static_cast<long>(reply.size()) < read_bytes) &&
         (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) {
    reply.append(buffer, n);
  }
  ::close(fd);
  return reply;
}

std::string Post(const json& body) {
  const std::string text = body.dump();
  return "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
         std::to_string(text.size()) + "\r\n\r\n" + text;
}

std::string Get(const std::string& target) {
  return "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
}

// The status code of a raw HTTP answer; 0 for none.
int StatusOf(const std::string& reply) {
  return reply.size() > 12 && reply.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(reply.c_str() + 9) : 0;
}

struct Snapshot {
  long rss_kb = 0;
  long threads = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::string expertd = "build/daemon/expertd";
  std::string model = "models/olmoe-kjv";
  std::string dram_budget = "2MiB";
  int connections = 100000;
  int seconds = 60;
  int clients = 16;
  CLI::App app{"soak_bench: memory and threads under connection churn and a mixed load"};
  app.add_option("--expertd", expertd, "the expertd binary")->capture_default_str();
  app.add_option("--model", model, "model directory")->capture_default_str();
  app.add_option("--dram-budget", dram_budget, "DRAM budget for experts (\"\": resident)")->capture_default_str();
  app.add_option("--connections", connections, "sequential /health connections")->capture_default_str();
  app.add_option("--seconds", seconds, "mixed-load duration")->capture_default_str();
  app.add_option("--clients", clients, "mixed-load client threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  expertd = std::filesystem::absolute(expertd).string();
  model = std::filesystem::absolute(model).string();
  const std::string scratch = std::filesystem::temp_directory_path() / ("soak." + std::to_string(::getpid()));
  std::filesystem::create_directories(scratch);
  const std::string socket = scratch + "/soak.sock";
  std::string config = "[server]\nsocket_path = \"" + socket + "\"\nmax_connections = 64\n[model]\npath = \"" + model +
                       "\"\n[device]\ngpu = \"off\"\n";
  if (!dram_budget.empty()) config += "[cache]\ndram_budget = \"" + dram_budget + "\"\n";
  expertd::bench::DaemonProcess daemon(expertd, scratch, "soak", config, socket);
  if (!daemon.ok()) {
    std::fprintf(stderr, "error: the daemon did not start; see %s\n", daemon.log_path().c_str());
    return 1;
  }
  auto snapshot = [&] { return Snapshot{daemon.Status("VmRSS"), daemon.Status("Threads")}; };
  // Warm up: first requests fault in weights and grow the pools.
  for (int i = 0; i < 20; ++i) Exchange(socket, Post({{"prompt", "In the beginning"}, {"max_tokens", 8}}));
  const Snapshot start = snapshot();

  const auto churn_start = std::chrono::steady_clock::now();
  int health_failures = 0;
  for (int i = 0; i < connections; ++i) {
    if (StatusOf(Exchange(socket, Get("/health"))) != 200) ++health_failures;
  }
  const double churn_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - churn_start).count();
  const Snapshot after_churn = snapshot();

  std::atomic<bool> done{false};
  std::atomic<long> requests{0}, abandoned{0}, refused{0}, failed{0}, sighups{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 random(c);
      while (!done) {
        const int kind = static_cast<int>(random() % 6);
        const json body = {{"prompt", "And God said"}, {"max_tokens", 16 + random() % 48}, {"seed", random() % 1000},
                           {"stream", kind == 1 || kind == 2}};
        std::string reply;
        switch (kind) {
          case 0:  // whole
          case 1:  // streamed to its end
            reply = Exchange(socket, Post(body));
            break;
          case 2:  // a stream dropped after its first bytes
          case 3:  // a whole answer not waited for
            Exchange(socket, Post(body), kind == 2 ? 1 : 0);
            ++abandoned;
            continue;
          case 4:
            reply = Exchange(socket, Get("/metrics"));
            break;
          default:
            reply = Exchange(socket, Get("/v1/stats"));
            break;
        }
        ++requests;
        const int status = StatusOf(reply);
        if (status == 503) {
          ++refused;
        } else if (status != 200) {
          ++failed;
        }
      }
    });
  }
  threads.emplace_back([&] {
    while (!done) {
      ::kill(daemon.pid(), SIGHUP);
      ++sighups;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  done = true;
  for (std::thread& t : threads) t.join();
  const Snapshot after_soak = snapshot();
  const std::string stats_reply = Exchange(socket, Get("/v1/stats"));
  const size_t body_at = stats_reply.find("\r\n\r\n");
  const json stats =
      body_at == std::string::npos ? json() : json::parse(stats_reply.substr(body_at + 4), nullptr, false);

  uint64_t weights_bytes = std::filesystem::file_size(model + "/model.safetensors");
  uint64_t dram_bytes = 0;
  if (stats.is_object() && stats["cache"].is_object()) {
    dram_bytes = stats["cache"]["dram"]["slots"].get<uint64_t>() * stats["cache"]["slot_bytes"].get<uint64_t>();
  }
  std::printf("%-34s %10s %8s\n", "", "RSS MiB", "threads");
  std::printf("%-34s %10.1f %8ld\n", "start (after warm-up)", start.rss_kb / 1024.0, start.threads);
  std::printf("%-34s %10.1f %8ld\n", ("after " + std::to_string(connections) + " connections").c_str(),
              after_churn.rss_kb / 1024.0, after_churn.threads);
  std::printf("%-34s %10.1f %8ld\n", ("after " + std::to_string(seconds) + " s mixed load").c_str(),
              after_soak.rss_kb / 1024.0, after_soak.threads);
  std::printf("by design: model.safetensors %.1f MiB (dense + resident experts at most), DRAM tier %.1f MiB, KV "
              "reserved now %s bytes\n",
              weights_bytes / 1048576.0, dram_bytes / 1048576.0,
              stats.is_object() ? stats["kv_cache"]["reserved_bytes"].dump().c_str() : "?");
  std::printf("connections: %d in %.1f s (%.0f/s), %d failed health checks\n", connections, churn_seconds,
              connections / churn_seconds, health_failures);
  std::printf("mixed load: %ld answered requests, %ld abandoned, %ld refused (503), %ld failed, %ld SIGHUPs\n",
              requests.load(), abandoned.load(), refused.load(), failed.load(), sighups.load());
  if (stats.is_object()) {
    std::printf("daemon: %s completed, %s cancelled, %s failed, %s rejected\n",
                stats["requests"]["completed"].dump().c_str(), stats["requests"]["cancelled"].dump().c_str(),
                stats["requests"]["failed"].dump().c_str(), stats["requests"]["rejected"].dump().c_str());
  }
  double stop_seconds = 0;
  const int exit_code = daemon.Stop(&stop_seconds);
  std::printf("SIGTERM: exit %d in %.2f s\n", exit_code, stop_seconds);
  std::filesystem::remove_all(scratch);
  return failed == 0 && health_failures == 0 && exit_code == 0 ? 0 : 1;
}
