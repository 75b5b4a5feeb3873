#ifndef EXPERTD_TOKENIZER_UNICODE_NFC_H_
#define EXPERTD_TOKENIZER_UNICODE_NFC_H_

#include <string>
#include <string_view>

namespace expertd::tokenizer {

// Unicode Normalization Form C (UAX #15): canonical decomposition, canonical
// ordering, canonical composition. Qwen2/Qwen3 and GPT-NeoX tokenizers apply
// it before pre-tokenization. Tables are generated from Unicode 14.0 (see
// unicode_nfc_gen.py). Invalid UTF-8 bytes pass through unchanged and act as
// starters, so byte-level tokenizers still round-trip arbitrary bytes.
std::string NormalizeNfc(std::string_view text);

}  // namespace expertd::tokenizer

#endif  // EXPERTD_TOKENIZER_UNICODE_NFC_H_
