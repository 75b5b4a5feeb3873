#ifndef EXPERTD_MODEL_GGUF_TOKENIZER_H_
#define EXPERTD_MODEL_GGUF_TOKENIZER_H_

// The tokenizer a GGUF file's vocabulary describes, built as the same
// Tokenizer a tokenizer.json gives (tokenizer/tokenizer.h): the GGUF keys are
// rewritten as the tokenizer.json and tokenizer_config.json they stand for,
// so every rule of encoding and decoding lives once, in tokenizer/.
//
// What is read, in llama.cpp's naming:
//   tokenizer.ggml.model        "gpt2" (byte-level BPE) or "llama"
//                               (SentencePiece BPE: Llama 2, Mistral, Mixtral)
//   tokenizer.ggml.pre          gpt2 only, the pre-tokenizer by name:
//                               "gpt-2" and "olmo" (GPT-2's regex), "qwen2"
//                               and "deepseek-r1-qwen" (Qwen's), "llama-bpe",
//                               "llama3" and "llama-v3" (Llama 3's), "gpt-4o"
//                               (gpt-oss's o200k regex), "deepseek-llm"
//                               (DeepSeek-LLM's and DeepSeek-V2's sequence of
//                               six splits)
//   tokenizer.ggml.tokens       the vocabulary by id
//   tokenizer.ggml.token_type   per token: normal and byte tokens are BPE
//                               vocabulary, control tokens (and, for llama,
//                               unknown ones) special added tokens,
//                               user-defined ones added tokens, and unused
//                               ones (padding) are left out of gpt2
//                               vocabularies
//   tokenizer.ggml.merges       gpt2: "left right" in rank order
//   tokenizer.ggml.scores       llama: per piece; the merges are derived from
//                               them (highest-scoring merged piece first, as
//                               SentencePiece merges)
//   tokenizer.ggml.bos_token_id, .eos_token_id, .unknown_token_id,
//   .add_bos_token, .add_space_prefix (llama), with llama.cpp's defaults
//   tokenizer.chat_template
// GGUF carries no normalizer and no decoder: byte-level BPE has neither
// beyond the byte mapping, which the ByteLevel steps supply; SentencePiece
// vocabularies get the "▁" normalizer and decoder of Llama's tokenizer.json.

#include <memory>

#include "absl/status/statusor.h"
#include "formats/gguf_file.h"
#include "tokenizer/tokenizer.h"

namespace expertd::model {

// Unimplemented for a vocabulary type, pre-tokenizer or flag not listed
// above (naming the key, its value and what is supported); InvalidArgument, naming the key or token id, for a
// vocabulary that is inconsistent (lengths that differ, duplicate tokens,
// special ids out of range, tokens that are not UTF-8).
absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> TokenizerFromGguf(const formats::GgufFile& file);

}  // namespace expertd::model

#endif  // EXPERTD_MODEL_GGUF_TOKENIZER_H_
