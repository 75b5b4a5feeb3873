#ifndef EXPERTD_TOKENIZER_UTF8_H_
#define EXPERTD_TOKENIZER_UTF8_H_

// UTF-8 helpers for the tokenizer. Text reaching the tokenizer may hold
// invalid UTF-8 (byte-level models must round-trip arbitrary bytes), so every
// function here treats an invalid byte as a one-byte unit instead of failing.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace expertd::tokenizer {

// U+FFFD REPLACEMENT CHARACTER, what Flush() substitutes for invalid bytes.
inline constexpr std::string_view kUtf8Replacement = "\xEF\xBF\xBD";

// Length in bytes of the well-formed UTF-8 character starting at text[pos]
// (1..4), or 0 when the bytes there are not a complete, well-formed
// character (stray continuation byte, overlong form, surrogate, truncated).
size_t ValidUtf8CharLength(std::string_view text, size_t pos);

// Length of the unit starting at text[pos]: the character's length when it
// is well-formed, 1 otherwise. Never 0 while pos < text.size().
inline size_t Utf8UnitLength(std::string_view text, size_t pos) {
  const size_t len = ValidUtf8CharLength(text, pos);
  return len == 0 ? 1 : len;
}

// Decodes the well-formed character of `len` bytes at text[pos].
uint32_t DecodeUtf8Char(std::string_view text, size_t pos, size_t len);

void AppendUtf8(uint32_t code_point, std::string* out);

// True when `text` could become well-formed UTF-8 by appending more bytes:
// a lead byte followed by fewer continuation bytes than it announces (and no
// byte that already rules out a valid character). Used by the stream decoder
// to hold the tail of a character split across tokens.
bool IsIncompleteUtf8Prefix(std::string_view text);

// Copies `text`, replacing each maximal ill-formed subsequence with U+FFFD
// (the Unicode "maximal subpart" practice, as WHATWG decoders do).
std::string ReplaceInvalidUtf8(std::string_view text);

}  // namespace expertd::tokenizer

#endif  // EXPERTD_TOKENIZER_UTF8_H_
