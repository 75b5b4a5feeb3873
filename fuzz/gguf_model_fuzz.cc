// A GGUF file's metadata as a model: formats::GgufFile::Open, then
// ModelConfigFromGguf (engine/gguf_model_config.h) and TokenizerFromGguf
// (engine/gguf_tokenizer.h), the two readers of hyperparameters and
// vocabulary that trust nothing the file says. The input is the whole file,
// written to a memfd and opened through /proc.
//
// Asserts beyond "no crash": every refusal has a message; an accepted config
// passes ValidateModelConfig and stays within its limits; an accepted
// tokenizer encodes a fixed text (specials, digits, accents, CJK, emoji,
// invalid UTF-8) to ids in [0, vocab_size) with and without specials, its
// bos and eos are in range, and decoding what it encoded gives a string.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/gguf_model_config.h"
#include "model/gguf_tokenizer.h"
#include "formats/gguf_file.h"
#include "fuzz/fuzz_util.h"

namespace model = expertd::model;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static expertd::fuzz::MemoryFile file;  // one per run: see MemoryFile
  auto opened = expertd::formats::GgufFile::Open(file.Write(data, size));
  if (!opened.ok()) return 0;
  const expertd::formats::GgufFile& gguf = **opened;

  auto config = model::ModelConfigFromGguf(gguf);
  if (config.ok()) {
    FUZZ_CHECK(model::ValidateModelConfig(*config, "fuzz").ok());
    FUZZ_CHECK(config->vocab_size <= model::kMaxModelVocab && config->hidden_size <= model::kMaxModelWidth);
    FUZZ_CHECK(config->num_layers <= model::kMaxModelLayers && config->num_experts <= model::kMaxModelExperts);
    FUZZ_CHECK(config->max_position_embeddings <= model::kMaxPositions);
  } else {
    FUZZ_CHECK(!config.status().message().empty());
  }

  auto tokenizer = model::TokenizerFromGguf(gguf);
  if (!tokenizer.ok()) {
    FUZZ_CHECK(!tokenizer.status().message().empty());
    return 0;
  }
  const expertd::tokenizer::Tokenizer& t = **tokenizer;
  const int32_t vocab = t.vocab_size();
  FUZZ_CHECK(vocab > 0);
  for (auto id : {t.bos_id(), t.eos_id()}) FUZZ_CHECK(!id.has_value() || (*id >= 0 && *id < vocab));
  static const std::string kText = "<|end|> ab 1234 héllo 日本 😀 <x>\xff\xfe end";
  for (bool add_special : {true, false}) {
    const std::vector<int32_t> ids = t.Encode(kText, add_special);
    for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < vocab);
    (void)t.Decode(ids, /*skip_special=*/false);
  }
  return 0;
}
