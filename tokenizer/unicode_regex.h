#ifndef EXPERTD_TOKENIZER_UNICODE_REGEX_H_
#define EXPERTD_TOKENIZER_UNICODE_REGEX_H_

// A compiled PCRE2 pattern with Unicode semantics (UTF + UCP, so \s, \p{L}
// and (?i) follow Unicode as HF tokenizers' Oniguruma regexes do) and the
// JIT. The pre-tokenizer regexes need lookahead (`\s+(?!\S)`), which is why
// this is PCRE2 and not std::regex or RE2.
//
// Unicode version: the character properties (\p{L}, \p{N}, \s) are PCRE2's
// own tables, and Debian 12's PCRE2 10.42 has Unicode 14. Hugging Face's
// tokenizers (Rust's regex/onig crates) know Unicode 15-16, so a character
// assigned after Unicode 14 (e.g. U+1FAE8-U+1FAF8, the newest emoji, or
// Kawi letters U+11F00-U+11F5F) is unassigned here: a pre-tokenizer that
// splits on letters splits such text differently, and the token ids differ
// from HF's there (only there: the conformance runs against HF's tokenizers
// matched on everything else). Debian offers no newer PCRE2; a PCRE2 built
// against newer Unicode tables would close it without code changes.

#include <cstddef>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

struct pcre2_real_code_8;

namespace expertd::tokenizer {

class UnicodeRegex {
 public:
  // Compiles `pattern`; when `literal` is true the pattern is matched as a
  // plain string. Errors carry PCRE2's message and the offset.
  static absl::StatusOr<UnicodeRegex> Compile(std::string_view pattern, bool literal = false);

  UnicodeRegex(UnicodeRegex&&) noexcept = default;
  UnicodeRegex& operator=(UnicodeRegex&&) noexcept = default;
  ~UnicodeRegex();

  // Byte ranges [begin, end) of the successive non-overlapping, non-empty
  // matches in `subject`. The subject may hold invalid UTF-8: matches never
  // cover an invalid byte (PCRE2_MATCH_INVALID_UTF), so callers that keep
  // the gaps between matches still see every byte.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view subject) const;

 private:
  struct CodeDeleter {
    void operator()(pcre2_real_code_8* code) const;
  };
  explicit UnicodeRegex(std::unique_ptr<pcre2_real_code_8, CodeDeleter> code) : code_(std::move(code)) {}

  std::unique_ptr<pcre2_real_code_8, CodeDeleter> code_;
};

}  // namespace expertd::tokenizer

#endif  // EXPERTD_TOKENIZER_UNICODE_REGEX_H_
