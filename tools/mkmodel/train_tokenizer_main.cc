// train_tokenizer: learns a byte-level BPE vocabulary on a text file and
// writes tokenizer.json + tokenizer_config.json in the OLMoE convention that
// mkmodel uses (specials <|endoftext|> and <|padding|>; <|endoftext|> is both
// bos and eos; no bos added). With --encode it also turns a text file into
// token ids with the engine's own tokenizer, so a training script sees
// exactly the ids that expertd will feed the model.

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "tokenizer/tokenizer.h"
#include "tools/mkmodel/bpe_trainer.h"

namespace {

struct Flags {
  std::string corpus;
  int vocab = 2048;
  int64_t max_length = 4096;
  std::string out_dir;
  std::vector<std::string> encode;  // pairs: TEXT_FILE IDS_FILE
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// Ids as little-endian uint16: a 2k vocabulary fits, and the file is half
// the size of int32 (numpy reads it with dtype "<u2").
absl::Status EncodeFile(const expertd::tokenizer::Tokenizer& tokenizer, const std::string& text_path,
                        const std::string& ids_path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(text_path));
  const std::vector<int32_t> ids = tokenizer.Encode(text, /*add_special=*/false);
  std::string bytes;
  bytes.reserve(ids.size() * 2);
  for (int32_t id : ids) {
    if (id < 0 || id > std::numeric_limits<uint16_t>::max()) {
      return absl::OutOfRangeError(absl::StrCat("token id ", id, " does not fit in uint16"));
    }
    bytes.push_back(static_cast<char>(id & 0xFF));
    bytes.push_back(static_cast<char>(id >> 8));
  }
  RETURN_IF_ERROR(WriteFile(ids_path, bytes));
  std::printf("encoded %s: %zu bytes -> %zu tokens (%.2f bytes/token) in %s\n", text_path.c_str(), text.size(),
              ids.size(), static_cast<double>(text.size()) / ids.size(), ids_path.c_str());
  return absl::OkStatus();
}

absl::Status Main(const Flags& flags) {
  ASSIGN_OR_RETURN(std::string corpus, ReadFile(flags.corpus));
  expertd::tools::BpeTrainerOptions bpe;
  bpe.vocab_size = flags.vocab;
  bpe.special_tokens = {"<|endoftext|>", "<|padding|>"};
  ASSIGN_OR_RETURN(nlohmann::json tokenizer_json, expertd::tools::TrainByteLevelBpe(corpus, bpe));
  const std::string tokenizer_path = flags.out_dir + "/tokenizer.json";
  RETURN_IF_ERROR(WriteFile(tokenizer_path, tokenizer_json.dump(2) + "\n"));
  expertd::tools::TokenizerConfigOptions config;
  config.bos_token = "<|endoftext|>";
  config.eos_token = "<|endoftext|>";
  config.pad_token = "<|padding|>";
  config.model_max_length = flags.max_length;
  RETURN_IF_ERROR(WriteFile(flags.out_dir + "/tokenizer_config.json", expertd::tools::MakeTokenizerConfigJson(config)));
  std::printf("wrote %s (%zu merges, %zu added tokens)\n", tokenizer_path.c_str(),
              tokenizer_json["model"]["merges"].size(), tokenizer_json["added_tokens"].size());

  if (flags.encode.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(auto tokenizer, expertd::tokenizer::Tokenizer::FromFile(tokenizer_path));
  for (size_t i = 0; i + 1 < flags.encode.size(); i += 2) {
    RETURN_IF_ERROR(EncodeFile(*tokenizer, flags.encode[i], flags.encode[i + 1]));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  CLI::App app{"train_tokenizer: learn a byte-level BPE tokenizer (tokenizer.json) on a text file"};
  app.add_option("--corpus", flags.corpus, "UTF-8 training text")->required();
  app.add_option("--vocab", flags.vocab, "ids in all: 256 bytes + merges + 2 special tokens")->capture_default_str();
  app.add_option("--max-length", flags.max_length, "model_max_length in tokenizer_config.json")->capture_default_str();
  app.add_option("--out", flags.out_dir, "existing directory for tokenizer.json and tokenizer_config.json")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--encode", flags.encode, "TEXT_FILE IDS_FILE: also write TEXT_FILE's ids as uint16 LE")
      ->expected(2)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  CLI11_PARSE(app, argc, argv);
  if (absl::Status status = Main(flags); !status.ok()) {
    std::fprintf(stderr, "train_tokenizer: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
