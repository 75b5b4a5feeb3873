#include "tokenizer/unicode_nfc.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tokenizer/utf8.h"

namespace expertd::tokenizer {
namespace {

struct CombiningClassRange {
  uint32_t first;
  uint32_t last;
  uint8_t combining_class;
};
struct Decomposition {
  uint32_t code_point;
  uint32_t first;
  uint32_t second;  // 0 for singleton decompositions
};
struct Composition {
  uint32_t first;
  uint32_t second;
  uint32_t composite;
};

#include "tokenizer/unicode_nfc_data.inc"

// Hangul syllables decompose and compose arithmetically (Unicode 3.12).
constexpr uint32_t kHangulSBase = 0xAC00;
constexpr uint32_t kHangulLBase = 0x1100;
constexpr uint32_t kHangulVBase = 0x1161;
constexpr uint32_t kHangulTBase = 0x11A7;
constexpr uint32_t kHangulLCount = 19;
constexpr uint32_t kHangulVCount = 21;
constexpr uint32_t kHangulTCount = 28;
constexpr uint32_t kHangulNCount = kHangulVCount * kHangulTCount;
constexpr uint32_t kHangulSCount = kHangulLCount * kHangulNCount;

// Invalid input bytes travel through the algorithm as these out-of-range
// values: class 0, no decomposition, no composition.
constexpr uint32_t kInvalidByteTag = 0x80000000u;

// Below U+0300 every character is NFC-stable with class 0, so text made only
// of such characters is returned as is.
constexpr uint32_t kFirstUnstable = 0x300;

int CombiningClass(uint32_t cp) {
  const auto* end = std::end(kCombiningClassRanges);
  const auto* it = std::upper_bound(std::begin(kCombiningClassRanges), end, cp,
                                    [](uint32_t value, const CombiningClassRange& r) { return value < r.first; });
  if (it == std::begin(kCombiningClassRanges)) return 0;
  --it;
  return cp <= it->last ? it->combining_class : 0;
}

void Decompose(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp >= kHangulSBase && cp < kHangulSBase + kHangulSCount) {
    const uint32_t s_index = cp - kHangulSBase;
    out->push_back(kHangulLBase + s_index / kHangulNCount);
    out->push_back(kHangulVBase + (s_index % kHangulNCount) / kHangulTCount);
    if (s_index % kHangulTCount != 0) out->push_back(kHangulTBase + s_index % kHangulTCount);
    return;
  }
  const auto* end = std::end(kDecompositions);
  const auto* it = std::lower_bound(std::begin(kDecompositions), end, cp,
                                    [](const Decomposition& d, uint32_t value) { return d.code_point < value; });
  if (it == end || it->code_point != cp) {
    out->push_back(cp);
    return;
  }
  Decompose(it->first, out);
  if (it->second != 0) Decompose(it->second, out);
}

// The primary composite of a pair, or 0 when the pair does not compose.
uint32_t Compose(uint32_t first, uint32_t second) {
  if (first >= kHangulLBase && first < kHangulLBase + kHangulLCount && second >= kHangulVBase &&
      second < kHangulVBase + kHangulVCount) {
    return kHangulSBase + ((first - kHangulLBase) * kHangulVCount + (second - kHangulVBase)) * kHangulTCount;
  }
  if (first >= kHangulSBase && first < kHangulSBase + kHangulSCount && (first - kHangulSBase) % kHangulTCount == 0 &&
      second > kHangulTBase && second < kHangulTBase + kHangulTCount) {
    return first + (second - kHangulTBase);
  }
  const auto* end = std::end(kCompositions);
  const auto* it = std::lower_bound(std::begin(kCompositions), end, std::pair(first, second),
                                    [](const Composition& c, const std::pair<uint32_t, uint32_t>& value) {
                                      return std::pair(c.first, c.second) < value;
                                    });
  return (it != end && it->first == first && it->second == second) ? it->composite : 0;
}

}  // namespace

std::string NormalizeNfc(std::string_view text) {
  bool stable = true;
  for (size_t pos = 0; pos < text.size() && stable;) {
    const size_t len = ValidUtf8CharLength(text, pos);
    if (len > 1 && DecodeUtf8Char(text, pos, len) >= kFirstUnstable) stable = false;
    pos += len == 0 ? 1 : len;
  }
  if (stable) return std::string(text);

  std::vector<uint32_t> chars;
  chars.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = ValidUtf8CharLength(text, pos);
    if (len == 0) {
      chars.push_back(kInvalidByteTag | static_cast<uint8_t>(text[pos]));
      ++pos;
    } else {
      Decompose(DecodeUtf8Char(text, pos, len), &chars);
      pos += len;
    }
  }
  const auto combining_class = [](uint32_t c) { return (c & kInvalidByteTag) ? 0 : CombiningClass(c); };

  // Canonical ordering: a stable sort of each run of non-starters by class.
  for (size_t i = 1; i < chars.size(); ++i) {
    const int cc = combining_class(chars[i]);
    if (cc == 0) continue;
    for (size_t j = i; j > 0; --j) {
      const int prev_cc = combining_class(chars[j - 1]);
      if (prev_cc <= cc) break;
      std::swap(chars[j - 1], chars[j]);
    }
  }

  // Canonical composition (the UAX #15 sample algorithm): a character joins
  // the last starter when no character between them blocks it.
  if (!chars.empty()) {
    size_t starter_pos = 0;
    uint32_t starter = chars[0];
    // A leading non-starter has no starter to join, so it blocks everything.
    int last_class = combining_class(starter) == 0 ? 0 : 256;
    size_t write = 1;
    for (size_t read = 1; read < chars.size(); ++read) {
      const uint32_t c = chars[read];
      const int cc = combining_class(c);
      const uint32_t composite =
          ((starter | c) & kInvalidByteTag) ? 0 : Compose(starter, c);
      if (composite != 0 && (last_class < cc || last_class == 0)) {
        chars[starter_pos] = composite;
        starter = composite;
        continue;
      }
      if (cc == 0) {
        starter_pos = write;
        starter = c;
      }
      last_class = cc;
      chars[write++] = c;
    }
    chars.resize(write);
  }

  std::string out;
  out.reserve(text.size());
  for (uint32_t c : chars) {
    if (c & kInvalidByteTag) {
      out.push_back(static_cast<char>(c & 0xFF));
    } else {
      AppendUtf8(c, &out);
    }
  }
  return out;
}

}  // namespace expertd::tokenizer
