// A bounded load run against a running daemon: for each concurrency level,
// that many clients each send a fixed number of completion requests;
// prints throughput, p50/p99 latency and errors.
//
//   load_bench --socket SOCK [--clients 1,4,16,64] [--requests 4] [--max-tokens 16]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "client/client.h"

int main(int argc, char** argv) {
  std::string socket;
  std::string levels = "1,4,16,64";
  int requests = 4;
  int max_tokens = 16;
  bool ignore_eos = false;
  CLI::App app{"load_bench: concurrent completion requests against expertd"};
  app.add_option("--socket", socket, "the daemon's socket")->required();
  app.add_option("--clients", levels, "concurrency levels")->capture_default_str();
  app.add_option("--requests", requests, "requests per client")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "tokens per completion")->capture_default_str();
  app.add_flag("--ignore-eos", ignore_eos, "every request generates exactly --max-tokens tokens");
  CLI11_PARSE(app, argc, argv);

  std::printf("%8s %10s %12s %10s %10s %10s %7s\n", "clients", "requests", "requests/s", "tokens/s", "p50 ms", "p99 ms",
              "errors");
  for (absl::string_view level : absl::StrSplit(levels, ',', absl::SkipEmpty())) {
    int clients = 0;
    if (!absl::SimpleAtoi(level, &clients) || clients < 1) {
      std::fprintf(stderr, "error: bad --clients entry '%s'\n", std::string(level).c_str());
      return 1;
    }
    std::vector<std::vector<double>> latencies(clients);
    std::atomic<int> errors{0};
    std::atomic<int64_t> tokens{0};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        expertd::client::Client client(socket, std::chrono::minutes(10));
        for (int r = 0; r < requests; ++r) {
          const nlohmann::json request = {{"prompt", "The expert said"}, {"max_tokens", max_tokens},
                                          {"temperature", 0.7}, {"seed", c * 1000 + r}, {"ignore_eos", ignore_eos}};
          const auto sent = std::chrono::steady_clock::now();
          auto result = client.Complete(request);
          if (result.ok()) {
            tokens += (*result)["usage"]["completion_tokens"].get<int64_t>();
          } else {
            ++errors;
          }
          latencies[c].push_back(
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - sent).count());
        }
      });
    }
    for (std::thread& t : threads) t.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::vector<double> all;
    for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
    std::sort(all.begin(), all.end());
    auto percentile = [&](double p) { return all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))]; };
    std::printf("%8d %10zu %12.2f %10.1f %10.1f %10.1f %7d\n", clients, all.size(), all.size() / seconds,
                tokens.load() / seconds, percentile(0.5), percentile(0.99), errors.load());
  }
  return 0;
}
