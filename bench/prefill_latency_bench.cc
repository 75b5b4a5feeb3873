// Chunked prefill, measured: running streams' inter-token latency while a
// long prompt is prefilled, with the prompt run whole (one chunk, as before
// chunked prefill) and in chunks of --chunk tokens, in one run. Starts the
// daemon twice (bench/daemon_process.h), one configuration after the other.
//
//   prefill_latency_bench --expertd build/daemon/expertd --model models/olmoe-kjv
//       [--streams 4] [--prompt-tokens 4000] [--chunk 256] [--dram-budget 2MiB]

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "bench/daemon_process.h"
#include "nlohmann/json.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// One streaming completion read on its own thread; records when each
// server-sent event arrives.
class Stream {
 public:
  Stream(const std::string& socket, int max_tokens) {
    fd_ = expertd::bench::ConnectUnixSocket(socket);
    if (fd_ < 0) return;
    const std::string body =
        json{{"prompt", "And it came to pass"}, {"max_tokens", max_tokens}, {"stream", true}, {"ignore_eos", true}}
            .dump();
    const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                std::to_string(body.size()) + "\r\n\r\n" + body;
    [[maybe_unused]] ssize_t sent = ::send(fd_, request.data(), request.size(), MSG_NOSIGNAL);
    reader_ = std::thread([this] { Read(); });
  }
  ~Stream() {
    if (fd_ < 0) return;
    ::shutdown(fd_, SHUT_RDWR);
    if (reader_.joinable()) reader_.join();
    ::close(fd_);
  }
  std::vector<Clock::time_point> events() {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  void Read() {
    char buffer[4096];
    std::string carry;
    ssize_t n;
    while ((n = ::recv(fd_, buffer, sizeof(buffer), 0)) > 0) {
      const auto now = Clock::now();
      carry.append(buffer, n);
      size_t at;
      while ((at = carry.find("data: ")) != std::string::npos) {
        carry.erase(0, at + 6);
        std::lock_guard lock(mu_);
        events_.push_back(now);
      }
    }
  }

  int fd_ = -1;
  std::thread reader_;
  std::mutex mu_;  // guards events_
  std::vector<Clock::time_point> events_;
};

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * (values.size() - 1) + 0.5))];
}

struct Result {
  bool ok = false;
  double prefill_seconds = 0;
  std::vector<double> during_ms;  // gaps between events that overlap the prefill
  std::vector<double> outside_ms;  // gaps before it
};

Result Measure(const std::string& expertd, const std::string& model, const std::string& scratch, int chunk,
               int streams, int prompt_tokens, const std::string& dram_budget) {
  Result result;
  const std::string socket = scratch + "/prefill_bench.sock";
  const std::string name = "chunk" + std::to_string(chunk);
  std::string config = "[server]\nsocket_path = \"" + socket + "\"\n[model]\npath = \"" + model + "\"\n" +
                       "[inference]\nmax_batch = " + std::to_string(streams + 1) +
                       "\nprefill_chunk_tokens = " + std::to_string(chunk) + "\n[device]\ngpu = \"off\"\n";
  if (!dram_budget.empty()) config += "[cache]\ndram_budget = \"" + dram_budget + "\"\n";
  expertd::bench::DaemonProcess daemon(expertd, scratch, name, config, socket);
  if (!daemon.ok()) {
    std::fprintf(stderr, "error: the daemon did not start; see %s\n", daemon.log_path().c_str());
    return result;
  }
  std::vector<std::unique_ptr<Stream>> running;
  for (int i = 0; i < streams; ++i) running.push_back(std::make_unique<Stream>(socket, 2048));
  std::this_thread::sleep_for(std::chrono::seconds(2));  // streams decoding steadily
  json prompt = json::array();
  for (int i = 0; i < prompt_tokens; ++i) prompt.push_back(4 + (i * 7919) % 1000);
  const auto start = Clock::now();
  auto answer = daemon.client().Complete({{"prompt", prompt}, {"max_tokens", 1}, {"temperature", 0}});
  const auto end = Clock::now();
  if (!answer.ok()) {
    std::fprintf(stderr, "error: the long prompt failed: %s\n", std::string(answer.status().message()).c_str());
    return result;
  }
  result.prefill_seconds = std::chrono::duration<double>(end - start).count();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (auto& stream : running) {
    const std::vector<Clock::time_point> events = stream->events();
    for (size_t i = 1; i < events.size(); ++i) {
      const double gap_ms = std::chrono::duration<double, std::milli>(events[i] - events[i - 1]).count();
      if (events[i] > start && events[i - 1] < end) {
        result.during_ms.push_back(gap_ms);
      } else if (events[i] <= start) {
        result.outside_ms.push_back(gap_ms);
      }
    }
  }
  running.clear();
  double stop_seconds = 0;
  daemon.Stop(&stop_seconds);
  result.ok = true;
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  std::string expertd = "build/daemon/expertd";
  std::string model = "models/olmoe-kjv";
  std::string dram_budget;
  int streams = 4;
  int prompt_tokens = 4000;
  int chunk = 256;
  CLI::App app{"prefill_latency_bench: running streams' inter-token latency during a long prefill"};
  app.add_option("--expertd", expertd, "the expertd binary")->capture_default_str();
  app.add_option("--model", model, "model directory")->capture_default_str();
  app.add_option("--streams", streams, "streams decoding during the prefill")->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens, "length of the long prompt")->capture_default_str();
  app.add_option("--chunk", chunk, "prefill chunk of the chunked run, tokens")->capture_default_str();
  app.add_option("--dram-budget", dram_budget, "offload experts with this DRAM budget (default: resident)");
  CLI11_PARSE(app, argc, argv);
  expertd = std::filesystem::absolute(expertd).string();
  model = std::filesystem::absolute(model).string();
  const std::string scratch = std::filesystem::temp_directory_path() / ("prefill_bench." + std::to_string(::getpid()));
  std::filesystem::create_directories(scratch);

  std::printf("%d streams decoding; a %d-token prompt arrives\n", streams, prompt_tokens);
  std::printf("%-22s %10s %12s %12s %12s %14s\n", "prefill", "prefill s", "ITL p50 ms", "ITL p99 ms", "ITL max ms",
              "ITL before ms");
  // The whole prompt in one chunk is what the engine did before chunked
  // prefill.
  const Result whole = Measure(expertd, model, scratch, 1 << 20, streams, prompt_tokens, dram_budget);
  const Result chunked = Measure(expertd, model, scratch, chunk, streams, prompt_tokens, dram_budget);
  std::filesystem::remove_all(scratch);
  if (!whole.ok || !chunked.ok) return 1;
  auto row = [](const char* name, const Result& r) {
    std::printf("%-22s %10.2f %12.1f %12.1f %12.1f %14.1f\n", name, r.prefill_seconds, Percentile(r.during_ms, 0.5),
                Percentile(r.during_ms, 0.99), Percentile(r.during_ms, 1.0), Percentile(r.outside_ms, 0.5));
  };
  row("whole (before)", whole);
  const std::string chunk_name = "chunks of " + std::to_string(chunk);
  row(chunk_name.c_str(), chunked);
  std::printf("ITL p99 during the prefill, whole / chunked: %.1fx; prefill time, chunked / whole: %.2fx\n",
              Percentile(whole.during_ms, 0.99) / std::max(1e-9, Percentile(chunked.during_ms, 0.99)),
              chunked.prefill_seconds / std::max(1e-9, whole.prefill_seconds));
  return 0;
}
