// The expertd and mkmodel command lines, run as a user would run them.

#include <algorithm>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/forward.h"
#include "model/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/files.h"
#include "tests/testing/test_models.h"

namespace expertd::integration {
namespace {

using ::expertd::testing::ScopedTempDir;
using ::testing::HasSubstr;

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

using ::expertd::testing::ReadAll;
using ::expertd::testing::ShellQuote;
class Cli : public ::testing::Test {
 protected:
  CommandResult Run(const std::string& binary, const std::vector<std::string>& args) {
    std::string command = ShellQuote(binary);
    for (const auto& arg : args) command += " " + ShellQuote(arg);
    const std::string out = dir_.Sub("stdout"), err = dir_.Sub("stderr");
    command += " >" + ShellQuote(out) + " 2>" + ShellQuote(err);
    const int status = std::system(command.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadAll(out), ReadAll(err)};
  }
  // Commands that run the model stay on the CPU unless they say otherwise:
  // these tests compare runs bit for bit, which holds on the CPU only.
  CommandResult Expertd(std::vector<std::string> args) {
    const bool runs_model = !args.empty() && (args[0] == "run" || args[0] == "eval" || args[0] == "perplexity" ||
                                              args[0] == "trace");
    if (runs_model && std::find(args.begin(), args.end(), "--gpu") == args.end()) {
      args.insert(args.end(), {"--gpu", "off"});
    }
    return Run(EXPERTD_BINARY, args);
  }

  // mkmodel's result for the test model's shape with this seed.
  CommandResult MakeModel(const std::string& out, const std::string& seed) {
    return Run(MKMODEL_BINARY, {"--arch", "qwen3_moe", "--layers", "2", "--hidden", "64", "--experts", "8", "--top-k",
                                "2", "--ffn", "32", "--heads", "4", "--kv-heads", "2", "--vocab", "400", "--dtype",
                                "bf16", "--seed", seed, "--out", out});
  }

  void SetUp() override {
    model_ = dir_.Sub("model");
    CommandResult made = MakeModel(model_, "3");
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }

  ScopedTempDir dir_{"cli"};
  std::string model_;
};

TEST_F(Cli, MkmodelIsDeterministic) {
  const std::string again = dir_.Sub("again");
  ASSERT_EQ(MakeModel(again, "3").exit_code, 0);
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) {
    EXPECT_EQ(ReadAll(model_ + "/" + file), ReadAll(again + "/" + file)) << file;
  }
  CommandResult bad = Run(MKMODEL_BINARY, {"--arch", "gpt2", "--out", dir_.Sub("x")});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("unknown --arch 'gpt2'"));
}

// --chat-template puts a publisher's template in tokenizer_config.json and
// its <|markers|> in the vocabulary, so they tokenize whole as on the real
// model (the README's chat example).
TEST_F(Cli, MkmodelCarriesAChatTemplateAndItsMarkers) {
  const std::string source = std::string(EXPERTD_SOURCE_DIR) +
                             "/tests/tokenizer/chat_templates/meta-llama-Llama-3.1-8B-Instruct.jinja";
  const std::string out = dir_.Sub("llama3");
  CommandResult made = Run(MKMODEL_BINARY, {"--chat-template", source, "--out", out});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const nlohmann::json config = nlohmann::json::parse(ReadAll(out + "/tokenizer_config.json"));
  EXPECT_EQ(config["chat_template"], ReadAll(source));
  for (const char* marker : {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}) {
    CommandResult ids = Expertd({"tokenize", "--model", out, "--text", marker});
    ASSERT_EQ(ids.exit_code, 0) << ids.err;
    EXPECT_EQ(ids.out.find(' '), std::string::npos) << marker << " is one token, got " << ids.out;
  }
  CommandResult missing = Run(MKMODEL_BINARY, {"--chat-template", dir_.Sub("none.jinja"), "--out", dir_.Sub("y")});
  EXPECT_NE(missing.exit_code, 0);
}

TEST_F(Cli, TokenizeMatchesTheLibrary) {
  const std::string text = "Hello world, 12345 tokens!";
  CommandResult result = Expertd({"tokenize", "--model", model_, "--text", text});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  auto tokenizer = tokenizer::Tokenizer::FromFile(model_ + "/tokenizer.json");
  ASSERT_TRUE(tokenizer.ok());
  std::string expected;
  for (int32_t id : (*tokenizer)->Encode(text)) absl::StrAppend(&expected, expected.empty() ? "" : " ", id);
  EXPECT_EQ(result.out, expected + "\n");
  // The same text given as --text=VALUE, and the empty text either way.
  EXPECT_EQ(Expertd({"tokenize", "--model", model_, "--text=" + text}).out, expected + "\n");
  for (const std::vector<std::string>& empty : {std::vector<std::string>{"--text="}, {"--text", ""}}) {
    std::vector<std::string> args = {"tokenize", "--model", model_};
    args.insert(args.end(), empty.begin(), empty.end());
    CommandResult none = Expertd(args);
    EXPECT_EQ(none.exit_code, 0) << empty[0] << ": " << none.err;
    EXPECT_EQ(none.out, "\n") << empty[0];
  }
}

TEST_F(Cli, RunGeneratesDeterministicallyAndReportsSpeed) {
  const std::vector<std::string> args = {"run", "--model", model_, "--prompt", "Once upon a time", "-n", "12",
                                         "--threads", "2"};
  CommandResult first = Expertd(args);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_THAT(first.out, HasSubstr("Once upon a time"));
  EXPECT_THAT(first.out, ::testing::ContainsRegex("prompt: [0-9]+ tokens, [0-9.]+ tokens/s; decode: [0-9]+ tokens, "
                                                  "[0-9.]+ tokens/s; first token after [0-9.]+ ms"));
  EXPECT_THAT(first.out, ::testing::ContainsRegex("cpu: [0-9]+ threads, [A-Z0-9_]+ kernels"));
  auto text = [](const std::string& out) { return out.substr(0, out.find("\nprompt:")); };
  EXPECT_EQ(text(Expertd(args).out), text(first.out));
  CommandResult sampled = Expertd({"run", "--model", model_, "--prompt", "Once upon a time", "-n", "12",
                                   "--temperature", "1.0", "--top-p", "0.9", "--top-k", "50", "--seed", "5", "--k", "3"});
  EXPECT_EQ(sampled.exit_code, 0) << sampled.err;
}

TEST_F(Cli, EvalWritesTheEngineLogits) {
  const std::string logits_path = dir_.Sub("logits.bin");
  CommandResult result = Expertd({"eval", "--model", model_, "--tokens", "1 2 3 300 7", "--logits-out", logits_path});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const std::string bytes = ReadAll(logits_path);
  ASSERT_EQ(bytes.size(), 5u * 400 * sizeof(float));
  std::vector<float> from_file(5 * 400);
  std::memcpy(from_file.data(), bytes.data(), bytes.size());

  auto model = model::Model::Load(model_);
  ASSERT_TRUE(model.ok());
  engine::ForwardPass forward(**model, nullptr);
  engine::KvCache kv((*model)->config(), 64);
  engine::ForwardOptions options;
  options.all_logits = true;
  std::vector<float> logits;
  ASSERT_TRUE(forward.Run(std::vector<int32_t>{1, 2, 3, 300, 7}, kv, options, &logits).ok());
  EXPECT_EQ(logits, from_file);
}

TEST_F(Cli, PerplexityIsFiniteAndKChangesIt) {
  const std::string text_file = dir_.Sub("text.txt");
  std::ofstream(text_file) << "The quick brown fox jumps over the lazy dog. It was the best of times.\n";
  CommandResult native = Expertd({"perplexity", "--model", model_, "--text-file", text_file, "--ctx", "16"});
  ASSERT_EQ(native.exit_code, 0) << native.err;
  EXPECT_THAT(native.out, ::testing::ContainsRegex("perplexity: [0-9.]+ over [0-9]+ tokens"));
  CommandResult k1 = Expertd({"perplexity", "--model", model_, "--text-file", text_file, "--ctx", "16", "--k", "1"});
  ASSERT_EQ(k1.exit_code, 0) << k1.err;
  EXPECT_NE(native.out.substr(0, 24), k1.out.substr(0, 24));
}

TEST_F(Cli, RosterFlagsServeRunAndPerplexity) {
  auto text = [](const std::string& out) { return out.substr(0, out.find("\nprompt:")); };
  const std::vector<std::string> plain = {"run", "--model", model_, "--prompt", "Once upon a time", "-n", "10"};
  CommandResult base = Expertd(plain);
  ASSERT_EQ(base.exit_code, 0) << base.err;
  // n = 1 is the plain model; so is any n with tau = 0 (greedy on the same
  // distribution, whatever its rounding).
  std::vector<std::string> one = plain;
  one.insert(one.end(), {"--roster", "1", "--roster-temperature", "0.5"});
  EXPECT_EQ(text(Expertd(one).out), text(base.out));
  std::vector<std::string> cold = plain;
  cold.insert(cold.end(), {"--roster", "4", "--roster-temperature", "0"});
  CommandResult cold_result = Expertd(cold);
  EXPECT_EQ(text(cold_result.out), text(base.out));
  EXPECT_THAT(cold_result.out, HasSubstr("roster: 4 samples"));
  // A real roster reports its costs and replays exactly with the same seed.
  std::vector<std::string> hot = plain;
  hot.insert(hot.end(), {"--roster", "8", "--roster-temperature", "1.0", "--roster-seed", "3"});
  CommandResult first = Expertd(hot);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_THAT(first.out, ::testing::ContainsRegex("roster: 8 samples .*; [0-9.]+ distinct experts per token over all "
                                                  "layers; compute [0-9.]+x the plain model"));
  EXPECT_EQ(Expertd(hot).out.substr(0, first.out.find("\nprompt:")), text(first.out));

  const std::string text_file = dir_.Sub("roster.txt");
  std::ofstream(text_file) << "The quick brown fox jumps over the lazy dog. It was the best of times.\n";
  auto perplexity = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"perplexity", "--model", model_, "--text-file", text_file, "--ctx", "16"};
    args.insert(args.end(), extra.begin(), extra.end());
    CommandResult result = Expertd(args);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    double value = 0;
    EXPECT_TRUE(absl::SimpleAtod(result.out.substr(12, result.out.find(' ', 12) - 12), &value)) << result.out;
    return value;
  };
  const double plain_ppl = perplexity({});
  EXPECT_NEAR(perplexity({"--roster", "4", "--roster-temperature", "0"}), plain_ppl, 1e-3 * plain_ppl);
  const double noisy = perplexity({"--roster", "4", "--roster-temperature", "2"});
  EXPECT_GT(std::abs(noisy - plain_ppl), 1e-3 * plain_ppl);
}

// --gpu: "off" is the CPU; "on" runs on a CUDA device or refuses, saying
// why (this build has no CUDA, or the machine no device); "auto" falls back.
TEST_F(Cli, GpuChoiceIsHonouredOrRefusedClearly) {
  const std::vector<std::string> base = {"run", "--model", model_, "--prompt", "Once upon a time", "-n", "6",
                                         "--threads", "2"};
  auto with = [&](const std::string& gpu) {
    std::vector<std::string> args = base;
    args.insert(args.end(), {"--gpu", gpu});
    return Expertd(args);
  };
  CommandResult off = with("off");
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_THAT(off.err, HasSubstr("on the CPU"));
  CommandResult automatic = with("auto");
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  CommandResult on = with("on");
  if (on.exit_code != 0) {
    EXPECT_THAT(on.err, HasSubstr("--gpu on, but"));
    EXPECT_THAT(automatic.err, HasSubstr("on the CPU"));
  } else {
    EXPECT_THAT(on.err, HasSubstr("on the GPU"));
    EXPECT_THAT(on.out, HasSubstr("Once upon a time"));
  }
  CommandResult bad = with("maybe");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("--gpu"));
}

TEST_F(Cli, OffloadedRunMatchesResidentAndReportsTheCache) {
  const std::vector<std::string> base = {"run", "--model", model_, "--prompt", "Once upon a time", "-n", "10"};
  CommandResult resident = Expertd(base);
  ASSERT_EQ(resident.exit_code, 0) << resident.err;
  std::vector<std::string> offloaded_args = base;
  // Packs DIR/model.experts on first use; 6 of the 16 experts fit.
  for (const char* arg :
       {"--dram-budget", "150KiB", "--policy", "lru", "--queue-depth", "3", "--speculative-depth", "2", "--prefetch",
        "cross-layer"}) {
    offloaded_args.push_back(arg);
  }
  CommandResult offloaded = Expertd(offloaded_args);
  ASSERT_EQ(offloaded.exit_code, 0) << offloaded.err;
  EXPECT_THAT(offloaded.err, HasSubstr("packing"));
  EXPECT_THAT(offloaded.err, HasSubstr("(queue depth 3, at most 2 for prefetches)"))
      << "--queue-depth and --speculative-depth reach the reader";
  auto text = [](const std::string& out) { return out.substr(0, out.find("\nprompt:")); };
  EXPECT_EQ(text(offloaded.out), text(resident.out));
  EXPECT_THAT(offloaded.out, ::testing::ContainsRegex("cache dram \\(lru, [0-9]+ slots\\): [0-9]+ accesses: hit [0-9.]+, "
                                                      "hidden [0-9.]+, miss [0-9.]+"));
  EXPECT_THAT(offloaded.out, ::testing::ContainsRegex("budget [0-9]+ per layer \\(measured"));
  // Second run: the packed file is reused, not rewritten. Without --prefetch
  // (auto) and without a device tier nothing is prefetched, and the log says why.
  std::vector<std::string> default_prefetch = base;
  default_prefetch.insert(default_prefetch.end(), {"--dram-budget", "150KiB"});
  CommandResult again = Expertd(default_prefetch);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_THAT(again.err, ::testing::Not(HasSubstr("packing")));
  EXPECT_THAT(again.err, HasSubstr("prefetch kind auto: none (no device tier"));
  EXPECT_THAT(again.out, ::testing::Not(HasSubstr("per layer (measured")));
  EXPECT_EQ(text(again.out), text(resident.out));

  CommandResult too_small = Expertd({"run", "--model", model_, "--prompt", "hi", "--dram-budget", "20KiB"});
  EXPECT_NE(too_small.exit_code, 0);
  EXPECT_THAT(too_small.err, HasSubstr("fewer than the 2 one layer needs"));
  CommandResult bad_unit = Expertd({"run", "--model", model_, "--prompt", "hi", "--dram-budget", "12 parsecs"});
  EXPECT_THAT(bad_unit.err, HasSubstr("unknown unit"));
}

// A .gguf file is a model wherever a directory is: tokenize, run, pack
// (beside the file, in the experts' own type), offloaded run from that pack.
TEST_F(Cli, AGgufFileIsAModel) {
  const std::string gguf = dir_.Sub("qwen3moe-q8_0.gguf");
  std::filesystem::copy_file(std::string(EXPERTD_SOURCE_DIR) + "/tests/engine/testdata/gguf_weights/qwen3moe-q8_0.gguf",
                             gguf);
  CommandResult tokens = Expertd({"tokenize", "--model", gguf, "--text", "In the beginning"});
  ASSERT_EQ(tokens.exit_code, 0) << tokens.err;
  EXPECT_FALSE(tokens.out.empty());
  const std::vector<std::string> base = {"run", "--model", gguf, "--prompt", "In the beginning", "-n", "6"};
  CommandResult resident = Expertd(base);
  ASSERT_EQ(resident.exit_code, 0) << resident.err;
  CommandResult pack = Expertd({"pack", "--model", gguf});
  ASSERT_EQ(pack.exit_code, 0) << pack.err;
  const std::string packed = dir_.Sub("qwen3moe-q8_0.experts");
  EXPECT_THAT(pack.out, HasSubstr(packed));
  EXPECT_TRUE(std::filesystem::exists(packed));
  std::vector<std::string> offloaded_args = base;
  offloaded_args.insert(offloaded_args.end(), {"--dram-budget", "64KiB"});
  CommandResult offloaded = Expertd(offloaded_args);
  ASSERT_EQ(offloaded.exit_code, 0) << offloaded.err;
  EXPECT_THAT(offloaded.err, ::testing::Not(HasSubstr("packing")));
  auto text = [](const std::string& out) { return out.substr(0, out.find("\nprompt:")); };
  EXPECT_EQ(text(offloaded.out), text(resident.out));
}

// A Q4_K_M file packs as it is: each matrix keeps llama.cpp's type, and the
// summary says which bundles and sizes; run offloaded from it through two
// slots (of four experts), it generates what the resident model generates.
TEST_F(Cli, AQ4KMGgufPacksPerMatrixTypesAndRunsOffloaded) {
  const std::string gguf = dir_.Sub("qwen3moe-q4_k_m.gguf");
  std::filesystem::copy_file(
      std::string(EXPERTD_SOURCE_DIR) + "/tests/engine/testdata/gguf_weights/qwen3moe-q4_k_m.gguf", gguf);
  CommandResult pack = Expertd({"pack", "--model", gguf});
  ASSERT_EQ(pack.exit_code, 0) << pack.err;
  EXPECT_THAT(pack.out,
              HasSubstr("2 x q4_k (108.0 KiB), 2 x q4_k/q4_k/q6_k (124.5 KiB) (gate/up/down); slots of 128.0 KiB"));
  const std::vector<std::string> base = {"run", "--model", gguf, "--prompt", "In the beginning", "-n", "6"};
  CommandResult resident = Expertd(base);
  ASSERT_EQ(resident.exit_code, 0) << resident.err;
  std::vector<std::string> offloaded_args = base;
  offloaded_args.insert(offloaded_args.end(), {"--dram-budget", "256KiB"});
  CommandResult offloaded = Expertd(offloaded_args);
  ASSERT_EQ(offloaded.exit_code, 0) << offloaded.err;
  EXPECT_THAT(offloaded.err, HasSubstr("q4_k x 2, q4_k/q4_k/q6_k x 2"));
  auto text = [](const std::string& out) { return out.substr(0, out.find("\nprompt:")); };
  EXPECT_EQ(text(offloaded.out), text(resident.out));
}

TEST_F(Cli, PackRefusesAnotherModelsExperts) {
  const std::string other = dir_.Sub("other");
  ASSERT_EQ(MakeModel(other, "4").exit_code, 0);
  const std::string packed = dir_.Sub("other.experts");
  CommandResult pack = Expertd({"pack", "--model", other, "--out", packed});
  ASSERT_EQ(pack.exit_code, 0) << pack.err;
  EXPECT_THAT(pack.out, HasSubstr("packed 2 layers x 8 experts"));
  CommandResult mismatch = Expertd({"run", "--model", model_, "--prompt", "hi", "--dram-budget", "1MiB", "--expert-file",
                                    packed});
  EXPECT_NE(mismatch.exit_code, 0);
  EXPECT_THAT(mismatch.err, HasSubstr("fingerprint"));
  EXPECT_NE(Expertd({"pack", "--model", other, "--out", packed, "--dtype", "int3"}).exit_code, 0);
}

// pack --dtype q8_0 writes 8-bit blocks that run through the cache; a
// block format whose blocks do not fit the rows is refused, naming why.
TEST_F(Cli, PackQuantisesExpertsThatRunOffloaded) {
  const std::string packed = dir_.Sub("q8_0.experts");
  CommandResult pack = Expertd({"pack", "--model", model_, "--out", packed, "--dtype", "q8_0"});
  ASSERT_EQ(pack.exit_code, 0) << pack.err;
  // The test model's experts: 3 matrices of 64 x 32 in blocks of 32 at 34 bytes.
  EXPECT_THAT(pack.out, HasSubstr(" x q8_0 (6.4 KiB) (gate/up/down)"));
  CommandResult run = Expertd({"run", "--model", model_, "--prompt", "Once upon a time", "-n", "4", "--dram-budget",
                               "1MiB", "--expert-file", packed});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  CommandResult k_quant = Expertd({"pack", "--model", model_, "--out", dir_.Sub("q4_k.experts"), "--dtype", "q4_k"});
  EXPECT_NE(k_quant.exit_code, 0);
  EXPECT_THAT(k_quant.err, HasSubstr("blocks of 256 elements"));
  CommandResult unknown = Expertd({"pack", "--model", model_, "--out", dir_.Sub("x.experts"), "--dtype", "int3"});
  EXPECT_THAT(unknown.err, HasSubstr("q8_0"));
}

// pack --precision-plan: a trace of the model ranks its experts, the most
// used are packed at q8_0 and the rest at q4_0 within the budget, the
// summary says so, and the file runs offloaded. Bad input is refused with a
// message, never a crash. The test model's experts (3 x 64 x 32 weights):
// bf16 12288 bytes, q8_0 6528, q4_0 3456; 16 of them.
TEST_F(Cli, PackWithAPrecisionPlan) {
  const std::string text_file = dir_.Sub("text.txt");
  std::ofstream(text_file) << "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst.";
  const std::string trace = dir_.Sub("trace.txt");
  CommandResult traced = Expertd({"trace", "--model", model_, "--text-file", text_file, "--out", trace});
  ASSERT_EQ(traced.exit_code, 0) << traced.err;
  const std::string packed = dir_.Sub("mixed.experts");
  // 16 x 3456 at q4_0, then 8 steps of 3072 to q8_0: 79872 bytes.
  CommandResult pack = Expertd({"pack", "--model", model_, "--out", packed, "--precision-plan", trace,
                                "--target-bytes", "80000"});
  ASSERT_EQ(pack.exit_code, 0) << pack.err;
  EXPECT_THAT(pack.out, HasSubstr("precision plan from"));
  EXPECT_THAT(pack.out, HasSubstr("bf16: 0 experts"));
  EXPECT_THAT(pack.out, HasSubstr("q8_0: 8 experts (51.0 KiB, "));
  EXPECT_THAT(pack.out, HasSubstr("q4_0: 8 experts (27.0 KiB, "));
  EXPECT_THAT(pack.out, HasSubstr("slots of 8.0 KiB; bundles 78.0 KiB in all (79872 bytes)"));
  CommandResult run = Expertd({"run", "--model", model_, "--prompt", "Once upon a time", "-n", "4", "--dram-budget",
                               "32KiB", "--expert-file", packed});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  // Above all-bf16: every expert bf16.
  CommandResult all = Expertd({"pack", "--model", model_, "--out", dir_.Sub("all.experts"), "--precision-plan", trace,
                               "--target-bytes", "1MiB"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_THAT(all.out, HasSubstr("bf16: 16 experts (192.0 KiB, 100.0% of accesses)"));

  const std::string other_trace = dir_.Sub("other.trace");
  std::ofstream(other_trace) << "expertd-trace v1 layers=3 experts=8 k=2\n0 0 1 2\n";
  struct Case {
    std::vector<std::string> extra;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--precision-plan", other_trace, "--target-bytes", "80000"}, "traces a model of 3 layers x 8 experts"},
      {{"--precision-plan", dir_.Sub("missing.trace"), "--target-bytes", "80000"}, "missing.trace"},
      {{"--precision-plan", trace, "--target-bytes", "50000"}, "at least 55296 bytes"},
      {{"--precision-plan", trace}, "--target-bytes"},
      {{"--precision-plan", trace, "--target-bytes", "80000", "--precision-dtypes", "q8_0,int3"}, "'int3'"},
      {{"--precision-plan", trace, "--target-bytes", "80000", "--precision-dtypes", "bf16,q4_k"}, "q4_k"},
      {{"--precision-plan", trace, "--target-bytes", "80000", "--dtype", "q8_0"}, "exclude each other"},
      {{"--target-bytes", "80000"}, "--precision-plan"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"pack", "--model", model_, "--out", dir_.Sub("bad.experts")};
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    CommandResult bad = Expertd(args);
    EXPECT_NE(bad.exit_code, 0) << c.message;
    EXPECT_THAT(bad.err, HasSubstr(c.message));
    EXPECT_FALSE(std::filesystem::exists(dir_.Sub("bad.experts"))) << c.message;
  }
}

TEST_F(Cli, TraceFeedsBenchCache) {
  const std::string text_file = dir_.Sub("text.txt");
  std::ofstream(text_file) << "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst.";
  const std::string trace = dir_.Sub("trace.txt");
  CommandResult traced = Expertd({"trace", "--model", model_, "--text-file", text_file, "--out", trace});
  ASSERT_EQ(traced.exit_code, 0) << traced.err;
  EXPECT_THAT(ReadAll(trace), HasSubstr("layers=2 experts=8"));
  CommandResult bench = Expertd({"bench-cache", "--trace", trace, "--capacity-percent", "25,50", "--policies",
                                 "lru,least-stale,belady"});
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_THAT(bench.out, HasSubstr("least-stale"));
  EXPECT_THAT(bench.out, HasSubstr("belady"));
  CommandResult bad = Expertd({"bench-cache", "--trace", trace, "--capacity-percent", "0"});
  EXPECT_NE(bad.exit_code, 0);

  // expertd bench-cache and tools/bench_cache are one benchmark: the same
  // table for the same trace, router scores included (expertd used to drop
  // them, so layer-distance, which ranks by them, scored differently).
  const std::vector<std::string> same = {"--trace", trace, "--capacity-percent", "25,50", "--policies",
                                         "lru,layer-distance,belady"};
  std::vector<std::string> expertd_args = {"bench-cache"};
  expertd_args.insert(expertd_args.end(), same.begin(), same.end());
  CommandResult from_expertd = Expertd(expertd_args);
  CommandResult from_tool = Run(BENCH_CACHE_BINARY, same);
  ASSERT_EQ(from_expertd.exit_code, 0) << from_expertd.err;
  ASSERT_EQ(from_tool.exit_code, 0) << from_tool.err;
  EXPECT_EQ(from_expertd.out, from_tool.out);
  // And the scores matter: without them layer-distance's table differs.
  expertd_args.push_back("--ignore-scores");
  CommandResult unscored = Expertd(expertd_args);
  ASSERT_EQ(unscored.exit_code, 0) << unscored.err;
  EXPECT_NE(unscored.out, from_expertd.out) << "the scores reached no policy";
}

// `run --trace` records the engine's steps (trace v2); bench-cache replays
// them as the engine ran them (recorded predictions, timed loads), and the
// standalone tool prints the same.
TEST_F(Cli, RunTraceIsReplayedByBenchCache) {
  const std::string trace = dir_.Sub("run.trace");
  CommandResult run = Expertd({"run", "--model", model_, "--prompt", "Once upon a time there was", "-n", "12",
                               "--dram-budget", "1MiB", "--prefetch", "cross-layer", "--prefetch-next-token", "1",
                               "--trace", trace});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("engine steps to"));
  const std::string text = ReadAll(trace);
  EXPECT_THAT(text, HasSubstr("expertd-trace v2 layers=2 experts=8"));
  EXPECT_THAT(text, HasSubstr("expert_bytes="));
  EXPECT_THAT(text, HasSubstr("\nstep rows=1 gap_us="));  // decode steps, after the prefill
  EXPECT_THAT(text, HasSubstr("\npredict "));
  EXPECT_THAT(text, HasSubstr("\ncompute "));
  const std::vector<std::string> same = {"--trace", trace, "--capacity-percent", "50", "--policies",
                                         "lru,least-stale,belady"};
  std::vector<std::string> expertd_args = {"bench-cache"};
  expertd_args.insert(expertd_args.end(), same.begin(), same.end());
  CommandResult bench = Expertd(expertd_args);
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_THAT(bench.out, HasSubstr("engine replay: 12 steps"));
  EXPECT_THAT(bench.out, HasSubstr("true hit"));
  CommandResult from_tool = Run(BENCH_CACHE_BINARY, same);
  ASSERT_EQ(from_tool.exit_code, 0) << from_tool.err;
  EXPECT_EQ(bench.out, from_tool.out);
  // Both replay the policy's own victim order on request, alike.
  std::vector<std::string> policy_alone = same;
  policy_alone.insert(policy_alone.end(), {"--wrong-guesses-first", "0"});
  expertd_args = {"bench-cache"};
  expertd_args.insert(expertd_args.end(), policy_alone.begin(), policy_alone.end());
  CommandResult alone = Expertd(expertd_args);
  ASSERT_EQ(alone.exit_code, 0) << alone.err;
  CommandResult alone_from_tool = Run(BENCH_CACHE_BINARY, policy_alone);
  ASSERT_EQ(alone_from_tool.exit_code, 0) << alone_from_tool.err;
  EXPECT_EQ(alone.out, alone_from_tool.out);
  EXPECT_THAT(alone.out, HasSubstr("true hit"));
}

TEST_F(Cli, ErrorsAreClearAndNonZero) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"run", "--model", dir_.Sub("missing"), "--prompt", "hi"}, "does not exist"},
      {{"run", "--model", model_, "--prompt", ""}, "prompt is empty"},
      {{"run", "--model", model_, "--prompt", "hi", "--k", "0"}, "--k"},
      {{"run", "--model", model_, "--prompt", "hi", "--k", "9"}, "--k must be in 1 .. 8"},
      {{"run", "--model", model_, "--prompt", "hi", "--top-p", "2"}, "top_p"},
      {{"eval", "--model", model_, "--tokens", "1 x 3", "--logits-out", dir_.Sub("l")}, "'x' is not a token id"},
      {{"eval", "--model", model_, "--tokens", "1 4000", "--logits-out", dir_.Sub("l")}, "token id 4000"},
      {{"perplexity", "--model", model_, "--text-file", dir_.Sub("none.txt")}, "cannot open"},
      {{"run", "--model", model_, "--prompt", "hi", "--roster", "0"}, "roster.size must be at least 1"},
      {{"run", "--model", model_, "--prompt", "hi", "--roster", "2", "--roster-temperature", "-1"},
       "roster.temperature"},
      {{"frobnicate"}, "subcommand"},
  };
  for (const Case& c : cases) {
    CommandResult result = Expertd(c.args);
    EXPECT_NE(result.exit_code, 0) << c.args[0];
    EXPECT_THAT(result.err, HasSubstr(c.message)) << c.args[0];
  }
}

}  // namespace
}  // namespace expertd::integration
