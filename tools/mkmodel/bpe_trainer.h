#ifndef EXPERTD_TOOLS_MKMODEL_BPE_TRAINER_H_
#define EXPERTD_TOOLS_MKMODEL_BPE_TRAINER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace expertd::tools {

struct BpeTrainerOptions {
  // Total id space: 256 byte tokens + learned merges + special tokens.
  int vocab_size = 1024;
  // Added as special added_tokens after the learned vocabulary, in order,
  // e.g. "<|endoftext|>", "<|padding|>".
  std::vector<std::string> special_tokens;
  // Which pre-tokenizer the tokenizer.json carries (and training uses):
  // kGpt2 is ByteLevel with the GPT-2 regex (GPT-2, GPT-NeoX, OLMoE);
  // kQwen2 is Sequence[Split(Qwen regex, Isolated), ByteLevel(use_regex
  // false)] as Qwen2/Qwen3 ship it.
  enum class Style { kGpt2, kQwen2 };
  Style style = Style::kGpt2;
};

// Learns byte-level BPE merges on `corpus` and returns a complete Hugging
// Face tokenizer.json document: ids 0..255 are the byte tokens in GPT-2
// order, then one token per merge (most frequent adjacent pair over the
// pre-tokenized words first; ties go to the pair of smaller token ids),
// until vocab_size minus the special tokens is reached or no pair occurs
// twice; then the special tokens. The decoder is ByteLevel; there is no
// normalizer (so any byte string round-trips). Deterministic for equal input.
absl::StatusOr<nlohmann::json> TrainByteLevelBpe(std::string_view corpus, const BpeTrainerOptions& options);

// A few KB of English prose (written for this project, public domain) with
// punctuation, contractions, digits and line breaks, so that a small
// vocabulary learns recognisable merges.
std::string_view DefaultTrainingCorpus();

struct TokenizerConfigOptions {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  bool add_bos_token = false;
  int64_t model_max_length = 4096;
};

// tokenizer_config.json text (as transformers writes it: bos/eos/pad tokens,
// add_bos_token, add_eos_token false, model_max_length).
std::string MakeTokenizerConfigJson(const TokenizerConfigOptions& options);

}  // namespace expertd::tools

#endif  // EXPERTD_TOOLS_MKMODEL_BPE_TRAINER_H_
