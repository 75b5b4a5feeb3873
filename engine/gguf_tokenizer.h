#ifndef EXPERTD_ENGINE_GGUF_TOKENIZER_H_
#define EXPERTD_ENGINE_GGUF_TOKENIZER_H_

// The tokenizer a GGUF file's vocabulary describes, built as the same
// Tokenizer a tokenizer.json gives (tokenizer/tokenizer.h): the GGUF keys are
// rewritten as the tokenizer.json and tokenizer_config.json they stand for,
// so every rule of encoding and decoding lives once, in tokenizer/.
//
// What is read, in llama.cpp's naming:
//   tokenizer.ggml.model        "gpt2" (byte-level BPE) only, for now
//   tokenizer.ggml.pre          the pre-tokenizer by name: "gpt-2" and "olmo"
//                               (GPT-2's regex), "qwen2" and
//                               "deepseek-r1-qwen" (Qwen's), "llama-bpe",
//                               "llama3" and "llama-v3" (Llama 3's)
//   tokenizer.ggml.tokens       the vocabulary by id
//   tokenizer.ggml.token_type   per token: normal and byte tokens are BPE
//                               vocabulary, control tokens are special added
//                               tokens, user-defined ones added tokens, and
//                               unused ones (padding) are left out
//   tokenizer.ggml.merges       "left right" in rank order
//   tokenizer.ggml.bos_token_id, .eos_token_id, .add_bos_token
//   tokenizer.chat_template
// GGUF carries no normalizer and no decoder: byte-level BPE has neither
// beyond the byte mapping, which the ByteLevel steps supply.

#include <memory>

#include "absl/status/statusor.h"
#include "formats/gguf_file.h"
#include "tokenizer/tokenizer.h"

namespace expertd::engine {

// Unimplemented for a vocabulary type or pre-tokenizer not listed above
// (naming it); InvalidArgument, naming the key or token id, for a
// vocabulary that is inconsistent (lengths that differ, duplicate tokens,
// special ids out of range, tokens that are not UTF-8).
absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> TokenizerFromGguf(const formats::GgufFile& file);

}  // namespace expertd::engine

#endif  // EXPERTD_ENGINE_GGUF_TOKENIZER_H_
