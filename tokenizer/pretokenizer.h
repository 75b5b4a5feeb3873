#ifndef EXPERTD_TOKENIZER_PRETOKENIZER_H_
#define EXPERTD_TOKENIZER_PRETOKENIZER_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer_json_util.h"
#include "tokenizer/unicode_regex.h"

namespace expertd::tokenizer::internal {

// What a Split keeps of the delimiter matches (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// tokenizer.json "pre_tokenizer": cuts normalized text into the words BPE
// runs on. Supported: null (one word), Sequence, ByteLevel (add_prefix_space,
// use_regex with the GPT-2 regex), Split (String/Regex pattern, behaviors
// Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous, invert),
// Digits, Metaspace (replacement, prepend_scheme/add_prefix_space, split),
// Whitespace, WhitespaceSplit, Punctuation. Others are load errors.
class PreTokenizer {
 public:
  static absl::StatusOr<PreTokenizer> FromJson(const JsonRef& pre_tokenizer);

  // `at_input_start` tells whether `text` begins the encoded input, which
  // Metaspace's prepend_scheme "first" needs.
  std::vector<std::string> Apply(std::string_view text, bool at_input_start) const;

 private:
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  enum class PrependScheme { kAlways, kFirst, kNever };
  struct Piece {
    std::string text{};
    bool at_input_start;
  };
  struct Step {
    Kind kind{};
    std::optional<UnicodeRegex> regex{};  // kSplit; kByteLevel with use_regex
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;      // kByteLevel
    std::string replacement{};            // kMetaspace
    PrependScheme prepend_scheme = PrependScheme::kAlways;
    bool split = true;                  // kMetaspace
  };
  static absl::Status AddSteps(const JsonRef& pre_tokenizer, std::vector<Step>* steps);
  static void SplitPiece(const Piece& piece, const UnicodeRegex& regex, SplitBehavior behavior, bool invert,
                         std::vector<Piece>* out);
  static void SplitOnLiteral(const Piece& piece, std::string_view delimiter, SplitBehavior behavior,
                             std::vector<Piece>* out);

  std::vector<Step> steps_;
};

// The regex GPT-2's encoder.py splits words with (HF ByteLevel use_regex).
inline constexpr std::string_view kGpt2PreTokenizerRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// The regex Qwen2 and Qwen3 tokenizer.json files carry in their Split step.
inline constexpr std::string_view kQwen2PreTokenizerRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace expertd::tokenizer::internal

#endif  // EXPERTD_TOKENIZER_PRETOKENIZER_H_
