#ifndef EXPERTD_TOKENIZER_NORMALIZER_H_
#define EXPERTD_TOKENIZER_NORMALIZER_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer_json_util.h"
#include "tokenizer/unicode_regex.h"

namespace expertd::tokenizer::internal {

// tokenizer.json "normalizer": applied to each stretch of text between added
// tokens. Supported: null, Sequence, NFC, Prepend, Replace (String or Regex
// pattern), Strip. Others (NFD, NFKC, NFKD, Lowercase, BertNormalizer,
// Precompiled, ...) are load errors.
class Normalizer {
 public:
  static absl::StatusOr<Normalizer> FromJson(const JsonRef& normalizer);

  std::string Apply(std::string_view text) const;

 private:
  enum class Kind { kNfc, kPrepend, kReplace, kStrip };
  struct Step {
    Kind kind{};
    std::string text{};     // kPrepend: what to prepend; kReplace: literal pattern
    std::string content{};  // kReplace: replacement
    std::optional<UnicodeRegex> regex{};  // kReplace with a Regex pattern; kStrip
    bool strip_left = false;
    bool strip_right = false;
  };
  static absl::Status AddSteps(const JsonRef& normalizer, std::vector<Step>* steps);

  std::vector<Step> steps_;
};

// Parses a {"String": "..."} or {"Regex": "..."} pattern object (used by
// Replace normalizers/decoders and Split pre-tokenizers) into a regex;
// `literal_out`, when given, receives the String form.
absl::StatusOr<UnicodeRegex> ParsePattern(const JsonRef& owner, std::string* literal_out);

// A Replace step's parameters, which normalizers and decoders share: a
// String pattern is kept as `literal` (plain substring replacement, which
// also works on invalid UTF-8 around it) and leaves `regex` empty; a Regex
// pattern is compiled into `regex` and leaves `literal` empty.
struct ReplaceRule {
  std::string literal;
  std::string content;
  std::optional<UnicodeRegex> regex;
};
absl::StatusOr<ReplaceRule> ParseReplaceRule(const JsonRef& step);

// Replaces every match of `regex` (or of `literal` when regex is null) in text.
std::string ReplaceAll(std::string_view text, const UnicodeRegex* regex, std::string_view literal,
                       std::string_view content);

}  // namespace expertd::tokenizer::internal

#endif  // EXPERTD_TOKENIZER_NORMALIZER_H_
