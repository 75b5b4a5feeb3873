// expertd: the command-line entry point. Subcommands run the engine directly
// (run, eval, perplexity, tokenize); the daemon's serve command joins them later.

#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "daemon/cli_commands.h"
#include "spdlog/cfg/env.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

namespace {

void AddEngineFlags(CLI::App* command, expertd::cli::EngineFlags* flags) {
  command->add_option("--model", flags->model_dir, "HF model directory (config.json, *.safetensors, tokenizer.json)")
      ->required();
  command->add_option("--k", flags->experts_per_token, "routed experts per token (dial-k); default the model's")
      ->check(CLI::PositiveNumber);
  command->add_option("--threads", flags->threads, "compute threads; default every core");
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
  tok_cmd->add_option("--model", tokenize.model_dir, "HF model directory")->required();
  tok_cmd->add_option("--text", tokenize.text, "text to tokenize")->required();

  CLI11_PARSE(app, argc, argv);

  absl::Status status;
  if (*run_cmd) status = expertd::cli::Run(run);
  if (*eval_cmd) status = expertd::cli::Eval(eval);
  if (*ppl_cmd) status = expertd::cli::Perplexity(perplexity);
  if (*tok_cmd) status = expertd::cli::Tokenize(tokenize);
  if (!status.ok()) {
    std::fprintf(stderr, "expertd: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
