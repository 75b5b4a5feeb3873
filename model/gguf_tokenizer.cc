#include "model/gguf_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace expertd::model {
namespace {

using formats::GgufFile;
using nlohmann::json;

// llama.cpp's token types (llama_token_type).
enum TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Llama 3's split regex as its tokenizer.json carries it (llama.cpp spells
// the case-insensitive group out by hand).
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// o200k's split regex as gpt-oss's tokenizer.json carries it: a word is
// optional upper-case letters then lower-case ones (or the reverse), marks
// (\p{M}) staying with their letters, with an English contraction attached;
// digits in runs of up to three; "/" joins a punctuation run's newlines.
// llama.cpp rewrites it with lookaheads for its own regex engine; this is
// the original.
constexpr std::string_view kGpt4oRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// DeepSeek-LLM's (and DeepSeek-V2's) tokenizer.json splits with a Sequence
// of Split steps, each applied to the pieces the one before left: newlines
// alone; runs of letters of the Latin, Greek, Cyrillic, Armenian, Georgian,
// Cherokee, Glagolitic, Coptic, Deseret, Osage, Old Hungarian, Warang Citi
// and Adlam scripts (and fullwidth Latin), with one leading space; runs of
// ASCII and fullwidth punctuation, with one leading space; trailing
// whitespace; runs of CJK and Hangul (and everything in U+0800-U+4E00);
// digit runs. The six code points written \x{...} have canonical
// decompositions (e.g. U+212A KELVIN SIGN is K): an editor that normalizes
// to NFC would silently change the ranges they bound, so they stay escaped.
constexpr std::string_view kDeepSeekLlmSplits[] = {
    R"([\r\n])",
    R"(\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+)",
    R"(\s?[!-/:-~！-／：-～‘-‟　-。]+)",
    R"(\s+$)",
    R"([一-龥ࠀ-一가-퟿]+)",
    R"(\p{N}+)",
};
constexpr std::string_view kQwen2Splits[] = {tokenizer::internal::kQwen2PreTokenizerRegex};
constexpr std::string_view kLlama3Splits[] = {kLlama3Regex};
constexpr std::string_view kGpt4oSplits[] = {kGpt4oRegex};

// tokenizer.ggml.pre -> the regexes its tokenizer.json splits with before
// the byte mapping (none for GPT-2's, which ByteLevel applies itself with
// use_regex, as OLMoE's and GPT-2's tokenizer.json files say), and whether
// a piece found whole in the vocabulary skips the merges (Llama 3's
// tokenizer.json says "ignore_merges": true; llama.cpp sets the same, and
// not for gpt-4o).
struct PreTokenizer {
  std::string_view name;
  absl::Span<const std::string_view> splits;
  bool ignore_merges;
};
constexpr PreTokenizer kPreTokenizers[] = {
    {"gpt-2", {}, false},
    {"olmo", {}, false},
    {"qwen2", kQwen2Splits, false},
    {"deepseek-r1-qwen", kQwen2Splits, false},
    {"llama-bpe", kLlama3Splits, true},
    {"llama3", kLlama3Splits, true},
    {"llama-v3", kLlama3Splits, true},
    {"gpt-4o", kGpt4oSplits, false},
    {"deepseek-llm", kDeepSeekLlmSplits, false},
};

json ByteLevelPreTokenizerJson(const PreTokenizer& pre) {
  if (pre.splits.empty()) {
    return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  }
  json steps = json::array();
  for (std::string_view split : pre.splits) {
    steps.push_back(
        {{"type", "Split"}, {"pattern", {{"Regex", std::string(split)}}}, {"behavior", "Isolated"}, {"invert", false}});
  }
  steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}});
  return {{"type", "Sequence"}, {"pretokenizers", std::move(steps)}};
}

bool IsValidUtf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    const size_t length = tokenizer::ValidUtf8CharLength(text, pos);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

absl::Status Invalid(const GgufFile& file, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(file.path(), ": ", std::string(what)));
}

// tokenizer.ggml.tokens and .token_type, checked: one type per token, each
// a llama.cpp type, every token non-empty UTF-8 and none twice.
struct Vocabulary {
  absl::Span<const std::string_view> tokens{};
  std::vector<int32_t> types{};
  absl::flat_hash_map<std::string_view, int32_t> ids{};  // views into `tokens`, which the file owns
};

absl::StatusOr<Vocabulary> ReadVocabulary(const GgufFile& file) {
  Vocabulary vocab;
  ASSIGN_OR_RETURN(vocab.tokens, file.GetStringArray("tokenizer.ggml.tokens"));
  vocab.types.assign(vocab.tokens.size(), kNormal);
  if (file.Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(vocab.types, file.GetInt32Array("tokenizer.ggml.token_type"));
    if (vocab.types.size() != vocab.tokens.size()) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.token_type has ", vocab.types.size(), " entries but "
                                        "tokenizer.ggml.tokens has ", vocab.tokens.size()));
    }
  }
  vocab.ids.reserve(vocab.tokens.size());
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    const int32_t type = vocab.types[i];
    if (type < kUndefined || type > kByte) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.token_type[", i, "] is ", type,
                                        ", not a llama.cpp token type (0 .. 6)"));
    }
    const std::string_view text = vocab.tokens[i];
    if (type == kUnused) continue;  // padding: never produced, and real files repeat such texts
    if (text.empty() || !IsValidUtf8(text)) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.tokens[", i, "] is ",
                                        text.empty() ? "empty" : "not valid UTF-8"));
    }
    // Duplicate texts would collapse in tokenizer.json's vocab object.
    if (const auto [it, inserted] = vocab.ids.try_emplace(text, static_cast<int32_t>(i)); !inserted) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.tokens[", i, "] repeats token ", it->second, " ('",
                                        std::string(text), "')"));
    }
  }
  return vocab;
}

// An optional special token id, checked to name a token the tokenizer
// keeps; `default_id` stands in when the key is absent (llama.cpp's
// defaults for SentencePiece vocabularies) and is dropped when it names no
// such token.
absl::StatusOr<std::optional<int32_t>> SpecialTokenId(const GgufFile& file, std::string_view key,
                                                      const Vocabulary& vocab,
                                                      std::optional<int32_t> default_id = std::nullopt) {
  const size_t size = vocab.tokens.size();
  if (!file.Has(key)) {
    if (default_id.has_value() && static_cast<size_t>(*default_id) < size && vocab.types[*default_id] != kUnused) {
      return default_id;
    }
    return std::nullopt;
  }
  ASSIGN_OR_RETURN(const uint32_t id, file.GetUint32(key));
  if (id >= size || vocab.types[id] == kUnused) {
    return Invalid(file, absl::StrCat("key '", std::string(key), "' is ", id, ", which is not a token (the vocabulary "
                                      "has ", size, id < size ? ", and this one is unused)" : ")"));
  }
  return static_cast<int32_t>(id);
}

absl::StatusOr<bool> BoolOr(const GgufFile& file, std::string_view key, bool absent) {
  if (!file.Has(key)) return absent;
  return file.GetBool(key);
}

json AddedToken(const Vocabulary& vocab, size_t id, bool special) {
  return {{"id", id},
          {"content", std::string(vocab.tokens[id])},
          {"special", special},
          {"single_word", false},
          {"lstrip", false},
          {"rstrip", false},
          {"normalized", false}};
}

// tokenizer.ggml.model "gpt2": byte-level BPE with the file's merges.
// Normal and byte tokens are BPE vocabulary, control tokens special added
// tokens, user-defined ones added tokens, and unused ones (padding) are
// left out.
absl::StatusOr<json> ByteLevelBpeJson(const GgufFile& file, const Vocabulary& vocab) {
  const PreTokenizer* pre = nullptr;
  ASSIGN_OR_RETURN(const std::string_view pre_name, file.GetString("tokenizer.ggml.pre"));
  for (const PreTokenizer& candidate : kPreTokenizers) {
    if (candidate.name == pre_name) pre = &candidate;
  }
  if (pre == nullptr) {
    std::vector<std::string> names;  // Debian's absl::StrJoin takes no std::string_view
    for (const PreTokenizer& candidate : kPreTokenizers) names.emplace_back(candidate.name);
    return absl::UnimplementedError(absl::StrCat(file.path(), ": tokenizer.ggml.pre '", std::string(pre_name),
                                                 "' is not supported yet (supported: ", absl::StrJoin(names, ", "),
                                                 ")"));
  }
  ASSIGN_OR_RETURN(const absl::Span<const std::string_view> merges, file.GetStringArray("tokenizer.ggml.merges"));
  json vocab_json = json::object();
  json added = json::array();
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    const int32_t type = vocab.types[i];
    if (type == kUnused) continue;
    if (type == kControl || type == kUserDefined) {
      json token = AddedToken(vocab, i, type == kControl);
      token["normalized"] = type != kControl;
      added.push_back(std::move(token));
    } else {
      vocab_json[std::string(vocab.tokens[i])] = i;
    }
  }
  json merge_list = json::array();
  for (size_t i = 0; i < merges.size(); ++i) {
    if (!IsValidUtf8(merges[i])) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.merges[", i, "] is not valid UTF-8"));
    }
    merge_list.push_back(std::string(merges[i]));
  }
  return json{
      {"model",
       {{"type", "BPE"},
        {"vocab", std::move(vocab_json)},
        {"merges", std::move(merge_list)},
        {"ignore_merges", pre->ignore_merges}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", ByteLevelPreTokenizerJson(*pre)},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"added_tokens", std::move(added)},
  };
}

// The merges a SentencePiece BPE vocabulary implies. SentencePiece (and
// llama.cpp's llm_tokenizer_spm) merge, among adjacent symbols, the pair
// whose concatenation is the vocabulary piece with the highest score. A
// BPE model with ranked merges does the same when every split of a piece
// into two vocabulary pieces is a merge, ranked by the piece's score, best
// first; ties go to the lower piece id, then the lower left and right ids
// (the order Hugging Face's converter gave Llama's and Mistral's
// tokenizer.json). Splits fall on character boundaries only.
absl::StatusOr<json> MergesFromScores(const GgufFile& file, const Vocabulary& vocab,
                                      const std::vector<float>& scores) {
  struct Merge {
    float score;
    int32_t piece;
    int32_t left;
    int32_t right;
  };
  std::vector<Merge> merges;
  for (size_t piece = 0; piece < vocab.tokens.size(); ++piece) {
    if (vocab.types[piece] == kUnused) continue;
    if (!std::isfinite(scores[piece])) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.scores[", piece, "] is ", scores[piece],
                                        ", not a finite number"));
    }
    const std::string_view text = vocab.tokens[piece];
    for (size_t split = tokenizer::ValidUtf8CharLength(text, 0); split < text.size();
         split += tokenizer::ValidUtf8CharLength(text, split)) {
      const auto left = vocab.ids.find(text.substr(0, split));
      const auto right = vocab.ids.find(text.substr(split));
      if (left == vocab.ids.end() || right == vocab.ids.end()) continue;
      merges.push_back({scores[piece], static_cast<int32_t>(piece), left->second, right->second});
    }
  }
  std::sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return std::tie(b.score, a.piece, a.left, a.right) < std::tie(a.score, b.piece, b.left, b.right);
  });
  json list = json::array();
  for (const Merge& merge : merges) {
    // Pairs, not "left right" strings: a piece may hold a space.
    list.push_back({std::string(vocab.tokens[merge.left]), std::string(vocab.tokens[merge.right])});
  }
  return list;
}

// tokenizer.ggml.model "llama": a SentencePiece BPE vocabulary (Llama 2,
// Mistral, Mixtral), as the tokenizer.json Hugging Face made for those
// models: the pieces and the merges their scores imply, "▁" for spaces
// (and one before each stretch of text between special tokens, when
// add_space_prefix, as llama.cpp and the legacy Llama tokenizer do), bytes
// outside the vocabulary as <0xNN> tokens. Control and unknown tokens are
// special added tokens and user-defined ones added tokens, all of them also
// BPE vocabulary (as in those tokenizer.json files); unused pieces are left
// out, as SentencePiece never produces them (Llama's, Mistral's and
// Mixtral's vocabularies have none).
absl::StatusOr<json> SentencePieceBpeJson(const GgufFile& file, const Vocabulary& vocab,
                                          std::optional<int32_t> unk_id) {
  ASSIGN_OR_RETURN(const std::vector<float> scores, file.GetFloat32Array("tokenizer.ggml.scores"));
  if (scores.size() != vocab.tokens.size()) {
    return Invalid(file, absl::StrCat("tokenizer.ggml.scores has ", scores.size(),
                                      " entries but tokenizer.ggml.tokens has ", vocab.tokens.size()));
  }
  ASSIGN_OR_RETURN(const bool remove_extra_whitespaces,
                   BoolOr(file, "tokenizer.ggml.remove_extra_whitespaces", false));
  if (remove_extra_whitespaces) {
    return absl::UnimplementedError(
        absl::StrCat(file.path(), ": tokenizer.ggml.remove_extra_whitespaces is true; expertd's SentencePiece "
                                  "vocabularies keep whitespace as it is (Llama, Mistral and Mixtral files do)"));
  }
  ASSIGN_OR_RETURN(const bool add_space_prefix, BoolOr(file, "tokenizer.ggml.add_space_prefix", true));
  ASSIGN_OR_RETURN(json merges, MergesFromScores(file, vocab, scores));

  json vocab_json = json::object();
  json added = json::array();
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    const int32_t type = vocab.types[i];
    if (type == kUnused) continue;
    vocab_json[std::string(vocab.tokens[i])] = i;
    if (type == kControl || type == kUnknown || type == kUserDefined) {
      added.push_back(AddedToken(vocab, i, type != kUserDefined));
    }
  }
  const json replace_space = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}};
  json normalizer = replace_space;
  json decoders = json::array({json{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                               json{{"type", "ByteFallback"}}, json{{"type", "Fuse"}}});
  if (add_space_prefix) {
    normalizer = {{"type", "Sequence"},
                  {"normalizers", json::array({json{{"type", "Prepend"}, {"prepend", "▁"}}, replace_space})}};
    decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  }
  json model = {{"type", "BPE"},
                {"vocab", std::move(vocab_json)},
                {"merges", std::move(merges)},
                {"byte_fallback", true},
                {"fuse_unk", true}};
  if (unk_id.has_value()) model["unk_token"] = std::string(vocab.tokens[*unk_id]);
  return json{
      {"model", std::move(model)},
      {"normalizer", std::move(normalizer)},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder", {{"type", "Sequence"}, {"decoders", std::move(decoders)}}},
      {"added_tokens", std::move(added)},
  };
}

}  // namespace

absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> TokenizerFromGguf(const GgufFile& file) {
  ASSIGN_OR_RETURN(const std::string_view model, file.GetString("tokenizer.ggml.model"));
  const bool sentencepiece = model == "llama";
  if (model != "gpt2" && !sentencepiece) {
    return absl::UnimplementedError(absl::StrCat(
        file.path(), ": tokenizer.ggml.model '", std::string(model),
        "' is not supported yet; expertd reads 'gpt2' (byte-level BPE) and 'llama' (SentencePiece BPE) "
        "vocabularies",
        model == "none" ? " (and 'none' means this file has no vocabulary at all)" : ""));
  }
  ASSIGN_OR_RETURN(const Vocabulary vocab, ReadVocabulary(file));
  ASSIGN_OR_RETURN(const bool add_eos, BoolOr(file, "tokenizer.ggml.add_eos_token", false));
  if (add_eos) {
    return absl::UnimplementedError(absl::StrCat(
        file.path(), ": tokenizer.ggml.add_eos_token is true; expertd's tokenizer does not append EOS to prompts"));
  }
  // llama.cpp's defaults for a key the file leaves out: SentencePiece
  // vocabularies number <unk>, <s>, </s> 0, 1, 2 and add BOS to prompts;
  // byte-level ones add it only when asked to.
  const auto spm_default = [&](int32_t id) { return sentencepiece ? std::optional<int32_t>(id) : std::nullopt; };
  ASSIGN_OR_RETURN(const std::optional<int32_t> bos,
                   SpecialTokenId(file, "tokenizer.ggml.bos_token_id", vocab, spm_default(1)));
  ASSIGN_OR_RETURN(const std::optional<int32_t> eos,
                   SpecialTokenId(file, "tokenizer.ggml.eos_token_id", vocab, spm_default(2)));
  // Only SentencePiece vocabularies use an unknown token (byte fallback
  // covers every byte-level text).
  std::optional<int32_t> unk;
  if (sentencepiece) {
    ASSIGN_OR_RETURN(unk, SpecialTokenId(file, "tokenizer.ggml.unknown_token_id", vocab, spm_default(0)));
  }
  ASSIGN_OR_RETURN(const bool add_bos, BoolOr(file, "tokenizer.ggml.add_bos_token", sentencepiece));
  if (add_bos && !bos.has_value()) {
    return Invalid(file, "tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing");
  }

  json tokenizer_json;
  if (sentencepiece) {
    ASSIGN_OR_RETURN(tokenizer_json, SentencePieceBpeJson(file, vocab, unk));
  } else {
    ASSIGN_OR_RETURN(tokenizer_json, ByteLevelBpeJson(file, vocab));
  }
  json config = json::object();
  if (bos.has_value()) config["bos_token"] = std::string(vocab.tokens[*bos]);
  if (eos.has_value()) config["eos_token"] = std::string(vocab.tokens[*eos]);
  config["add_bos_token"] = add_bos;
  // The tokenizer puts first what its post-processor does (as transformers
  // 5 does; tokenizer/tokenizer.h), so llama.cpp's add_bos_token becomes a
  // TemplateProcessing that leads with the BOS.
  if (add_bos) {
    const std::string bos_text(vocab.tokens[*bos]);
    const json bos_token = {{"SpecialToken", {{"id", bos_text}, {"type_id", 0}}}};
    tokenizer_json["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {bos_token, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", {bos_token, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{bos_text, {{"id", bos_text}, {"ids", {*bos}}, {"tokens", {bos_text}}}}}},
    };
  }
  if (file.Has("tokenizer.chat_template")) {
    ASSIGN_OR_RETURN(const std::string_view chat_template, file.GetString("tokenizer.chat_template"));
    if (!IsValidUtf8(chat_template)) return Invalid(file, "tokenizer.chat_template is not valid UTF-8");
    config["chat_template"] = std::string(chat_template);
  }
  // Every string above is valid UTF-8, so dump cannot throw.
  return tokenizer::Tokenizer::FromJson(tokenizer_json.dump(), config.dump(), file.path());
}

}  // namespace expertd::model
