// Decode speed of an MoE model against the memory-bandwidth limit.
//
// A decode step streams every weight it touches once: attention, the router,
// the k routed experts of every MoE layer and the LM head. The limit is
// (bytes touched per token) / (plain read bandwidth measured in this run);
// the ratio says how much of the machine the engine uses.
//
//   decode_bench [--model DIR] [--tokens N] [--threads N] [--batch 8]
//                [--dram-percent 50,25,10] [--policies lru,least-stale,...]
//                [--prefetch none,previous-token,cross-layer:1,cross-layer:2]
// Without --model it generates (once, in the temp directory) a random bf16
// model of --shape: by default OLMoE-1B-7B's own shape (16 layers, hidden
// 2048, 64 experts top-8, ffn 1024, vocab 50304: 13.8 GB), or "small" (the
// same layers, 4 of them, vocab 4096) for a quick run. See bench/bench_models.h.
//
// With --dram-percent, the experts are packed (once, keeping their dtypes)
// into the model's default expert file (DIR/model.experts, or X.experts
// beside a GGUF file X.gguf)
// and decode runs again through the tiered cache with a DRAM budget of that
// share of all experts, read with io_uring and O_DIRECT, per policy; each
// figure is also given as a ratio to the all-resident run of the same
// process. A run with a predictor also prints, under its row, the
// predictor's precision/recall at every distance it predicted at (the row's
// prec/recall are distance 1's), so cross-layer:1, :2 and :3 compare at the
// distances they share, and what its prefetch reads bought.
//
// --batch B (default 8) also times one batched decode step of B sequences
// with different prompts against a step of one, with the distinct experts
// per MoE layer each needed: a step streams each distinct expert once, so
// its cost follows those, not B.

#include <chrono>
#include <cstdio>
#include <limits>
#include <memory>
#include <set>
#include <filesystem>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "bench/bench_models.h"
#include "bench/decode_bound.h"
#include "bench/expert_reads.h"
#include "bench/read_bandwidth.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "base/status_macros.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cache/expert_cache.h"
#include "engine/expert_packer.h"
#include "engine/batch_decoder.h"
#include "engine/expert_source.h"
#include "engine/layer_observer.h"
#include "engine/forward.h"
#include "engine/generator.h"
#include "model/model.h"
#include "engine/prefetcher.h"
#include "kernels/cpu/simd_target.h"
#include "kernels/cpu/thread_pool.h"
#include "tools/mkmodel/make_model.h"

namespace {

using namespace expertd;

// Bytes of weights one decode token reads, given its routing.
double BytesPerToken(const model::Model& model, int k) {
  const model::ModelConfig& c = model.config();
  const model::ModelWeights& w = model.weights();
  double bytes = static_cast<double>(w.lm_head.size_bytes()) + DTypeBytes(w.embedding.dtype, c.hidden_size);
  for (const model::LayerWeights& layer : w.layers) {
    bytes += layer.q.size_bytes() + layer.k.size_bytes() + layer.v.size_bytes() + layer.o.size_bytes();
    if (!layer.is_moe) {
      bytes += layer.dense_mlp.gate.size_bytes() + layer.dense_mlp.up.size_bytes() + layer.dense_mlp.down.size_bytes();
      continue;
    }
    const model::FeedForwardWeights& e = layer.experts[0];
    bytes += layer.router.size_bytes() + k * static_cast<double>(e.gate.size_bytes() + e.up.size_bytes() + e.down.size_bytes());
    if (layer.shared_expert) {
      bytes += layer.shared_expert->gate.size_bytes() + layer.shared_expert->up.size_bytes() +
               layer.shared_expert->down.size_bytes();
    }
  }
  return bytes;
}

// Counts the distinct experts each routed layer of a pass needed.
class DistinctExpertCounter : public engine::LayerObserver {
 public:
  void OnRouted(int /*layer*/, absl::Span<const float> /*gate_inputs*/, absl::Span<const int32_t> chosen,
                int /*n_tokens*/, int /*k*/) override {
    std::set<int32_t> experts(chosen.begin(), chosen.end());
    distinct_ += static_cast<int64_t>(experts.size());
    ++layers_;
  }
  double per_layer() const { return layers_ > 0 ? static_cast<double>(distinct_) / layers_ : 0.0; }

 private:
  int64_t distinct_ = 0;
  int64_t layers_ = 0;
};

// Passes the layer cycle on to `inner` (the prefetcher, or nobody) and
// keeps the cache's DRAM figures as they were when the first decode pass
// (one row) began, so an offloaded row counts decode's misses only: a
// prefill shares each expert among its tokens. It also counts the decode
// passes' MoE layers by how many misses each had, for the run's
// no-speculation bound (bench/decode_bound.h).
class DecodeStart : public engine::LayerObserver {
 public:
  DecodeStart(const cache::ExpertCache& cache, engine::LayerObserver* inner) : cache_(cache), inner_(inner) {}
  void BeginPass() override {
    at_pass_start_ = cache_.stats().dram;
    if (inner_ != nullptr) inner_->BeginPass();
  }
  void BeginLayer(int layer) override {
    misses_at_layer_start_ = cache_.stats().dram.misses;
    if (inner_ != nullptr) inner_->BeginLayer(layer);
  }
  void OnRouterScores(int layer, absl::Span<const float> scores) override {
    if (inner_ != nullptr) inner_->OnRouterScores(layer, scores);
  }
  void OnRouted(int layer, absl::Span<const float> gate_inputs, absl::Span<const int32_t> chosen, int n_tokens,
                int k) override {
    pass_rows_ = n_tokens;
    if (!seen_ && n_tokens == 1) {
      seen_ = true;
      decode_start_ = at_pass_start_;
    }
    if (inner_ != nullptr) inner_->OnRouted(layer, gate_inputs, chosen, n_tokens, k);
  }
  void OnLayerDone(int layer, double seconds) override {
    if (seen_ && pass_rows_ == 1) ++layers_by_misses_[cache_.stats().dram.misses - misses_at_layer_start_];
    if (inner_ != nullptr) inner_->OnLayerDone(layer, seconds);
  }
  // Forgets the last generation: the next one is measured afresh.
  void Reset() {
    seen_ = false;
    layers_by_misses_.clear();
  }
  const cache::TierStats& decode_start() const { return decode_start_; }
  // Decode passes' MoE layers by their misses: misses -> layers.
  const std::map<uint64_t, int64_t>& layers_by_misses() const { return layers_by_misses_; }

 private:
  const cache::ExpertCache& cache_;
  engine::LayerObserver* inner_;
  cache::TierStats at_pass_start_;
  cache::TierStats decode_start_;
  uint64_t misses_at_layer_start_ = 0;
  int pass_rows_ = 0;
  bool seen_ = false;
  std::map<uint64_t, int64_t> layers_by_misses_;
};

// Of each decode layer's time in a run, the share before its experts are
// known: its attention and router (OnLayerDone's seconds count from the
// layer's start, OnRouted comes once the routing is known).
class PreRoutingShare : public engine::LayerObserver {
 public:
  void OnRouted(int /*layer*/, absl::Span<const float> /*gate_inputs*/, absl::Span<const int32_t> /*chosen*/,
                int n_tokens, int /*k*/) override {
    decoding_ = n_tokens == 1;
    routed_at_ = std::chrono::steady_clock::now();
  }
  void OnLayerDone(int /*layer*/, double seconds) override {
    if (!decoding_) return;
    const double after = std::chrono::duration<double>(std::chrono::steady_clock::now() - routed_at_).count();
    before_routing_ += std::max(0.0, seconds - after);
    total_ += seconds;
  }
  double share() const { return total_ > 0 ? before_routing_ / total_ : 0.0; }

 private:
  bool decoding_ = false;
  std::chrono::steady_clock::time_point routed_at_;
  double before_routing_ = 0;
  double total_ = 0;
};

// Seconds of one batched decode step of `batch` sequences (each prefilled
// with its own prompt, so their routings differ as separate requests'
// would), averaged over `steps` steps, and the distinct experts a step
// needed per MoE layer.
struct StepFigures {
  double seconds = 0;
  double experts_per_layer = 0;
};
absl::StatusOr<StepFigures> MeasureBatchedStep(const model::Model& model, engine::ForwardPass& forward, int batch, int steps,
                                               int prompt_tokens) {
  const int vocab = model.config().vocab_size;
  engine::BatchDecoder decoder(model, forward);
  std::vector<std::unique_ptr<engine::DecodingSequence>> sequences;
  std::vector<engine::DecodingSequence*> running;
  std::vector<int32_t> tokens;
  std::vector<float> logits;
  for (int b = 0; b < batch; ++b) {
    sequences.push_back(std::make_unique<engine::DecodingSequence>(model, prompt_tokens + steps + 1, 0, engine::RosterOptions{},
                                                           &forward.kv_memory()));
    std::vector<int32_t> prompt(prompt_tokens);
    for (int t = 0; t < prompt_tokens; ++t) prompt[t] = (1 + 7919 * (b * prompt_tokens + t)) % vocab;
    RETURN_IF_ERROR(decoder.Prefill(*sequences.back(), prompt, &logits));
    running.push_back(sequences.back().get());
    tokens.push_back((3 + 104729 * b) % vocab);
  }
  std::vector<std::vector<float>> next;
  DistinctExpertCounter counter;
  forward.SetObserver(&counter);
  const auto start = std::chrono::steady_clock::now();
  absl::Status status;
  for (int s = 0; s < steps && status.ok(); ++s) {
    status = decoder.Step(running, tokens, &next);
    for (int b = 0; b < batch; ++b) tokens[b] = (tokens[b] + 31 * (s + 1)) % vocab;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  forward.SetObserver(nullptr);
  RETURN_IF_ERROR(status);
  return StepFigures{.seconds = seconds / steps, .experts_per_layer = counter.per_layer()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  bool map_weights = false;
  int tokens = 64;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CLI::App app{"decode tokens/s against the memory-bandwidth limit"};
  app.add_option("--model", model_dir, "model directory; default: generate the --shape bench model (once)");
  std::string shape = "olmoe-1b-7b";
  app.add_option("--shape", shape, bench::BenchModelShapesHelp())->capture_default_str();
  app.add_option("--tokens", tokens, "decode steps")->capture_default_str();
  app.add_option("--threads", threads, "compute threads")->capture_default_str();
  std::string simd_target;
  app.add_option("--simd-target", simd_target,
                 "run the kernels another CPU would, e.g. AVX2 on an AVX-512 host (default: the best this CPU runs)");
  int prompt_tokens = 16;
  app.add_option("--prompt-tokens", prompt_tokens, "prompt length (the prefill figure's)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  int batch = 8;
  app.add_option("--batch", batch, "also time a batched decode step of this many sequences against one (1: skip)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  std::string dram_percents;
  double file_read_seconds = 2.0;
  std::string policies = "lru,least-stale,layer-distance";
  app.add_flag("--map-weights", map_weights,
               "map a GGUF file's weights instead of copying them (shares the page cache with llama.cpp on the "
               "same file)");
  bool bf16_activations = false;
  app.add_flag("--bf16-activations", bf16_activations,
               "bf16 weights times activations rounded to bf16 (AVX-512 BF16 CPUs; [inference] bf16_activations)");
  app.add_option("--dram-percent", dram_percents, "offloaded runs: DRAM budgets as % of all experts, e.g. 50,25,10");
  app.add_option("--file-read-seconds", file_read_seconds,
                 "offloaded runs: how long to measure the expert file's read bandwidth first (0: skip, no ceiling)")
      ->capture_default_str();
  app.add_option("--policies", policies, "eviction policies for the offloaded runs")->capture_default_str();
  std::string shallow_list = "0";
  app.add_option("--shallow-layers", shallow_list,
                 "offloaded runs keep the first N MoE layers resident (Fate); comma-separated to compare")
      ->capture_default_str();
  std::string prefetches = "none";
  app.add_option("--prefetch", prefetches, "predictors for the offloaded runs, KIND[:LOOKAHEAD], comma-separated")
      ->capture_default_str();
  int prefetch_budget = 0;
  app.add_option("--prefetch-budget", prefetch_budget,
                 "prefetch reads per predicted layer per pass ([prefetch] budget_per_layer); 0: measured")
      ->capture_default_str();
  int prefetch_max_in_flight = predictor::PrefetchSchedulerOptions().max_in_flight;
  app.add_option("--prefetch-max-in-flight", prefetch_max_in_flight,
                 "prefetch only while fewer file reads than this are in flight, demand ones included")
      ->capture_default_str();
  int speculative_depth = io::ReaderOptions().speculative_depth;
  app.add_option("--speculative-depth", speculative_depth,
                 "prefetch reads (512 KiB pieces) at the disk at once; demand reads go first ([io] speculative_depth)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  float prefetch_min_score = 0;
  app.add_option("--prefetch-min-score", prefetch_min_score,
                 "prefetch only predictions scoring at least this (the predictor's probability)")
      ->capture_default_str();
  bool verify_checksums = true;
  app.add_option("--verify-checksums", verify_checksums,
                 "offloaded runs: check each loaded expert against the file's checksum (the daemon always does)")
      ->capture_default_str();
  bool wrong_guesses_first = cache::ExpertCacheOptions().wrong_guesses_first;
  app.add_option("--wrong-guesses-first", wrong_guesses_first,
                 "offloaded runs: recycle a prefetch whose layer ran without it before the policy's victim")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (absl::Status s = simd_target.empty() ? absl::OkStatus() : kernels::RestrictSimdTarget(simd_target); !s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }

  if (model_dir.empty()) {
    absl::StatusOr<std::string> made = bench::BenchModel(shape);
    if (!made.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(made.status().message()).c_str());
      return 1;
    }
    model_dir = *made;
  }
  auto model = model::Model::Load(model_dir, {.map_weights = map_weights, .bf16_activations = bf16_activations});
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  kernels::ThreadPool pool(threads);
  engine::ForwardPass forward(**model, &pool);

  engine::GenerateOptions options;
  options.max_new_tokens = tokens + 1;
  options.stop_at_eos = false;
  std::vector<int32_t> prompt(prompt_tokens);
  std::iota(prompt.begin(), prompt.end(), 1);
  // Warm-up: fault the mapped weights in, so the timing is of DRAM, not disk.
  if (auto warm = engine::Generate(**model, forward, prompt, options); !warm.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(warm.status().message()).c_str());
    return 1;
  }
  PreRoutingShare pre_routing;
  forward.SetObserver(&pre_routing);
  auto result = engine::Generate(**model, forward, prompt, options);
  forward.SetObserver(nullptr);
  const double bandwidth = bench::MeasureReadBandwidth(pool);
  const int k = (*model)->config().experts_per_token;
  const double bytes = BytesPerToken(**model, k);
  const double limit = bandwidth / bytes;
  std::printf("model: %s (%d layers, %d experts, top-%d, hidden %d)\n", model_dir.c_str(),
              (*model)->config().num_layers, (*model)->config().num_experts, k, (*model)->config().hidden_size);
  std::printf("threads: %d\n", threads);
  std::printf("simd target: %s\n", kernels::SimdTargetName());
  std::printf("memory read bandwidth: %.2f GB/s\n", bandwidth / 1e9);
  std::printf("weights read per decode token: %.1f MB\n", bytes / 1e6);
  std::printf("prefill: %.1f tokens/s (%d tokens)\n", result->prefill_tokens_per_second(), result->prompt_tokens);
  std::printf("decode: %.2f tokens/s; bandwidth limit %.2f tokens/s; ratio %.2f\n",
              result->decode_tokens_per_second(), limit, result->decode_tokens_per_second() / limit);
  std::printf("decode MoE layer time before its routing is known (attention, router): %.0f%%\n",
              100.0 * pre_routing.share());
  if (batch > 1) {
    // A batched step reads each distinct expert once for all its rows, so
    // its cost follows the distinct experts of the batch, not the batch size.
    auto single = MeasureBatchedStep(**model, forward, 1, tokens, prompt_tokens);
    auto batched = single.ok() ? MeasureBatchedStep(**model, forward, batch, tokens, prompt_tokens) : single;
    if (!batched.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(batched.status().message()).c_str());
      return 1;
    }
    std::printf("batched step of %d: %.1f ms vs %.1f ms for 1 (%.2fx); distinct experts per MoE layer %.1f vs %.1f "
                "(%.2fx)\n",
                batch, batched->seconds * 1e3, single->seconds * 1e3, batched->seconds / single->seconds,
                batched->experts_per_layer, single->experts_per_layer,
                batched->experts_per_layer / std::max(1e-9, single->experts_per_layer));
  }
  if (dram_percents.empty()) return 0;

  const std::string expert_path = (*model)->DefaultExpertFilePath();
  if (!std::filesystem::exists(expert_path)) {
    if (absl::Status s = engine::PackExperts(**model, expert_path, std::nullopt); !s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  auto file = io::ExpertFile::Open(expert_path, (*model)->fingerprint());
  io::ReaderOptions reader_options;
  reader_options.path = expert_path;
  reader_options.speculative_depth = speculative_depth;
  auto reader = file.ok() ? io::OpenExpertReader(reader_options) : file.status();
  if (!reader.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(reader.status().message()).c_str());
    return 1;
  }
  // The file's read bandwidth as the cache reads it (random whole experts,
  // O_DIRECT, the reader's queue full), measured before the runs: with it,
  // each run's I/O ceiling is this / (misses per decode token x bytes).
  // The reads and buffers serve the bound's batches too (below).
  const std::vector<bench::ExpertRead> slot_reads = bench::SlotReads(**file);
  std::vector<io::AlignedBuffer> read_buffers;
  double file_bandwidth = 0;
  if (file_read_seconds > 0) {
    if (absl::Status s = bench::GrowReadBuffers(read_buffers, static_cast<size_t>((*reader)->queue_depth()),
                                                (*file)->layout().slot_bytes());
        !s.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::string error;
    file_bandwidth = bench::MeasureExpertReads(**reader, slot_reads, read_buffers, file_read_seconds, &error);
    if (!error.empty()) {
      std::fprintf(stderr, "error: reading %s: %s\n", expert_path.c_str(), error.c_str());
      return 1;
    }
    std::printf("\nexpert file read bandwidth: %.2f GB/s (random whole experts of %.2f MiB, O_DIRECT, %d in flight)\n",
                file_bandwidth / 1e9, (*file)->layout().slot_bytes() / double(1 << 20), (*reader)->queue_depth());
  }
  const double resident_tps = result->decode_tokens_per_second();
  if (map_weights) {
    // The goal column's all-resident speed is this run's: mapped, it is not
    // the daemon's (which copies by default).
    std::printf("note: the all-resident speed above is of mapped weights (4 KiB page-cache pages); the daemon copies "
                "them by default ([model] map_weights = false), which decoded the OLMoE-1B-7B shape 1.46x faster "
                "(bench/README.md): run without --map-weights for the goal against the daemon's speed\n");
  }
  int total_experts = 0;
  int moe_layers = 0;
  for (bool moe : (*model)->config().layer_is_moe) {
    total_experts += moe ? (*model)->config().num_experts : 0;
    moe_layers += moe ? 1 : 0;
  }
  // One layer's batch of `misses` reads, measured once per size when a row
  // first needs it (with the file's bandwidth: only when that is measured).
  std::map<int, double> batch_seconds_by_size;
  std::string batch_error;
  auto batch_seconds = [&](int misses) {
    auto [it, inserted] = batch_seconds_by_size.try_emplace(misses, 0.0);
    if (!inserted) return it->second;
    const int batch = std::min(misses, (*model)->config().num_experts);
    if (absl::Status s = bench::GrowReadBuffers(read_buffers, static_cast<size_t>(batch),
                                                (*file)->layout().slot_bytes());
        !s.ok()) {
      batch_error = std::string(s.message());
      return 0.0;
    }
    // A step of several rows can miss more than one layer's experts; its
    // reads are then the whole layer's, scaled.
    it->second = bench::MeasureBatchSeconds(**reader, slot_reads, (*model)->config().num_experts, read_buffers,
                                            batch, 0.25, 20, &batch_error) *
                 misses / batch;
    return it->second;
  };
  // hit, hidden, miss: shares of the run's expert accesses (cache/expert_cache.h
  // TierStats); hid%: of the would-be misses, the share prefetch hid.
  // miss/tok: misses per decode token; ceiling: the decode speed the file's
  // bandwidth allows at those misses; goal: tokens/s over min(resident,
  // ceiling), to be >= 0.8 (issue 16). bound: the fastest decode without
  // speculation at the row's misses per layer (bench/decode_bound.h),
  // and of-bnd the row's tokens/s over it: where the bound is below 0.8 x
  // min(resident, ceiling) the goal is out of reach of any engine that does
  // not speculate, on this disk.
  std::printf("\n%-7s %-15s %-17s %6s %6s %6s %6s %9s %7s %9s %6s %6s %6s %7s %8s %9s %6s %9s %6s\n", "dram %",
              "policy", "prefetch", "slots", "hit", "hidden", "miss", "tokens/s", "ratio", "stall/tok", "prec", "recall",
              "hid%", "shallow", "miss/tok", "ceiling", "goal", "bound", "of-bnd");
  for (absl::string_view percent_text : absl::StrSplit(dram_percents, ',', absl::SkipEmpty())) {
    double percent = 0;
    if (!absl::SimpleAtod(percent_text, &percent)) continue;
    for (absl::string_view policy : absl::StrSplit(policies, ',', absl::SkipEmpty())) {
      for (absl::string_view prefetch_spec : absl::StrSplit(prefetches, ',', absl::SkipEmpty())) {
        for (absl::string_view shallow_text : absl::StrSplit(shallow_list, ',', absl::SkipEmpty())) {
          int shallow_layers = 0;
          if (!absl::SimpleAtoi(shallow_text, &shallow_layers)) {
            std::fprintf(stderr, "error: bad --shallow-layers '%s'\n", std::string(shallow_text).c_str());
            return 1;
          }
          cache::ExpertCacheOptions cache_options;
          cache_options.dram_budget_bytes =
              static_cast<uint64_t>(std::max(1.0, total_experts * percent / 100)) * (*file)->layout().slot_bytes();
          cache_options.policy = std::string(policy);
          cache_options.min_slots = k;
          cache_options.verify_checksums = verify_checksums;
          cache_options.wrong_guesses_first = wrong_guesses_first;
          auto cache = cache::ExpertCache::Create(**file, **reader, std::move(cache_options));
          if (!cache.ok()) {
            std::printf("%-7.0f %-15s %s\n", percent, std::string(policy).c_str(),
                        std::string(cache.status().message()).c_str());
            continue;
          }
          std::vector<cache::ExpertKey> shallow;
          for (int layer = 0; layer < shallow_layers && layer < (*model)->config().num_layers; ++layer) {
            for (int e = 0; e < (*model)->config().num_experts; ++e) shallow.push_back({layer, e});
          }
          if (absl::Status s = (*cache)->PinPermanently(shallow); !s.ok()) {
            std::printf("%-7.0f %-15s %s\n", percent, std::string(policy).c_str(), std::string(s.message()).c_str());
            continue;
          }
          engine::CachedExperts experts(**cache, **file, bf16_activations);
          engine::ForwardPass offloaded(**model, &pool, &experts);
          std::unique_ptr<engine::Prefetcher> prefetcher;
          const std::vector<std::string> spec = absl::StrSplit(prefetch_spec, ':');
          if (spec[0] != "none") {
            engine::PrefetcherOptions prefetch_options;
            prefetch_options.predictor.kind = spec[0];
            prefetch_options.scheduler.fixed_budget_per_layer = prefetch_budget;
            prefetch_options.scheduler.max_in_flight = prefetch_max_in_flight;
            prefetch_options.scheduler.min_score = prefetch_min_score;
            if (spec.size() > 1 && !absl::SimpleAtoi(spec[1], &prefetch_options.predictor.lookahead)) {
              std::fprintf(stderr, "error: bad lookahead in '%s'\n", std::string(prefetch_spec).c_str());
              return 1;
            }
            auto made = engine::Prefetcher::Create(**model, experts, prefetch_options, &pool);
            if (!made.ok()) {
              std::fprintf(stderr, "error: %s\n", std::string(made.status().message()).c_str());
              return 1;
            }
            prefetcher = std::move(*made);
          }
          DecodeStart decode_start(**cache, prefetcher.get());
          offloaded.SetObserver(&decode_start);
          // A warm-up generation first, as for the resident run: the figures
          // are of the steady state, not of filling an empty cache.
          auto warm = engine::Generate(**model, offloaded, prompt, options);
          const cache::TierStats before = (*cache)->stats().dram;
          const std::vector<predictor::PredictionStats::Figures> predictions_before =
              prefetcher != nullptr ? prefetcher->prediction_stats().by_distance()
                                    : std::vector<predictor::PredictionStats::Figures>{};
          decode_start.Reset();
          auto run = warm.ok() ? engine::Generate(**model, offloaded, prompt, options) : warm;
          if (!run.ok()) {
            std::fprintf(stderr, "error: %s\n", std::string(run.status().message()).c_str());
            return 1;
          }
          cache::TierStats stats = (*cache)->stats().dram;
          stats.hits -= before.hits;
          stats.hidden -= before.hidden;
          stats.misses -= before.misses;
          stats.wait_ns -= before.wait_ns;
          stats.prefetches -= before.prefetches;
          stats.late_prefetches -= before.late_prefetches;
          stats.wrong_guesses_recycled -= before.wrong_guesses_recycled;
          stats.prefetches_cancelled -= before.prefetches_cancelled;
          // The timed run's predictions only (not the warm-up's), every
          // distance the predictor reached: a cross-layer:N run predicts
          // each layer from 1..N layers back, so runs of different N agree
          // at the distances they share and the deeper ones add the rest.
          std::vector<predictor::PredictionStats::Figures> by_distance;
          if (prefetcher != nullptr) by_distance = prefetcher->prediction_stats().SinceSnapshot(predictions_before);
          const double precision = by_distance.size() > 1 ? by_distance[1].precision() : 0.0;
          const double recall = by_distance.size() > 1 ? by_distance[1].recall() : 0.0;
          const double decode_steps = std::max<double>(1, static_cast<double>(run->tokens.size()) - 1);
          const double misses_per_token = ((*cache)->stats().dram.misses - decode_start.decode_start().misses) /
                                          decode_steps;
          const double ceiling = misses_per_token > 0 && file_bandwidth > 0
                                     ? file_bandwidth / (misses_per_token * (*file)->layout().slot_bytes())
                                     : std::numeric_limits<double>::infinity();
          const double tps = run->decode_tokens_per_second();
          const double bound =
              file_bandwidth > 0 ? bench::NoSpeculationBoundTokensPerSecond(decode_start.layers_by_misses(),
                                                                            resident_tps, moe_layers,
                                                                            pre_routing.share(), batch_seconds)
                                 : 0.0;
          if (!batch_error.empty()) {
            std::fprintf(stderr, "error: reading %s: %s\n", expert_path.c_str(), batch_error.c_str());
            return 1;
          }
          std::printf("%-7.0f %-15s %-17s %6d %6.3f %6.3f %6.3f %9.2f %7.2f %7.1fms %6.2f %6.2f %5.1f%% %7d %8.2f %9.2f "
                      "%6.2f %9.2f %6.2f\n",
                      percent, std::string(policy).c_str(), std::string(prefetch_spec).c_str(), stats.slots,
                      stats.hit_rate(), stats.hidden_rate(), stats.miss_rate(), tps, tps / resident_tps,
                      stats.wait_ns / 1e6 / (run->tokens.size() + prompt.size()), precision, recall,
                      100.0 * stats.hidden_miss_share(), shallow_layers, misses_per_token, ceiling,
                      tps / std::min(resident_tps, ceiling), bound, bound > 0 ? tps / bound : 0.0);
          if (prefetcher != nullptr) {
            // What the rows' prec/recall (distance 1) leave out: the deeper
            // distances, and what the prefetch reads bought. A read is used
            // when an access found its expert ready because of it (hidden;
            // one per read at most), late when an access had to wait for it.
            // Reads per generated token include the prefill's few.
            std::string distances;
            for (size_t d = 1; d < by_distance.size(); ++d) {
              if (by_distance[d].predicted == 0) continue;
              absl::StrAppend(&distances, distances.empty() ? "" : ", ", d, ": ",
                              absl::StrFormat("%.2f/%.2f", by_distance[d].precision(), by_distance[d].recall()));
            }
            const double reads = static_cast<double>(stats.prefetches);
            const double tokens = static_cast<double>(run->tokens.size());
            std::printf("        precision/recall by distance: %s; prefetch reads %.1f/token, %.2f used, %.2f late, "
                        "%.1f/token recycled as wrong, %.1f/token cancelled in the queue; budget %d/layer\n",
                        distances.empty() ? "none" : distances.c_str(), reads / tokens,
                        reads > 0 ? stats.hidden / reads : 0.0, reads > 0 ? stats.late_prefetches / reads : 0.0,
                        stats.wrong_guesses_recycled / tokens, stats.prefetches_cancelled / tokens,
                        prefetcher->per_layer_budget());
          }
        }
      }
    }
  }
  if (!batch_seconds_by_size.empty()) {
    // What the bound column assumed: one layer's batch of N misses.
    std::string sizes;
    for (const auto& [misses, seconds] : batch_seconds_by_size) {
      absl::StrAppend(&sizes, sizes.empty() ? "" : ", ", misses, ": ", absl::StrFormat("%.0f", seconds * 1e6), " us");
    }
    std::printf("\none layer's misses read as one batch (bound): %s\n", sizes.c_str());
  }
  return 0;
}
