#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/unicode_regex.h"

#include <pcre2.h>

#include <string>

#include "tokenizer/tokenizer_json_util.h"


namespace expertd::tokenizer {
namespace {

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

void UnicodeRegex::CodeDeleter::operator()(pcre2_real_code_8* code) const { pcre2_code_free(code); }

UnicodeRegex::~UnicodeRegex() = default;

absl::StatusOr<UnicodeRegex> UnicodeRegex::Compile(std::string_view pattern, bool literal) {
  uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  // PCRE2_LITERAL allows only a few companions; UCP is not one of them and a
  // literal has no classes for it to affect anyway.
  options |= literal ? PCRE2_LITERAL : PCRE2_UCP;
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* raw = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                                  &error_code, &error_offset, nullptr);
  if (raw == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InvalidArgumentError(tokenizer::internal::Concat("regex /", pattern, "/ does not compile at offset ",
                                                   error_offset, ": ", reinterpret_cast<const char*>(message)));
  }
  std::unique_ptr<pcre2_real_code_8, CodeDeleter> code(raw);
  // The JIT is an optimisation only: when it is unavailable (some platforms,
  // SELinux policies), pcre2_match falls back to the interpreter.
  pcre2_jit_compile(code.get(), PCRE2_JIT_COMPLETE);
  return UnicodeRegex(std::move(code));
}

std::vector<std::pair<size_t, size_t>> UnicodeRegex::FindAll(std::string_view subject) const {
  std::vector<std::pair<size_t, size_t>> matches;
  // Match data is per call so that one compiled pattern can be shared by
  // concurrent Encode() calls.
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data(
      pcre2_match_data_create_from_pattern(code_.get(), nullptr));
  if (match_data == nullptr) return matches;
  const auto* data = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t start = 0;
  while (start < subject.size()) {
    int rc = pcre2_match(code_.get(), data, subject.size(), start, 0, match_data.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The interpreter keeps its backtracking state on the heap, so it copes
      // with subjects (long whitespace runs) that overflow the JIT's stack.
      rc = pcre2_match(code_.get(), data, subject.size(), start, PCRE2_NO_JIT, match_data.get(), nullptr);
    }
    if (rc < 0) break;  // No further match (or a resource limit): the rest stays a gap.
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      start = end;
    } else {
      // An empty match: step over one byte (or one character) so the scan
      // advances; empty pieces carry no text for the tokenizer anyway.
      start = begin + 1;
      while (start < subject.size() && (static_cast<uint8_t>(subject[start]) & 0xC0) == 0x80) ++start;
    }
  }
  return matches;
}

}  // namespace expertd::tokenizer
