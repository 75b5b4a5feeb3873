#ifndef EXPERTD_TOKENIZER_BYTE_LEVEL_H_
#define EXPERTD_TOKENIZER_BYTE_LEVEL_H_

// GPT-2's byte-to-unicode mapping (`bytes_to_unicode` in openai/gpt-2
// encoder.py), which byte-level BPE vocabularies are written in: every byte
// becomes one printable code point so that BPE never sees whitespace or
// control bytes. Printable Latin-1 bytes map to themselves; the other 68
// bytes map to U+0100.. in byte order (space -> U+0120 'Ġ', '\n' -> 'Ċ').

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace expertd::tokenizer {

// The code point byte `b` is written as.
uint32_t ByteToCodePoint(uint8_t b);

// The byte a code point stands for, or nullopt for code points outside the
// mapping's image.
std::optional<uint8_t> CodePointToByte(uint32_t code_point);

// The 256 bytes in GPT-2 vocabulary order: printable bytes first (33..126,
// 161..172, 174..255), then the remapped ones. GPT-2 gives token id i to
// ByteLevelOrder()[i].
const std::array<uint8_t, 256>& ByteLevelOrder();

// Appends the byte-level spelling of `bytes` (UTF-8 of the mapped code points).
void AppendByteLevel(std::string_view bytes, std::string* out);

// Appends the bytes that byte-level token text stands for. Returns false (and
// appends nothing) when some character of `token` is outside the mapping, in
// which case the caller uses the token's own UTF-8 bytes, as HF does.
bool AppendBytesFromByteLevel(std::string_view token, std::string* out);

}  // namespace expertd::tokenizer

#endif  // EXPERTD_TOKENIZER_BYTE_LEVEL_H_
