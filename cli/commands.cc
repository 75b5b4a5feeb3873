#include "cli/commands.h"

#include <chrono>
#include <filesystem>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "engine/batch_decoder.h"
#include "engine/forward.h"
#include "engine/request_engine.h"
#include "model/model.h"
#include "engine/sampler.h"
#include "engine/expert_packer.h"
#include "engine/precision_plan.h"
#include "base/byte_size.h"
#include "cache/sim/bench_cache.h"
#include "cache/sim/trace_file.h"
#include "absl/strings/str_split.h"
#include "spdlog/spdlog.h"

namespace expertd::cli {
namespace {

// tokens: how many tokens the run processed (for per-token figures). Call
// once the run has finished (the prefetch figures are the pass's).
void PrintCacheStats(const runtime::Runtime& runtime, int64_t tokens) {
  const runtime::RuntimeStats figures = runtime.Stats();
  if (!figures.cache) return;
  const cache::CacheStats& stats = *figures.cache;
  // Each access once: hit (ready when asked), hidden (made ready by a
  // prefetch), miss (a demand load, with its stall).
  auto print = [](const char* name, const cache::TierStats& t) {
    std::printf(
        "cache %s (%s, %d slots): %llu accesses: hit %.3f, hidden %.3f, miss %.3f (hits %llu, hidden %llu, "
        "misses %llu, collision misses %llu), evictions %llu, loads %llu, read %s%s, stalled %.1f ms\n",
        name, t.policy.c_str(), t.slots, static_cast<unsigned long long>(t.accesses()), t.hit_rate(),
        t.hidden_rate(), t.miss_rate(), static_cast<unsigned long long>(t.hits),
        static_cast<unsigned long long>(t.hidden), static_cast<unsigned long long>(t.misses),
        static_cast<unsigned long long>(t.collision_misses), static_cast<unsigned long long>(t.evictions),
        static_cast<unsigned long long>(t.loads), FormatByteSize(t.bytes_loaded).c_str(),
        // The file's side (DRAM): bundles rounded up to its alignment.
        t.bytes_read == 0 ? "" : absl::StrCat(" (", FormatByteSize(t.bytes_read), " from the file)").c_str(),
        t.wait_ns / 1e6);
  };
  if (stats.device.slots > 0) print("device", stats.device);
  print("dram", stats.dram);
  const cache::TierStats& compute = stats.compute();
  // Prefetches land in the compute tier (the device tier when there is one).
  std::printf("stall: %.2f ms per token waiting for experts; prefetch hid %.1f%% of would-be misses (%llu late)\n",
              tokens > 0 ? compute.wait_ns / 1e6 / tokens : 0.0, 100.0 * compute.hidden_miss_share(),
              static_cast<unsigned long long>(compute.late_prefetches));
  const runtime::PassStats pass = runtime.PassFigures();
  if (!pass.prefetch) return;
  const runtime::PrefetchStats& prefetch = *pass.prefetch;
  for (size_t d = 1; d < prefetch.by_distance.size(); ++d) {
    std::printf("prefetch %s, distance %zu: precision %.3f, recall %.3f\n", prefetch.predictor.c_str(), d,
                prefetch.by_distance[d].precision(), prefetch.by_distance[d].recall());
  }
  if (prefetch.next_token_layers > 0) {
    std::printf("prefetch next token's first %d MoE layer(s) from %s: precision %.3f, recall %.3f, %llu reads\n",
                prefetch.next_token_layers,
                prefetch.next_token_from == "last-layer-gate" ? "the last layer's gate input" : "this token's routing",
                prefetch.next_token.precision(), prefetch.next_token.recall(),
                static_cast<unsigned long long>(prefetch.next_token_reads));
  }
  std::printf("prefetch reads: %llu issued, %llu already resident, %llu dropped as stale; budget %d per layer (%s)\n",
              static_cast<unsigned long long>(prefetch.reads.issued),
              static_cast<unsigned long long>(prefetch.reads.skipped_resident),
              static_cast<unsigned long long>(prefetch.reads.dropped_stale), prefetch.per_layer_budget,
              prefetch.budget_fixed
                  ? "set by budget_per_layer"
                  : absl::StrCat("measured: layer ", absl::StrFormat("%.2f", prefetch.mean_layer_seconds * 1e3),
                                 " ms x reads ", FormatByteSize(static_cast<uint64_t>(prefetch.load_bytes_per_second)),
                                 "/s with loads overlapping")
                        .c_str());
}

void PrintRosterCosts(const engine::RosterOptions& roster, const engine::SequenceCosts& costs) {
  std::printf("roster: %d samples (tau %.2f, skip %d, seed %llu); %.1f distinct experts per token over all layers; "
              "compute %.2fx the plain model\n",
              roster.samples, roster.temperature, roster.skip_layers, static_cast<unsigned long long>(roster.seed),
              costs.distinct_experts_per_token(), costs.extra_compute());
}

// Next-token logits for every position of `tokens` ([n][vocab], row t
// predicting token t + 1), scored by the request engine `run` and the daemon
// use: the prefill's logits, or under a Roster of Experts one roster step per
// position, as decoding would run them (the log of the samples' averaged
// distribution).
absl::StatusOr<std::vector<float>> ScorePositions(engine::RequestEngine& engine, const runtime::EngineOptions& options,
                                                  absl::Span<const int32_t> tokens, engine::SequenceCosts* costs) {
  auto request = std::make_shared<engine::Request>();
  request->prompt.assign(tokens.begin(), tokens.end());
  request->options.max_new_tokens = 0;
  request->options.forward.experts_per_token = options.experts_per_token;
  request->options.roster = options.roster;
  request->score_prompt = true;
  RETURN_IF_ERROR(engine::RunRequest(engine, request));
  std::lock_guard lock(request->mu);
  *costs = request->costs;
  return std::move(request->prompt_scores);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

absl::Status Run(const RunFlags& flags) {
  if (flags.prompt.empty()) return absl::InvalidArgumentError("--prompt is empty: give some text to continue");
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::Runtime> engine, runtime::Runtime::Load(flags.engine));
  const tokenizer::Tokenizer& tokenizer = engine->model().tokenizer();
  const std::vector<int32_t> prompt = tokenizer.Encode(flags.prompt);
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");

  // One request on the same engine the daemon runs, streamed to stdout.
  auto request = std::make_shared<engine::Request>();
  request->prompt = prompt;
  request->options.max_new_tokens = flags.max_new_tokens;
  request->options.forward.experts_per_token = flags.engine.experts_per_token;
  request->options.roster = flags.engine.roster;
  request->options.sampling = {.temperature = flags.temperature, .top_k = flags.top_k, .top_p = flags.top_p, .seed = flags.seed};
  if (!flags.trace_out.empty()) engine->StartStepTrace();
  engine::RequestEngine request_engine(engine->model(), engine->forward(), engine::SchedulerOptions::SingleRequest(prompt.size()));
  std::cout << flags.prompt << std::flush;
  RETURN_IF_ERROR(engine::RunRequest(request_engine, request, [](const std::string& piece) { std::cout << piece << std::flush; }));
  std::cout << "\n";
  std::lock_guard lock(request->mu);
  const engine::Request& done = *request;
  const int generated = static_cast<int>(done.tokens.size());
  std::printf("prompt: %zu tokens, %.1f tokens/s; decode: %d tokens, %.1f tokens/s; first token after %.1f ms%s\n",
              prompt.size(), done.prefill_seconds > 0 ? prompt.size() / done.prefill_seconds : 0.0, generated,
              done.decode_seconds > 0 && generated > 1 ? (generated - 1) / done.decode_seconds : 0.0,
              done.prefill_seconds * 1e3, done.finish_reason == "stop" ? " (stopped at end of sequence)" : "");
  const runtime::RuntimeStats runtime = engine->Stats();
  std::printf("cpu: %d threads, %s kernels%s\n", runtime.threads, runtime.simd_target.c_str(),
              runtime.bf16_activations ? ", bf16 activations" : "");
  if (const std::optional<runtime::GpuPassStats> gpu = engine->PassFigures().gpu) {
    std::printf("gpu: routed experts %llu run from VRAM, %llu loaded into VRAM, %llu on the cpu\n",
                static_cast<unsigned long long>(gpu->experts_on_device),
                static_cast<unsigned long long>(gpu->experts_loaded),
                static_cast<unsigned long long>(gpu->experts_on_cpu));
  }
  if (flags.engine.roster.enabled()) PrintRosterCosts(flags.engine.roster, done.costs);
  PrintCacheStats(*engine, static_cast<int64_t>(prompt.size()) + generated);
  if (!flags.trace_out.empty()) {
    const std::vector<cache::TraceStep> steps = engine->TakeStepTrace();
    const model::ModelConfig& config = engine->model().config();
    RETURN_IF_ERROR(cache::WriteStepTraceFile(flags.trace_out, config.num_layers, config.num_experts,
                                              config.experts_per_token, engine->TraceIo(), steps));
    std::printf("wrote %zu engine steps to %s\n", steps.size(), flags.trace_out.c_str());
  }
  return absl::OkStatus();
}

absl::Status Eval(const EvalFlags& flags) {
  std::vector<int32_t> tokens;
  for (absl::string_view piece : absl::StrSplit(flags.tokens, absl::ByAnyChar(" ,\t\n"), absl::SkipEmpty())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--tokens: '", piece, "' is not a token id"));
    }
    tokens.push_back(id);
  }
  if (tokens.empty()) return absl::InvalidArgumentError("--tokens is empty: give at least one token id");
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::Runtime> engine, runtime::Runtime::Load(flags.engine));
  const auto start = std::chrono::steady_clock::now();
  engine::SequenceCosts costs;
  std::vector<float> logits;
  {
    engine::RequestEngine request_engine(engine->model(), engine->forward(), engine::SchedulerOptions::SingleRequest(tokens.size()));
    ASSIGN_OR_RETURN(logits, ScorePositions(request_engine, flags.engine, tokens, &costs));
  }
  if (flags.engine.roster.enabled()) PrintRosterCosts(flags.engine.roster, costs);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::ofstream out(flags.logits_out, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot create ", flags.logits_out));
  out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing ", flags.logits_out, " failed"));
  std::printf("wrote logits [%zu][%d] (float32, little-endian) to %s; %zu tokens in %.3f s, %.1f tokens/s\n",
              tokens.size(), engine->model().config().vocab_size, flags.logits_out.c_str(), tokens.size(), seconds,
              seconds > 0 ? tokens.size() / seconds : 0.0);
  PrintCacheStats(*engine, static_cast<int64_t>(tokens.size()));
  return absl::OkStatus();
}

absl::Status Perplexity(const PerplexityFlags& flags) {
  if (flags.context < 2) return absl::InvalidArgumentError("--ctx must be at least 2");
  ASSIGN_OR_RETURN(std::string text, ReadFile(flags.text_file));
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::Runtime> engine, runtime::Runtime::Load(flags.engine));
  const model::ModelConfig& config = engine->model().config();
  const std::vector<int32_t> tokens = engine->model().tokenizer().Encode(text);
  if (tokens.size() < 2) return absl::InvalidArgumentError(absl::StrCat(flags.text_file, " has fewer than 2 tokens"));
  const int context = std::min(flags.context, config.max_position_embeddings);

  // Non-overlapping windows: each token after a window's first is scored
  // given the tokens before it in its window, one scoring request per window.
  engine::RequestEngine request_engine(engine->model(), engine->forward(), engine::SchedulerOptions::SingleRequest(context));
  double total_nll = 0.0;
  int64_t scored = 0;
  engine::SequenceCosts roster_costs;
  const auto start = std::chrono::steady_clock::now();
  for (size_t begin = 0; begin + 1 < tokens.size(); begin += context) {
    const size_t end = std::min(tokens.size(), begin + context);
    absl::Span<const int32_t> window(tokens.data() + begin, end - begin);
    engine::SequenceCosts window_costs;
    ASSIGN_OR_RETURN(const std::vector<float> logits,
                     ScorePositions(request_engine, flags.engine, window, &window_costs));
    roster_costs.decode_rows += window_costs.decode_rows;
    roster_costs.prompt_rows += window_costs.prompt_rows;
    roster_costs.decode_tokens += window_costs.decode_tokens;
    roster_costs.distinct_experts += window_costs.distinct_experts;
    for (size_t t = 0; t + 1 < window.size(); ++t) {
      absl::Span<const float> row(logits.data() + t * config.vocab_size, config.vocab_size);
      total_nll -= engine::LogProbability(row, window[t + 1]);
      ++scored;
    }
    spdlog::debug("perplexity: {} / {} tokens", end, tokens.size());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("perplexity: %.4f over %lld tokens (context %d, k %d), %.1f tokens/s\n",
              std::exp(total_nll / scored), static_cast<long long>(scored), context,
              flags.engine.experts_per_token == 0 ? config.experts_per_token : flags.engine.experts_per_token,
              tokens.size() / seconds);
  if (flags.engine.roster.enabled()) PrintRosterCosts(flags.engine.roster, roster_costs);
  // Offloaded: what the text cost in expert reads (a mixed-precision file's
  // cold experts read fewer bytes).
  PrintCacheStats(*engine, static_cast<int64_t>(tokens.size()));
  return absl::OkStatus();
}

absl::Status Tokenize(const TokenizeFlags& flags) {
  ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tokenizer, model::Model::LoadTokenizer(flags.model_dir));
  const std::vector<int32_t> ids = tokenizer->Encode(flags.text);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&line, i == 0 ? "" : " ", ids[i]);
  std::printf("%s\n", line.c_str());
  return absl::OkStatus();
}

}  // namespace expertd::cli

namespace expertd::cli {

namespace {

// The plan `pack --precision-plan` packs by: the trace's counts of every
// routed expert of the model (unused ones 0), planned within the budget.
absl::StatusOr<engine::PrecisionPlan> PlanFromTrace(const model::Model& model, const PackFlags& flags) {
  const model::ModelConfig& config = model.config();
  if (flags.target_bytes == 0) {
    return absl::InvalidArgumentError("--precision-plan needs --target-bytes: the bytes all experts' bundles may take");
  }
  ASSIGN_OR_RETURN(const std::vector<DType> dtypes, engine::ParsePrecisionDtypes(flags.precision_dtypes, config));
  ASSIGN_OR_RETURN(const std::vector<engine::PrecisionCandidate> candidates,
                   engine::PrecisionCandidatesFor(config, dtypes));
  ASSIGN_OR_RETURN(const cache::LoadedTrace trace, cache::ReadTraceFile(flags.precision_plan));
  if (trace.num_layers != config.num_layers || trace.num_experts != config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat(
        flags.precision_plan, " traces a model of ", trace.num_layers, " layers x ", trace.num_experts,
        " experts, but ", flags.model_dir, " has ", config.num_layers, " layers x ", config.num_experts,
        " experts: record the trace on this model (expertd trace --model ", flags.model_dir, ")"));
  }
  const std::vector<uint64_t> counts = cache::CountExpertChoices(trace);
  std::vector<engine::ExpertAccessCount> experts;
  uint64_t total = 0;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    for (int e = 0; e < config.num_experts; ++e) {
      const uint64_t n = counts[static_cast<size_t>(layer) * config.num_experts + e];
      total += n;
      if (config.layer_is_moe[layer]) {
        experts.push_back({.layer = layer, .expert = e, .accesses = n});
      } else if (n != 0) {
        return absl::InvalidArgumentError(absl::StrCat(flags.precision_plan, " routes tokens at layer ", layer,
                                                       ", a dense layer of ", flags.model_dir,
                                                       ": the trace is of another model"));
      }
    }
  }
  if (total == 0) return absl::InvalidArgumentError(absl::StrCat(flags.precision_plan, " records no routing"));
  return engine::PlanPrecision(experts, candidates, flags.target_bytes);
}

}  // namespace

absl::Status Pack(const PackFlags& flags) {
  const bool planned = !flags.precision_plan.empty();
  if (planned && flags.dtype != "keep") {
    return absl::InvalidArgumentError(absl::StrCat("--dtype ", flags.dtype, " and --precision-plan exclude each other: ",
                                                   "the plan gives each expert its dtype (--precision-dtypes)"));
  }
  if (!planned && (flags.target_bytes != 0 || !flags.precision_dtypes.empty())) {
    return absl::InvalidArgumentError("--target-bytes and --precision-dtypes go with --precision-plan TRACE");
  }
  ASSIGN_OR_RETURN(std::optional<DType> dtype, engine::ParsePackDtype(flags.dtype));
  // The packer reads the experts from the model files itself.
  ASSIGN_OR_RETURN(auto model, model::Model::Load(flags.model_dir, {.resident_experts = false}));
  std::optional<engine::PrecisionPlan> plan;
  if (planned) {
    ASSIGN_OR_RETURN(plan, PlanFromTrace(*model, flags));
    std::printf("precision plan from %s (%llu routing choices): %s\n", flags.precision_plan.c_str(),
                static_cast<unsigned long long>(plan->total_accesses()), plan->Summary().c_str());
  }
  const auto start = std::chrono::steady_clock::now();
  const std::string out = flags.out.empty() ? model->DefaultExpertFilePath() : flags.out;
  const auto progress = [](int done, int total) { runtime::PrintPackProgress("packing", done, total); };
  if (plan.has_value()) {
    RETURN_IF_ERROR(engine::PackExperts(*model, out, *plan, progress));
  } else {
    RETURN_IF_ERROR(engine::PackExperts(*model, out, dtype, progress));
  }
  ASSIGN_OR_RETURN(auto file, io::ExpertFile::Open(out, model->fingerprint()));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The types and sizes each expert was packed in (a Q4_K_M GGUF kept as it
  // is mixes two bundles), and the slot the cache will size by.
  std::string experts;
  uint64_t bundle_bytes = 0;
  for (const io::BundleDtypesCount& mix : file->dtype_mix()) {
    absl::StrAppend(&experts, experts.empty() ? "" : ", ", mix.experts, " x ", io::BundleDtypesName(mix.dtypes),
                    " (", FormatByteSize(mix.bundle_bytes), ")");
    bundle_bytes += mix.experts * mix.bundle_bytes;
  }
  std::printf("packed %u layers x %u experts into %s in %.1f s: %s (gate/up/down); slots of %s; bundles %s in all "
              "(%llu bytes)\n",
              file->layout().num_layers, file->layout().num_experts, out.c_str(), seconds, experts.c_str(),
              FormatByteSize(file->layout().slot_bytes()).c_str(), FormatByteSize(bundle_bytes).c_str(),
              static_cast<unsigned long long>(bundle_bytes));
  return absl::OkStatus();
}

absl::Status Trace(const TraceFlags& flags) {
  if (flags.context < 1) return absl::InvalidArgumentError("--ctx must be at least 1");
  ASSIGN_OR_RETURN(std::string text, ReadFile(flags.text_file));
  ASSIGN_OR_RETURN(std::unique_ptr<runtime::Runtime> engine, runtime::Runtime::Load(flags.engine));
  const model::ModelConfig& config = engine->model().config();
  const std::vector<int32_t> tokens = engine->model().tokenizer().Encode(text);
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat(flags.text_file, " has no tokens"));
  const int context = std::min(flags.context, config.max_position_embeddings);
  // Token by token, as decode runs: the trace is the access order a
  // decoding cache sees.
  std::vector<cache::TraceRecord> records;
  engine::ForwardOptions options;
  options.experts_per_token = flags.engine.experts_per_token;
  std::vector<float> logits;
  for (size_t begin = 0; begin < tokens.size(); begin += context) {
    const size_t end = std::min(tokens.size(), begin + context);
    engine::KvCache kv(config, context, &engine->forward().kv_memory());
    for (size_t t = begin; t < end; ++t) {
      engine::RoutingTrace trace;
      RETURN_IF_ERROR(engine->forward().Run(absl::MakeConstSpan(&tokens[t], 1), kv, options, &logits, &trace));
      for (engine::RoutingRecord& r : trace.records) {
        records.push_back({static_cast<int32_t>(t), r.layer, std::move(r.experts), std::move(r.weights)});
      }
    }
  }
  RETURN_IF_ERROR(cache::WriteTraceFile(flags.out, config.num_layers, config.num_experts, records));
  std::printf("wrote the routing of %zu tokens (%zu layer steps) to %s\n", tokens.size(), records.size(),
              flags.out.c_str());
  // Offloaded (--dram-budget): the text's expert reads, token by token as
  // decode makes them.
  PrintCacheStats(*engine, static_cast<int64_t>(tokens.size()));
  return absl::OkStatus();
}

absl::Status BenchCache(const BenchCacheFlags& flags) {
  std::vector<double> percents;
  for (absl::string_view piece : absl::StrSplit(flags.capacity_percents, ',', absl::SkipEmpty())) {
    double p = 0;
    if (!absl::SimpleAtod(piece, &p) || p <= 0 || p > 100) {
      return absl::InvalidArgumentError(absl::StrCat("--capacity-percent: '", piece, "' is not in (0, 100]"));
    }
    percents.push_back(p);
  }
  std::vector<std::string> policies = absl::StrSplit(flags.policies, ',', absl::SkipEmpty());
  // The same path as tools/bench_cache, router scores included: reading the
  // trace here and dropping its scores made layer-distance score
  // differently in the two tools.
  cache::CacheBenchmarkOptions options;
  options.replay = flags.replay;
  return cache::RunTraceFileBenchmark(flags.trace, policies, percents, std::cout, options, flags.ignore_scores);
}

}  // namespace expertd::cli
