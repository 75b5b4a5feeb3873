#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace expertd::tokenizer {
namespace {

constexpr bool IsPrintableByte(int b) {
  return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

// Code point for each byte, built at compile time so the table is immutable.
constexpr std::array<uint16_t, 256> kByteToCodePoint = [] {
  std::array<uint16_t, 256> table{};
  int next_remapped = 0;
  for (int b = 0; b < 256; ++b) {
    table[b] = static_cast<uint16_t>(IsPrintableByte(b) ? b : 256 + next_remapped++);
  }
  return table;
}();

// Inverse over code points 0..323 (the image is within [33, 256 + 68)).
constexpr int kCodePointLimit = 256 + 68;
constexpr std::array<int16_t, kCodePointLimit> kCodePointToByte = [] {
  std::array<int16_t, kCodePointLimit> table{};
  for (auto& entry : table) entry = -1;
  for (int b = 0; b < 256; ++b) table[kByteToCodePoint[b]] = static_cast<int16_t>(b);
  return table;
}();

constexpr std::array<uint8_t, 256> kByteLevelOrder = [] {
  std::array<uint8_t, 256> order{};
  int i = 0;
  for (int b = 0; b < 256; ++b) {
    if (IsPrintableByte(b)) order[i++] = static_cast<uint8_t>(b);
  }
  for (int b = 0; b < 256; ++b) {
    if (!IsPrintableByte(b)) order[i++] = static_cast<uint8_t>(b);
  }
  return order;
}();

}  // namespace

uint32_t ByteToCodePoint(uint8_t b) { return kByteToCodePoint[b]; }

std::optional<uint8_t> CodePointToByte(uint32_t code_point) {
  if (code_point >= kCodePointLimit || kCodePointToByte[code_point] < 0) return std::nullopt;
  return static_cast<uint8_t>(kCodePointToByte[code_point]);
}

const std::array<uint8_t, 256>& ByteLevelOrder() { return kByteLevelOrder; }

void AppendByteLevel(std::string_view bytes, std::string* out) {
  for (char c : bytes) AppendUtf8(kByteToCodePoint[static_cast<uint8_t>(c)], out);
}

bool AppendBytesFromByteLevel(std::string_view token, std::string* out) {
  const size_t original_size = out->size();
  size_t pos = 0;
  while (pos < token.size()) {
    const size_t len = ValidUtf8CharLength(token, pos);
    std::optional<uint8_t> byte;
    if (len != 0) byte = CodePointToByte(DecodeUtf8Char(token, pos, len));
    if (!byte.has_value()) {
      out->resize(original_size);
      return false;
    }
    out->push_back(static_cast<char>(*byte));
    pos += len;
  }
  return true;
}

}  // namespace expertd::tokenizer
