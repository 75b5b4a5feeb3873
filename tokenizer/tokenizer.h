#ifndef EXPERTD_TOKENIZER_TOKENIZER_H_
#define EXPERTD_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace expertd::tokenizer {

// A tokenizer loaded from a Hugging Face tokenizer.json: the BPE subset that
// OLMoE (GPT-NeoX byte-level BPE), Qwen2/Qwen3 (byte-level BPE with Qwen's
// pre-tokenizer regex) and Mixtral (SentencePiece-style BPE with byte
// fallback) use, plus added/special tokens.
class Tokenizer {
 public:
  // Reads and validates tokenizer.json (and, when present beside it,
  // tokenizer_config.json for bos/eos and the chat template). Errors name the
  // file and the offending key.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& tokenizer_json_path);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                             std::string_view tokenizer_config_json,
                                                             std::string_view source_name);
  ~Tokenizer();

  // Text -> ids. Added tokens that appear literally in the text are matched
  // first (longest first); the text between them goes through the
  // normalizer, pre-tokenizer and BPE. When add_special is true, the
  // post-processor's leading special token (a BOS) is prepended if it has
  // one; tokenizer_config's add_bos_token changes nothing, as in
  // transformers 5.
  std::vector<int32_t> Encode(std::string_view text, bool add_special = true) const;

  // Ids -> UTF-8 bytes. Special tokens are dropped when skip_special is true.
  // Invalid UTF-8 produced by byte-level tokens is returned as it is (raw
  // bytes); callers that print text use StreamDecoder.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special = true) const;

  // The token's string as it appears in the vocabulary, or "" when out of range.
  std::string_view TokenText(int32_t id) const;
  std::optional<int32_t> TokenId(std::string_view token_text) const;

  // Size of the id space: max id + 1 over vocab and added tokens.
  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  // The Jinja chat template from tokenizer_config.json ("chat_template", or
  // the "default" entry of a list of named templates) or chat_template.jinja
  // beside it; "" when the model has none. Not run here: ChatTemplate
  // (tokenizer/chat_template.h) recognises its family.
  const std::string& chat_template() const;
  bool IsSpecial(int32_t id) const;

  struct Impl;

 private:
  friend class StreamDecoder;

  explicit Tokenizer(std::unique_ptr<Impl> impl);
  // The text of one token for a stream; nullopt when the token is skipped
  // (out of range, or special with skip_special). The decoder's start-of-text
  // rules (SentencePiece's leading-space strip) apply only at_stream_start.
  std::optional<std::string> DecodeStreamPiece(int32_t id, bool skip_special, bool at_stream_start) const;

  std::unique_ptr<Impl> impl_;
};

// Incremental detokenizer for streaming output: feeds one id at a time and
// returns only complete UTF-8 characters; bytes of a character split across
// tokens are held until the character completes. Flush() returns what is
// left, with invalid sequences replaced by U+FFFD.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = true);
  std::string Next(int32_t id);
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  bool at_start_ = true;
  std::string pending_;
};

}  // namespace expertd::tokenizer

#endif  // EXPERTD_TOKENIZER_TOKENIZER_H_
