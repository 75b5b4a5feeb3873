#include "daemon/cli_commands.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "engine/forward.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "spdlog/spdlog.h"

namespace expertd::cli {
namespace {

// A loaded model with the compute pool and forward pass that run it.
struct LoadedEngine {
  std::unique_ptr<Model> model;
  std::unique_ptr<kernels::ThreadPool> pool;
  std::unique_ptr<ForwardPass> forward;
};

absl::StatusOr<LoadedEngine> LoadEngine(const EngineFlags& flags) {
  if (flags.threads < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  const auto start = std::chrono::steady_clock::now();
  LoadedEngine engine;
  ASSIGN_OR_RETURN(engine.model, Model::Load(flags.model_dir));
  const ModelConfig& config = engine.model->config();
  if (flags.experts_per_token < 0 || flags.experts_per_token > config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("--k must be in 1 .. ", config.num_experts,
                                                   " (this model's experts), got ", flags.experts_per_token));
  }
  const int threads = flags.threads > 0 ? flags.threads : std::max(1u, std::thread::hardware_concurrency());
  engine.pool = std::make_unique<kernels::ThreadPool>(threads);
  engine.forward = std::make_unique<ForwardPass>(*engine.model, engine.pool.get());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("loaded {} ({}: {} layers, {} experts, top-{}, hidden {}) in {:.2f} s, {} threads", flags.model_dir,
               config.architecture_name, config.num_layers, config.num_experts, config.experts_per_token,
               config.hidden_size, seconds, threads);
  return engine;
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
  ASSIGN_OR_RETURN(LoadedEngine engine, LoadEngine(flags.engine));
  const Tokenizer& tokenizer = engine.model->tokenizer();
  const std::vector<int32_t> prompt = tokenizer.Encode(flags.prompt);
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt encodes to no tokens");

  GenerateOptions options;
  options.max_new_tokens = flags.max_new_tokens;
  options.forward.experts_per_token = flags.engine.experts_per_token;
  options.sampling = {flags.temperature, flags.top_k, flags.top_p, flags.seed};

  std::cout << flags.prompt << std::flush;
  StreamDecoder decoder(tokenizer);
  ASSIGN_OR_RETURN(GenerateResult result,
                   Generate(*engine.model, *engine.forward, prompt, options,
                            [&](int32_t id) { std::cout << decoder.Next(id) << std::flush; }));
  std::cout << decoder.Flush() << "\n";
  std::printf("prompt: %d tokens, %.1f tokens/s; decode: %zu tokens, %.1f tokens/s%s\n", result.prompt_tokens,
              result.prefill_tokens_per_second(), result.tokens.size(), result.decode_tokens_per_second(),
              result.finish_reason == GenerateResult::FinishReason::kEos ? " (stopped at end of sequence)" : "");
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
  ASSIGN_OR_RETURN(LoadedEngine engine, LoadEngine(flags.engine));
  KvCache kv(engine.model->config(), engine.model->config().max_position_embeddings);
  ForwardOptions options;
  options.experts_per_token = flags.engine.experts_per_token;
  options.all_logits = true;
  std::vector<float> logits;
  RETURN_IF_ERROR(engine.forward->Run(tokens, kv, options, &logits));

  std::ofstream out(flags.logits_out, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot create ", flags.logits_out));
  out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing ", flags.logits_out, " failed"));
  std::printf("wrote logits [%zu][%d] (float32, little-endian) to %s\n", tokens.size(),
              engine.model->config().vocab_size, flags.logits_out.c_str());
  return absl::OkStatus();
}

absl::Status Perplexity(const PerplexityFlags& flags) {
  if (flags.context < 2) return absl::InvalidArgumentError("--ctx must be at least 2");
  ASSIGN_OR_RETURN(std::string text, ReadFile(flags.text_file));
  ASSIGN_OR_RETURN(LoadedEngine engine, LoadEngine(flags.engine));
  const ModelConfig& config = engine.model->config();
  const std::vector<int32_t> tokens = engine.model->tokenizer().Encode(text);
  if (tokens.size() < 2) return absl::InvalidArgumentError(absl::StrCat(flags.text_file, " has fewer than 2 tokens"));
  const int context = std::min(flags.context, config.max_position_embeddings);

  // Non-overlapping windows: each token after a window's first is scored
  // given the tokens before it in its window.
  ForwardOptions options;
  options.experts_per_token = flags.engine.experts_per_token;
  options.all_logits = true;
  std::vector<float> logits;
  double total_nll = 0.0;
  int64_t scored = 0;
  const auto start = std::chrono::steady_clock::now();
  for (size_t begin = 0; begin + 1 < tokens.size(); begin += context) {
    const size_t end = std::min(tokens.size(), begin + context);
    absl::Span<const int32_t> window(tokens.data() + begin, end - begin);
    KvCache kv(config, context);
    RETURN_IF_ERROR(engine.forward->Run(window, kv, options, &logits));
    for (size_t t = 0; t + 1 < window.size(); ++t) {
      absl::Span<const float> row(logits.data() + t * config.vocab_size, config.vocab_size);
      total_nll -= LogProbability(row, window[t + 1]);
      ++scored;
    }
    spdlog::debug("perplexity: {} / {} tokens", end, tokens.size());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("perplexity: %.4f over %lld tokens (context %d, k %d), %.1f tokens/s\n",
              std::exp(total_nll / scored), static_cast<long long>(scored), context,
              options.experts_per_token == 0 ? config.experts_per_token : options.experts_per_token,
              tokens.size() / seconds);
  return absl::OkStatus();
}

absl::Status Tokenize(const TokenizeFlags& flags) {
  ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::FromFile(flags.model_dir + "/tokenizer.json"));
  const std::vector<int32_t> ids = tokenizer->Encode(flags.text);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&line, i == 0 ? "" : " ", ids[i]);
  std::printf("%s\n", line.c_str());
  return absl::OkStatus();
}

}  // namespace expertd::cli
