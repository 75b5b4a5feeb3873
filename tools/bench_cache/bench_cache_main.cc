// bench_cache: replays a routing trace (recorded, or synthetic) through every
// eviction policy and prints hit rates against Belady's. The same report as
// `expertd bench-cache`.
//
//   bench_cache --trace run.trace --capacity-percent 5,10,25
//   (a v2 trace from `expertd run --trace` is first replayed as the engine
//   ran it: recorded predictions, timed loads; --compute-us, --read-bytes-per-s ...)
//   bench_cache --synthetic --layers 16 --experts 64 --k 8 --tokens 2000
//       --zipf 0.8 --reuse 0.3 --cross-layer 0.3   (one line)

#include <iostream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "cache/eviction_policy.h"
#include "cache/sim/bench_cache.h"
#include "cache/sim/synthetic_trace.h"
#include "cache/sim/trace_file.h"

int main(int argc, char** argv) {
  using namespace expertd::cache;
  CLI::App app{"Replay an expert routing trace through the eviction policies"};
  std::string trace_path;
  bool synthetic = false;
  SyntheticTraceOptions synth;
  std::vector<double> capacity_percents = {10, 25, 50};
  std::vector<std::string> policies = EvictionPolicyNames();
  bool ignore_scores = false;
  CacheBenchmarkOptions bench_options;

  auto* trace_option = app.add_option("--trace", trace_path, "Trace file (cache/sim/TRACE_FORMAT.md)");
  auto* synthetic_flag = app.add_flag("--synthetic", synthetic, "Generate a synthetic trace instead");
  trace_option->excludes(synthetic_flag);
  app.add_option("--layers", synth.num_layers, "Synthetic: MoE layers")->capture_default_str();
  app.add_option("--experts", synth.num_experts, "Synthetic: experts per layer")->capture_default_str();
  app.add_option("--k", synth.k, "Synthetic: experts routed per token and layer")->capture_default_str();
  app.add_option("--tokens", synth.tokens, "Synthetic: tokens (forward passes)")->capture_default_str();
  app.add_option("--seed", synth.seed, "Synthetic: random seed")->capture_default_str();
  app.add_option("--zipf", synth.zipf_exponent, "Synthetic: popularity skew (Zipf exponent, 0 = uniform)")
      ->capture_default_str();
  app.add_option("--reuse", synth.reuse_probability,
                 "Synthetic: probability a slot keeps the previous token's expert")
      ->capture_default_str();
  app.add_option("--cross-layer", synth.cross_layer_probability,
                 "Synthetic: probability a slot follows the previous layer's expert")
      ->capture_default_str();
  app.add_option("--capacity-percent", capacity_percents, "Cache sizes, percent of all experts (e.g. 10,25,50)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--policies", policies, "Policies to compare")->delimiter(',')->capture_default_str();
  app.add_option("--prefetch-accuracy", bench_options.prefetch_accuracies,
                 "Accuracies of the next-layer prefetch to compare (1 = exact oracle)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--prefetch-seed", bench_options.prefetch_seed, "Seed of the prefetch's wrong guesses")
      ->capture_default_str();
  app.add_flag("--ignore-scores", ignore_scores, "Do not pass the trace's router scores to the policies");
  app.add_option("--compute-us", bench_options.replay.compute_us_per_layer,
                 "replay: compute time of every MoE layer, us (0: as recorded in the trace)")
      ->capture_default_str();
  app.add_option("--latency-us", bench_options.replay.io.latency_us, "replay: latency of one expert load, us (0: the trace's)");
  app.add_option("--read-bytes-per-s", bench_options.replay.io.bytes_per_second,
                 "replay: read bandwidth shared by overlapping loads, bytes/s (0: the trace's)");
  app.add_option("--queue-depth", bench_options.replay.io.queue_depth, "replay: loads in flight at most (0: 32)");
  app.add_option("--parallel-transfers", bench_options.replay.io.parallel_transfers,
                 "replay: transfers sharing the bandwidth at once, earliest first (0: all in flight)")
      ->capture_default_str();
  app.add_option("--expert-bytes", bench_options.replay.io.expert_bytes, "replay: bytes of one expert (0: the trace's)");
  app.add_option("--budget", bench_options.replay.budget_per_layer,
                 "replay: prefetch reads per predicted layer (0: the budget recorded with each prediction)")
      ->capture_default_str();
  app.add_option("--step-gap-us", bench_options.replay.step_gap_us, "replay: time between steps outside the MoE layers, us (-1: as recorded)")
      ->capture_default_str();
  app.add_option("--wrong-guesses-first", bench_options.replay.wrong_guesses_first,
                 "replay: recycle a prefetch whose layer ran without it before the policy's victim, as the engine "
                 "does by default ([cache] wrong_guesses_first)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (trace_path.empty() && !synthetic) {
    std::cerr << "bench_cache: give --trace FILE or --synthetic\n";
    return 2;
  }
  absl::Status status;
  if (synthetic) {
    if (status = ValidateSyntheticTraceOptions(synth); status.ok()) {
      const AccessTrace trace = MakeSyntheticTrace(synth);
      std::cout << "synthetic: seed " << synth.seed << ", k " << synth.k << ", zipf " << synth.zipf_exponent
                << ", reuse " << synth.reuse_probability << ", cross-layer " << synth.cross_layer_probability
                << "\n";
      status = RunCacheBenchmark(trace, policies, capacity_percents, std::cout, bench_options);
    }
  } else {
    status = RunTraceFileBenchmark(trace_path, policies, capacity_percents, std::cout, bench_options, ignore_scores);
  }
  if (!status.ok()) {
    std::cerr << "bench_cache: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
