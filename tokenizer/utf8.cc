#include "tokenizer/utf8.h"

namespace expertd::tokenizer {
namespace {

// Valid range of the second byte for a given lead byte (Unicode Table 3-7);
// the narrowed ranges exclude overlong forms, surrogates and > U+10FFFF.
struct SecondByteRange {
  uint8_t low;
  uint8_t high;
};

// Number of bytes announced by a lead byte, 0 for bytes that cannot lead.
size_t AnnouncedLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

SecondByteRange SecondRange(uint8_t lead) {
  switch (lead) {
    case 0xE0:
      return {0xA0, 0xBF};
    case 0xED:
      return {0x80, 0x9F};
    case 0xF0:
      return {0x90, 0xBF};
    case 0xF4:
      return {0x80, 0x8F};
    default:
      return {0x80, 0xBF};
  }
}

// How many bytes starting at text[pos] form a valid prefix of a character
// (at most the announced length). 0 when text[pos] cannot lead.
size_t ValidPrefixLength(std::string_view text, size_t pos, size_t* announced) {
  const auto lead = static_cast<uint8_t>(text[pos]);
  *announced = AnnouncedLength(lead);
  if (*announced == 0) return 0;
  size_t len = 1;
  while (len < *announced && pos + len < text.size()) {
    const auto byte = static_cast<uint8_t>(text[pos + len]);
    const SecondByteRange range = len == 1 ? SecondRange(lead) : SecondByteRange{0x80, 0xBF};
    if (byte < range.low || byte > range.high) break;
    ++len;
  }
  return len;
}

}  // namespace

size_t ValidUtf8CharLength(std::string_view text, size_t pos) {
  if (pos >= text.size()) return 0;
  size_t announced = 0;
  const size_t len = ValidPrefixLength(text, pos, &announced);
  return (announced != 0 && len == announced) ? len : 0;
}

uint32_t DecodeUtf8Char(std::string_view text, size_t pos, size_t len) {
  const auto byte = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(text[pos + i])); };
  switch (len) {
    case 1:
      return byte(0);
    case 2:
      return ((byte(0) & 0x1F) << 6) | (byte(1) & 0x3F);
    case 3:
      return ((byte(0) & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
    default:
      return ((byte(0) & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) | (byte(3) & 0x3F);
  }
}

void AppendUtf8(uint32_t code_point, std::string* out) {
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

bool IsIncompleteUtf8Prefix(std::string_view text) {
  if (text.empty()) return false;
  size_t announced = 0;
  const size_t len = ValidPrefixLength(text, 0, &announced);
  return announced > 1 && len == text.size() && len < announced;
}

std::string ReplaceInvalidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t announced = 0;
    const size_t len = ValidPrefixLength(text, pos, &announced);
    if (announced != 0 && len == announced) {
      out.append(text.substr(pos, len));
      pos += len;
    } else {
      out.append(kUtf8Replacement);
      pos += len == 0 ? 1 : len;
    }
  }
  return out;
}

}  // namespace expertd::tokenizer
