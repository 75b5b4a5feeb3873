#include "engine/gguf_tokenizer.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace expertd::engine {
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

// tokenizer.ggml.pre -> the regex its tokenizer.json splits with before the
// byte mapping (empty for GPT-2's, which ByteLevel applies itself with
// use_regex, as OLMoE's and GPT-2's tokenizer.json files say), and whether
// a piece found whole in the vocabulary skips the merges (Llama 3's
// tokenizer.json says "ignore_merges": true; llama.cpp sets the same).
struct PreTokenizer {
  std::string_view name;
  std::string_view split_regex;
  bool ignore_merges;
};
constexpr PreTokenizer kPreTokenizers[] = {
    {"gpt-2", "", false},
    {"olmo", "", false},
    {"qwen2", tokenizer::internal::kQwen2PreTokenizerRegex, false},
    {"deepseek-r1-qwen", tokenizer::internal::kQwen2PreTokenizerRegex, false},
    {"llama-bpe", kLlama3Regex, true},
    {"llama3", kLlama3Regex, true},
    {"llama-v3", kLlama3Regex, true},
};

json PreTokenizerJson(const PreTokenizer& pre) {
  if (pre.split_regex.empty()) {
    return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  }
  return {{"type", "Sequence"},
          {"pretokenizers",
           json::array({json{{"type", "Split"},
                             {"pattern", {{"Regex", std::string(pre.split_regex)}}},
                             {"behavior", "Isolated"},
                             {"invert", false}},
                        json{{"type", "ByteLevel"},
                             {"add_prefix_space", false},
                             {"trim_offsets", false},
                             {"use_regex", false}}})}};
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

// An optional special token id: its text, checked to name a token the
// tokenizer keeps.
absl::StatusOr<std::optional<std::string>> SpecialTokenText(const GgufFile& file, std::string_view key,
                                                            absl::Span<const std::string_view> tokens,
                                                            const std::vector<int32_t>& types) {
  if (!file.Has(key)) return std::nullopt;
  ASSIGN_OR_RETURN(const uint32_t id, file.GetUint32(key));
  if (id >= tokens.size() || types[id] == kUnused) {
    return Invalid(file, absl::StrCat("key '", std::string(key), "' is ", id, ", which is not a token (the vocabulary "
                                      "has ", tokens.size(), id < tokens.size() ? ", and this one is unused)" : ")"));
  }
  return std::string(tokens[id]);
}

}  // namespace

absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> TokenizerFromGguf(const GgufFile& file) {
  ASSIGN_OR_RETURN(const std::string_view model, file.GetString("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return absl::UnimplementedError(absl::StrCat(
        file.path(), ": tokenizer.ggml.model '", std::string(model),
        "' is not supported yet; expertd reads 'gpt2' (byte-level BPE) vocabularies",
        model == "none" ? " (and 'none' means this file has no vocabulary at all)" : ""));
  }
  const PreTokenizer* pre = nullptr;
  ASSIGN_OR_RETURN(const std::string_view pre_name, file.GetString("tokenizer.ggml.pre"));
  for (const PreTokenizer& candidate : kPreTokenizers) {
    if (candidate.name == pre_name) pre = &candidate;
  }
  if (pre == nullptr) {
    return absl::UnimplementedError(absl::StrCat(
        file.path(), ": tokenizer.ggml.pre '", std::string(pre_name),
        "' is not supported yet (supported: gpt-2, olmo, qwen2, deepseek-r1-qwen, llama-bpe, llama3, llama-v3)"));
  }
  ASSIGN_OR_RETURN(const absl::Span<const std::string_view> tokens, file.GetStringArray("tokenizer.ggml.tokens"));
  std::vector<int32_t> types(tokens.size(), kNormal);
  if (file.Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(types, file.GetInt32Array("tokenizer.ggml.token_type"));
    if (types.size() != tokens.size()) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.token_type has ", types.size(), " entries but "
                                        "tokenizer.ggml.tokens has ", tokens.size()));
    }
  }
  ASSIGN_OR_RETURN(const absl::Span<const std::string_view> merges, file.GetStringArray("tokenizer.ggml.merges"));
  if (file.Has("tokenizer.ggml.add_eos_token")) {
    ASSIGN_OR_RETURN(const bool add_eos, file.GetBool("tokenizer.ggml.add_eos_token"));
    if (add_eos) {
      return absl::UnimplementedError(absl::StrCat(
          file.path(), ": tokenizer.ggml.add_eos_token is true; expertd's tokenizer does not append EOS to prompts"));
    }
  }

  // model.vocab and added_tokens of the tokenizer.json this stands for.
  json vocab = json::object();
  json added = json::array();
  absl::flat_hash_map<std::string, int32_t> first_id;  // duplicate texts would collapse in a JSON object
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t type = types[i];
    if (type == kUnused) continue;
    if (type < kUndefined || type > kByte) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.token_type[", i, "] is ", type,
                                        ", not a llama.cpp token type (0 .. 6)"));
    }
    const std::string text(tokens[i]);
    if (text.empty() || !IsValidUtf8(text)) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.tokens[", i, "] is ",
                                        text.empty() ? "empty" : "not valid UTF-8"));
    }
    if (const auto [it, inserted] = first_id.try_emplace(text, static_cast<int32_t>(i)); !inserted) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.tokens[", i, "] repeats token ", it->second, " ('", text,
                                        "')"));
    }
    if (type == kControl || type == kUserDefined) {
      added.push_back({{"id", i},
                       {"content", text},
                       {"special", type == kControl},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", type != kControl}});
    } else {
      vocab[text] = i;
    }
  }
  json merge_list = json::array();
  for (size_t i = 0; i < merges.size(); ++i) {
    if (!IsValidUtf8(merges[i])) {
      return Invalid(file, absl::StrCat("tokenizer.ggml.merges[", i, "] is not valid UTF-8"));
    }
    merge_list.push_back(std::string(merges[i]));
  }
  json config = json::object();
  ASSIGN_OR_RETURN(const std::optional<std::string> bos,
                   SpecialTokenText(file, "tokenizer.ggml.bos_token_id", tokens, types));
  ASSIGN_OR_RETURN(const std::optional<std::string> eos,
                   SpecialTokenText(file, "tokenizer.ggml.eos_token_id", tokens, types));
  if (bos.has_value()) config["bos_token"] = *bos;
  if (eos.has_value()) config["eos_token"] = *eos;
  // llama.cpp adds BOS to byte-level BPE prompts only when asked to.
  bool add_bos = false;
  if (file.Has("tokenizer.ggml.add_bos_token")) {
    ASSIGN_OR_RETURN(add_bos, file.GetBool("tokenizer.ggml.add_bos_token"));
  }
  if (add_bos && !bos.has_value()) {
    return Invalid(file, "tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing");
  }
  config["add_bos_token"] = add_bos;
  json tokenizer_json = {
      {"model",
       {{"type", "BPE"},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merge_list)},
        {"ignore_merges", pre->ignore_merges}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", PreTokenizerJson(*pre)},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"added_tokens", std::move(added)},
  };

  // The tokenizer puts first what its post-processor does (as transformers
  // 5 does; tokenizer/tokenizer.h), so llama.cpp's add_bos_token becomes a
  // TemplateProcessing that leads with the BOS.
  if (add_bos) {
    ASSIGN_OR_RETURN(const uint32_t bos_id, file.GetUint32("tokenizer.ggml.bos_token_id"));
    const json bos_token = {{"SpecialToken", {{"id", *bos}, {"type_id", 0}}}};
    tokenizer_json["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {bos_token, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", {bos_token, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{*bos, {{"id", *bos}, {"ids", {bos_id}}, {"tokens", {*bos}}}}}},
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

}  // namespace expertd::engine
