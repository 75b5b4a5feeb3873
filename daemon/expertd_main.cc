// expertd: the command-line entry point. Subcommands run the engine directly
// (run, eval, perplexity, tokenize); the daemon's serve command joins them later.

#include <cstdint>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "base/byte_size.h"
#include "cli/commands.h"
#include "daemon/serve.h"
#include "engine/expert_packer.h"
#include "spdlog/cfg/env.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

// A size flag ("512MiB", "6GiB", 1048576), parsed into bytes once, here.
CLI::Option* AddByteSizeOption(CLI::App* command, const std::string& name, uint64_t* bytes,
                               const std::string& description) {
  return command
      ->add_option_function<std::string>(
          name,
          [name, bytes](const std::string& text) {
            absl::StatusOr<uint64_t> parsed = expertd::ParseByteSize(text);
            if (!parsed.ok()) throw CLI::ValidationError(name, std::string(parsed.status().message()));
            *bytes = *parsed;
          },
          description)
      ->type_name("SIZE");
}

// The command line's half of EngineOptions (the config file fills the same
// struct: EngineOptionsFromConfig).
void AddEngineFlags(CLI::App* command, expertd::runtime::EngineOptions* options) {
  command->add_option("--model", options->model_dir, "HF model directory (config.json, *.safetensors, tokenizer.json) or a .gguf file")
      ->required();
  command->add_flag("--map-weights", options->map_weights,
                    "map a .gguf file's weights instead of copying them (shared page cache; see [model] map_weights)");
  command->add_option("--k", options->experts_per_token, "routed experts per token (dial-k); default the model's")
      ->check(CLI::PositiveNumber);
  command->add_option("--threads", options->threads, "compute threads; default every core");
  command->add_flag("--bf16-activations", options->bf16_activations,
                    "bf16 weights times activations rounded to bf16 (AVX-512 BF16 CPUs; faster prefill; see "
                    "[inference] bf16_activations)");
  AddByteSizeOption(command, "--dram-budget", &options->cache.dram_budget_bytes,
                    "offload experts: DRAM cache budget (e.g. 512MiB); default everything resident");
  AddByteSizeOption(command, "--device-budget", &options->cache.device_budget_bytes,
                    "device (VRAM) tier budget; default none");
  command
      ->add_option_function<std::string>(
          "--gpu",
          [options](const std::string& mode) {
            options->device.gpu = mode == "on"    ? expertd::runtime::GpuMode::kOn
                                  : mode == "off" ? expertd::runtime::GpuMode::kOff
                                                  : expertd::runtime::GpuMode::kAuto;
          },
          "auto: run on a CUDA device when there is one; on: insist; off: the CPU only")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->default_str(std::string(expertd::runtime::GpuModeName(options->device.gpu)));
  command->add_option("--cuda-device", options->device.cuda_device, "which CUDA device")
      ->check(CLI::NonNegativeNumber);
  command->add_flag("!--no-execution-placement", options->device.execution_placement,
                    "on a GPU: always copy VRAM misses, never compute them on the CPU");
  command->add_option("--policy", options->cache.policy, "eviction: lru, lru-hint, lfu, least-stale, layer-distance")
      ->capture_default_str();
  command->add_option("--expert-file", options->reader.path,
                      "packed experts; default DIR/model.experts, or X.experts beside X.gguf (packed if missing)");
  command->add_flag("!--no-direct-io", options->reader.direct_io, "read the expert file through the page cache");
  command->add_option("--queue-depth", options->reader.queue_depth,
                      "with offloading: expert reads in flight at once (io_uring entries)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  command->add_option("--speculative-depth", options->reader.speculative_depth,
                      "with offloading: of those, prefetch reads (512 KiB pieces) at the disk at once; a miss's reads "
                      "go first, but waits behind these")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  // As the daemon's [prefetch] kind: auto unless asked (the library's own
  // default, for code that builds a predictor directly, is cross-layer).
  options->prefetch.predictor.kind = "auto";
  command->add_option("--prefetch", options->prefetch.predictor.kind,
                      "with offloading: auto (cross-layer with a device tier, else none) | none | cross-layer | "
                      "previous-token")
      ->capture_default_str();
  command->add_flag("!--no-prefetch-to-device", options->cache.prefetch_to_device,
                    "with a device tier: prefetches stop in DRAM instead of going on into the device tier");
  command->add_option("--shallow-layers", options->shallow_layers,
                      "with offloading: keep every expert of the first N MoE layers resident")
      ->check(CLI::NonNegativeNumber);
  command->add_option("--lookahead", options->prefetch.predictor.lookahead, "layers ahead the prefetcher predicts")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command
      ->add_option("--prefetch-next-token", options->prefetch.next_token_layers,
                   "at each token's last MoE layer, prefetch its experts of the first N MoE layers for the next "
                   "token ([prefetch] next_token_layers)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command
      ->add_option("--prefetch-next-token-from", options->prefetch.next_token_from,
                   "what predicts the next token's first layers: previous-token (this token's routing of them) or "
                   "last-layer-gate (the last MoE layer's gate input through their routers) ([prefetch] "
                   "next_token_from)")
      ->check(CLI::IsMember({"previous-token", "last-layer-gate"}))
      ->capture_default_str();
  command
      ->add_option("--prefetch-budget", options->prefetch.scheduler.fixed_budget_per_layer,
                   "prefetch reads per predicted layer and pass ([prefetch] budget_per_layer); 0 = measured from "
                   "layer time and read throughput")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command->add_option("--roster", options->roster.samples,
                      "Roster of Experts: routing samples per token, averaged (1 = the plain model)")
      ->capture_default_str();
  command->add_option("--roster-temperature", options->roster.temperature, "Gumbel noise scale tau of the roster")
      ->capture_default_str();
  command->add_option("--roster-skip-layers", options->roster.skip_layers,
                      "first and last N MoE layers route without noise")
      ->capture_default_str();
  command->add_option("--roster-seed", options->roster.seed, "seed of the roster's routing noise")
      ->capture_default_str();
  command->add_option("--roster-resident-bonus", options->roster.resident_bonus,
                      "cache-aware roster: added to the noisy logits of experts already resident")
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr so stdout carries only results.
  spdlog::set_default_logger(spdlog::stderr_color_mt("expertd"));
  spdlog::cfg::load_env_levels();

  CLI::App app{"expertd: Mixture-of-Experts inference with experts offloaded to DRAM and NVMe"};
  app.require_subcommand(1);

  expertd::cli::RunFlags run;
  CLI::App* run_cmd = app.add_subcommand("run", "generate a continuation of a prompt");
  AddEngineFlags(run_cmd, &run.engine);
  run_cmd->add_option("--prompt", run.prompt, "text to continue")->required();
  run_cmd->add_option("-n,--max-tokens", run.max_new_tokens, "tokens to generate")->capture_default_str();
  run_cmd->add_option("--temperature", run.temperature, "0 = greedy")->capture_default_str();
  run_cmd->add_option("--top-k", run.top_k, "keep the k most likely tokens; 0 = all")->capture_default_str();
  run_cmd->add_option("--top-p", run.top_p, "nucleus sampling threshold")->capture_default_str();
  run_cmd->add_option("--seed", run.seed, "sampling seed")->capture_default_str();
  run_cmd->add_option("--trace", run.trace_out,
                      "write what the engine did, step by step (routing, prefetch predictions, layer times; "
                      "cache/sim/TRACE_FORMAT.md v2) for bench-cache to replay");

  expertd::cli::EvalFlags eval;
  CLI::App* eval_cmd = app.add_subcommand("eval", "write the logits of every position of a token sequence");
  AddEngineFlags(eval_cmd, &eval.engine);
  eval_cmd->add_option("--tokens", eval.tokens, "token ids separated by spaces")->required();
  eval_cmd->add_option("--logits-out", eval.logits_out, "output file: float32 [n_tokens][vocab]")->required();

  expertd::cli::PerplexityFlags perplexity;
  CLI::App* ppl_cmd = app.add_subcommand("perplexity", "perplexity of a text file");
  AddEngineFlags(ppl_cmd, &perplexity.engine);
  ppl_cmd->add_option("--text-file", perplexity.text_file, "UTF-8 text")->required();
  ppl_cmd->add_option("--ctx", perplexity.context, "window length in tokens")->capture_default_str();

  expertd::cli::TokenizeFlags tokenize;
  CLI::App* tok_cmd = app.add_subcommand("tokenize", "print the token ids of a text");
  tok_cmd->add_option("--model", tokenize.model_dir, "HF model directory or .gguf file")->required();
  // expected(0, 1): "--text=" (an empty value) is the empty text, as --text "" is,
  // not a missing value.
  tok_cmd->add_option("--text", tokenize.text, "text to tokenize")->required()->expected(0, 1);

  expertd::cli::PackFlags pack;
  CLI::App* pack_cmd = app.add_subcommand("pack", "write the packed expert file of a model");
  pack_cmd->add_option("--model", pack.model_dir, "HF model directory or .gguf file")->required();
  pack_cmd->add_option("--out", pack.out, "output file; default the model's (DIR/model.experts, X.experts beside X.gguf)");
  pack_cmd->add_option("--dtype", pack.dtype, expertd::engine::PackDtypeChoices())->capture_default_str();
  pack_cmd->add_option("--precision-plan", pack.precision_plan,
                       "routing trace (expertd trace / run --trace-out): pack the experts it uses most at a higher "
                       "precision, the rest lower, within --target-bytes");
  AddByteSizeOption(pack_cmd, "--target-bytes", &pack.target_bytes,
                    "with --precision-plan: the bytes of all experts' bundles (e.g. 4MiB)");
  pack_cmd->add_option("--precision-dtypes", pack.precision_dtypes,
                       "with --precision-plan: dtypes highest precision first (default bf16,q8_0,q6_k,q4_k, or "
                       "bf16,q8_0,q4_0 when expert rows are not whole 256-weight blocks)");

  expertd::cli::TraceFlags trace;
  CLI::App* trace_cmd = app.add_subcommand("trace", "record the expert routing of a text, token by token");
  AddEngineFlags(trace_cmd, &trace.engine);
  trace_cmd->add_option("--text-file", trace.text_file, "UTF-8 text")->required();
  trace_cmd->add_option("--out", trace.out, "trace file (cache/sim/TRACE_FORMAT.md)")->required();
  trace_cmd->add_option("--ctx", trace.context, "window length in tokens")->capture_default_str();

  expertd::cli::BenchCacheFlags bench_cache;
  CLI::App* bench_cmd = app.add_subcommand("bench-cache", "replay a routing trace through every eviction policy");
  bench_cmd->add_option("--trace", bench_cache.trace, "trace file from expertd trace")->required();
  bench_cmd->add_option("--capacity-percent", bench_cache.capacity_percents, "cache sizes, % of all experts")
      ->capture_default_str();
  bench_cmd->add_option("--policies", bench_cache.policies)->capture_default_str();
  bench_cmd->add_flag("--ignore-scores", bench_cache.ignore_scores,
                      "do not pass the trace's router scores to the policies");
  bench_cmd->add_option("--compute-us", bench_cache.replay.compute_us_per_layer,
                      "replay: compute time of every MoE layer, us (0: as recorded in the trace)")
      ->capture_default_str();
  bench_cmd->add_option("--latency-us", bench_cache.replay.io.latency_us, "replay: latency of one expert load, us (0: the trace's)");
  bench_cmd->add_option("--read-bytes-per-s", bench_cache.replay.io.bytes_per_second,
                      "replay: read bandwidth shared by overlapping loads, bytes/s (0: the trace's)");
  bench_cmd->add_option("--queue-depth", bench_cache.replay.io.queue_depth, "replay: loads in flight at most (0: 32)");
  bench_cmd->add_option("--parallel-transfers", bench_cache.replay.io.parallel_transfers,
                        "replay: transfers sharing the bandwidth at once, earliest first (0: all in flight)")
      ->capture_default_str();
  bench_cmd->add_option("--expert-bytes", bench_cache.replay.io.expert_bytes, "replay: bytes of one expert (0: the trace's)");
  bench_cmd->add_option("--budget", bench_cache.replay.budget_per_layer,
                      "replay: prefetch reads per predicted layer (0: the budget recorded with each prediction)")
      ->capture_default_str();
  bench_cmd->add_option("--step-gap-us", bench_cache.replay.step_gap_us, "replay: time between steps outside the MoE layers, us (-1: as recorded)")
      ->capture_default_str();
  bench_cmd->add_option("--wrong-guesses-first", bench_cache.replay.wrong_guesses_first,
                        "replay: recycle a prefetch whose layer ran without it before the policy's victim, as the "
                        "engine does by default ([cache] wrong_guesses_first)")
      ->capture_default_str();

  std::string serve_config;
  int drain_seconds = 30;
  CLI::App* serve_cmd = app.add_subcommand("serve", "run the daemon: serve the model on a Unix socket");
  serve_cmd->add_option("--config", serve_config, "TOML config (see configs/expertd.toml)")->required();
  serve_cmd->add_option("--drain-seconds", drain_seconds, "on SIGTERM, time to finish in-flight requests")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  absl::Status status;
  if (*run_cmd) status = expertd::cli::Run(run);
  if (*eval_cmd) status = expertd::cli::Eval(eval);
  if (*ppl_cmd) status = expertd::cli::Perplexity(perplexity);
  if (*tok_cmd) status = expertd::cli::Tokenize(tokenize);
  if (*pack_cmd) status = expertd::cli::Pack(pack);
  if (*serve_cmd) status = expertd::daemon::Serve(serve_config, drain_seconds);
  if (*trace_cmd) status = expertd::cli::Trace(trace);
  if (*bench_cmd) status = expertd::cli::BenchCache(bench_cache);
  if (!status.ok()) {
    std::fprintf(stderr, "expertd: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
