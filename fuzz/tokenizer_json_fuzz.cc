// Loading a Hugging Face tokenizer (tokenizer/tokenizer.h, Tokenizer::FromJson):
// tokenizer.json's model (BPE vocab and merges), normalizer, pre-tokenizer,
// decoder and added tokens, and tokenizer_config.json's bos/eos, bos flag
// and chat template. Input: tokenizer.json, then optionally a NUL byte and
// tokenizer_config.json (JSON text never holds a raw NUL).
//
// Asserts beyond "no crash": a loaded tokenizer encodes a fixed text (ASCII,
// accents, CJK, an emoji, a special-token literal, invalid UTF-8) to ids in
// [0, vocab_size), with and without specials; decodes them; and its stream
// decoder, fed those ids one at a time and flushed, yields well-formed
// UTF-8, as StreamDecoder promises. bos/eos, when set, are in range.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

constexpr std::string_view kText =
    "Hello, world! It's 2024:  tabs\tand\nnewlines. Caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E "
    "\xF0\x9F\x98\x80 <|endoftext|> <s> \xFF\xC3 end";

bool IsWellFormedUtf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const size_t n = expertd::tokenizer::ValidUtf8CharLength(text, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view tokenizer_json = input.substr(0, nul);
  const std::string_view config_json = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);

  auto loaded = expertd::tokenizer::Tokenizer::FromJson(tokenizer_json, config_json, "fuzz/tokenizer.json");
  if (!loaded.ok()) return 0;
  const expertd::tokenizer::Tokenizer& tokenizer = **loaded;
  const int32_t vocab_size = tokenizer.vocab_size();
  FUZZ_CHECK(vocab_size > 0);
  if (auto bos = tokenizer.bos_id()) FUZZ_CHECK(*bos >= 0 && *bos < vocab_size);
  if (auto eos = tokenizer.eos_id()) FUZZ_CHECK(*eos >= 0 && *eos < vocab_size);

  for (bool add_special : {false, true}) {
    const std::vector<int32_t> ids = tokenizer.Encode(kText, add_special);
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < vocab_size);
    tokenizer.Decode(ids, /*skip_special=*/false);
    tokenizer.Decode(ids, /*skip_special=*/true);
    expertd::tokenizer::StreamDecoder stream(tokenizer);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.Next(id);
    streamed += stream.Flush();
    FUZZ_CHECK(IsWellFormedUtf8(streamed));
  }
  return 0;
}
