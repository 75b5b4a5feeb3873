#ifndef EXPERTD_TOKENIZER_TOKEN_DECODER_H_
#define EXPERTD_TOKENIZER_TOKEN_DECODER_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/tokenizer_json_util.h"
#include "tokenizer/unicode_regex.h"

namespace expertd::tokenizer::internal {

// tokenizer.json "decoder": turns token strings back into text. Supported:
// null (tokens joined by " ", as HF does), Sequence, ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace. Others are load errors.
//
// Unlike HF, invalid UTF-8 from ByteLevel/ByteFallback is kept as raw bytes
// (HF substitutes U+FFFD); the stream decoder does the substitution.
class TokenDecoder {
 public:
  static absl::StatusOr<TokenDecoder> FromJson(const JsonRef& decoder);

  // `at_text_start` / `at_text_end` say whether `tokens` begin / end the
  // decoded text. A stream decodes token by token, and only the first piece
  // of a stream may lose its leading space (Strip start, Metaspace), only a
  // last piece its trailing characters (Strip stop).
  std::string Decode(std::vector<std::string> tokens, bool at_text_start, bool at_text_end) const;

 private:
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  struct Step {
    Kind kind{};
    std::string text{};     // kReplace: literal pattern; kStrip: content; kMetaspace: replacement
    std::string content{};  // kReplace: replacement
    std::optional<UnicodeRegex> regex{};  // kReplace with a Regex pattern
    int strip_start = 0;
    int strip_stop = 0;
    bool strip_leading_space = true;  // kMetaspace: prepend_scheme != never
  };
  static absl::Status AddSteps(const JsonRef& decoder, std::vector<Step>* steps);

  bool has_decoder_ = false;
  std::vector<Step> steps_;
};

}  // namespace expertd::tokenizer::internal

#endif  // EXPERTD_TOKENIZER_TOKEN_DECODER_H_
