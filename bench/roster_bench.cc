// Roster of Experts under offloading: decode speed and expert loads per
// token for several roster sizes at one DRAM budget, with and without the
// cache-aware option (a bonus on the noisy logits of resident experts).
//
//   roster_bench [--model DIR] [--dram-percent 25] [--sizes 1,4,8,16,32]
//                [--temperature 0.3] [--skip-layers 1] [--bonus 0,1]
//                [--tokens 32] [--threads N]
// Without --model it runs the --shape bench model (bench/bench_models.h;
// default roster-8l: 8 layers, 32 experts, top-4, bf16), made once. Every configuration gets a fresh engine (an empty
// cache), a warm-up generation, then the measured one; ratios are to the
// roster of 1 of the same run.

#include <cstdio>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "runtime/runtime.h"
#include "engine/generator.h"
#include "spdlog/spdlog.h"

namespace {

using namespace expertd;

template <typename T>
std::vector<T> ParseList(const std::string& text, bool (*parse)(absl::string_view, T*)) {
  std::vector<T> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    T value{};
    if (!parse(part, &value)) {
      std::fprintf(stderr, "error: '%s' is not a number\n", std::string(part).c_str());
      std::exit(2);
    }
    values.push_back(value);
  }
  return values;
}

bool ParseInt(absl::string_view text, int* out) { return absl::SimpleAtoi(text, out); }
bool ParseFloat(absl::string_view text, float* out) { return absl::SimpleAtof(text, out); }

uint64_t AllExpertBytes(const model::Model& model) {
  uint64_t bytes = 0;
  for (const model::LayerWeights& layer : model.weights().layers) {
    if (!layer.is_moe) continue;
    const model::FeedForwardWeights& e = layer.experts[0];
    bytes += layer.experts.size() * (e.gate.size_bytes() + e.up.size_bytes() + e.down.size_bytes());
  }
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  double dram_percent = 25;
  std::string sizes_text = "1,4,8,16,32";
  std::string bonus_text = "0,1";
  float temperature = 0.3f;
  int skip_layers = 1;
  int tokens = 32;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CLI::App app{"Roster of Experts: decode speed and expert loads per token under offloading"};
  app.add_option("--model", model_dir, "model directory; default: generate the --shape bench model (once)");
  std::string shape = "roster-8l";
  app.add_option("--shape", shape, bench::BenchModelShapesHelp())->capture_default_str();
  app.add_option("--dram-percent", dram_percent, "DRAM budget, % of all experts")->capture_default_str();
  app.add_option("--sizes", sizes_text, "roster sizes")->capture_default_str();
  app.add_option("--temperature", temperature, "roster tau")->capture_default_str();
  app.add_option("--skip-layers", skip_layers, "first/last MoE layers without noise")->capture_default_str();
  app.add_option("--bonus", bonus_text, "cache-aware bonuses to compare (0 = off)")->capture_default_str();
  app.add_option("--tokens", tokens, "decode steps")->capture_default_str();
  app.add_option("--threads", threads, "compute threads")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);  // one engine per row: keep the table readable
  const std::vector<int> sizes = ParseList<int>(sizes_text, ParseInt);
  const std::vector<float> bonuses = ParseList<float>(bonus_text, ParseFloat);

  if (model_dir.empty()) {
    absl::StatusOr<std::string> made = bench::BenchModel(shape);
    if (!made.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(made.status().message()).c_str());
      return 1;
    }
    model_dir = *made;
  }
  auto probe = model::Model::Load(model_dir);
  if (!probe.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(probe.status().message()).c_str());
    return 1;
  }
  const uint64_t budget = static_cast<uint64_t>(AllExpertBytes(**probe) * dram_percent / 100);
  std::printf("model: %s (%d layers, %d experts, top-%d); DRAM budget %.0f%% of the experts; tau %.2f, skip %d; "
              "%d threads\n",
              model_dir.c_str(), (*probe)->config().num_layers, (*probe)->config().num_experts,
              (*probe)->config().experts_per_token, dram_percent, temperature, skip_layers, threads);
  probe->reset();
  if (budget == 0) {
    std::fprintf(stderr, "error: --dram-percent %.2f leaves no DRAM budget: the bench measures offloading\n",
                 dram_percent);
    return 1;
  }

  std::vector<int32_t> prompt(16);
  std::iota(prompt.begin(), prompt.end(), 3);
  std::printf("%6s %6s %9s %7s %11s %14s %8s %8s\n", "roster", "bonus", "tokens/s", "ratio", "loads/token",
              "distinct/token", "compute", "hit rate");
  double base_tps = 0;
  for (float bonus : bonuses) {
    for (int n : sizes) {
      runtime::EngineOptions engine_options;
      engine_options.model_dir = model_dir;
      engine_options.threads = threads;
      engine_options.cache.dram_budget_bytes = budget;
      engine_options.roster.samples = n;
      engine_options.roster.temperature = temperature;
      engine_options.roster.skip_layers = skip_layers;
      engine_options.roster.resident_bonus = bonus;
      engine_options.roster.seed = 1;
      absl::StatusOr<std::unique_ptr<runtime::Runtime>> engine = runtime::Runtime::Load(engine_options);
      if (!engine.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(engine.status().message()).c_str());
        return 1;
      }
      engine::GenerateOptions options;
      options.max_new_tokens = tokens + 1;
      options.stop_at_eos = false;
      options.roster = engine_options.roster;
      auto warm = engine::Generate((*engine)->model(), (*engine)->forward(), prompt, options);
      const cache::TierStats before = (*engine)->Stats().cache->dram;
      auto run = warm.ok() ? engine::Generate((*engine)->model(), (*engine)->forward(), prompt, options) : warm;
      if (!run.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(run.status().message()).c_str());
        return 1;
      }
      const cache::TierStats after = (*engine)->Stats().cache->dram;
      const double tps = run->decode_tokens_per_second();
      if (n == 1 && bonus == bonuses.front()) base_tps = tps;
      const double decode_tokens = static_cast<double>(run->costs.decode_tokens);
      // Every access once: hit, hidden (no prefetcher here, so none) or miss.
      const uint64_t hits = after.hits - before.hits, accesses = after.accesses() - before.accesses();
      std::printf("%6d %6.2f %9.2f %7.2f %11.1f %14.1f %7.2fx %8.3f\n", n, bonus, tps, base_tps > 0 ? tps / base_tps : 0,
                  (after.loads - before.loads) / std::max(1.0, decode_tokens), run->costs.distinct_experts_per_token(),
                  run->costs.extra_compute(), accesses > 0 ? static_cast<double>(hits) / accesses : 0.0);
      std::fflush(stdout);
    }
  }
  return 0;
}
