#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/read_file.h"
#include "tokenizer/bpe.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/token_decoder.h"
#include "tokenizer/tokenizer_json_util.h"
#include "tokenizer/utf8.h"

namespace expertd::tokenizer {

using tokenizer::internal::BpeModel;
using tokenizer::internal::Concat;
using tokenizer::internal::Json;
using tokenizer::internal::JsonRef;
using tokenizer::internal::Normalizer;
using tokenizer::internal::PreTokenizer;
using tokenizer::internal::Quote;
using tokenizer::internal::TokenDecoder;

namespace {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

// ASCII whitespace, what lstrip/rstrip swallow next to an added token.
bool IsAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// A "word" byte for single_word added tokens: ASCII alphanumerics and
// underscore, plus any non-ASCII byte (letters of other scripts).
bool IsWordByte(char c) {
  const auto b = static_cast<uint8_t>(c);
  return b >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

// The member `key` of `parent`, or JSON null when it is absent.
JsonRef MemberOrNull(const JsonRef& parent, std::string_view key) {
  static const Json kNull = nullptr;
  if (!parent.value.is_object() || !parent.value.contains(std::string(key))) {
    return JsonRef{kNull, parent.source, parent.PathOf(key)};
  }
  return parent.Child(key);
}

// Caps on what FromFile reads, so a model directory whose files are huge
// (or are devices) fails by name instead of exhausting memory. The largest
// real tokenizer.json files (256K-entry vocabularies with merges) are about
// 20 MiB; configs and templates are kilobytes.
constexpr uint64_t kMaxTokenizerJsonBytes = uint64_t{64} << 20;
constexpr uint64_t kMaxTokenizerConfigBytes = uint64_t{16} << 20;
constexpr uint64_t kMaxChatTemplateBytes = uint64_t{1} << 20;

}  // namespace

struct Tokenizer::Impl {
  BpeModel model;
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  TokenDecoder decoder;
  std::vector<AddedToken> added_tokens;
  // Indices into added_tokens by the first byte of their content, longest
  // content first, so the first hit at a position is the longest match.
  std::array<std::vector<int>, 256> added_by_first_byte;
  tokenizer::internal::StringIdMap added_by_content;
  // Token text by id: the added token's content or the vocab entry; "" for
  // ids that neither defines.
  std::vector<std::string> id_to_token;
  std::vector<bool> is_special;
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  // What Encode puts first: the post-processor's leading special token.
  std::optional<int32_t> prepended_id;
  std::string chat_template;  // tokenizer_config.json's Jinja source; "" when none

  std::optional<int32_t> Find(std::string_view text) const {
    if (const auto it = added_by_content.find(text); it != added_by_content.end()) return it->second;
    return model.Find(text);
  }

  // The added token at text[pos] (longest first) and where its match ends.
  const AddedToken* MatchAddedToken(std::string_view text, size_t pos, size_t* end) const {
    for (int index : added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
      const AddedToken& token = added_tokens[index];
      if (text.compare(pos, token.content.size(), token.content) != 0) continue;
      const size_t match_end = pos + token.content.size();
      if (token.single_word &&
          ((pos > 0 && IsWordByte(text[pos - 1])) || (match_end < text.size() && IsWordByte(text[match_end])))) {
        continue;
      }
      *end = match_end;
      return &token;
    }
    return nullptr;
  }

  // Normalizer, pre-tokenizer and BPE over text that holds no added token.
  void EncodeText(std::string_view text, bool at_input_start, std::vector<int32_t>* ids) const {
    const std::string normalized = normalizer.Apply(text);
    for (const std::string& word : pre_tokenizer.Apply(normalized, at_input_start)) model.Encode(word, ids);
  }

  // The token strings the decoder sees for `id`; nullopt when skipped.
  const std::string* TokenForDecode(int32_t id, bool skip_special) const {
    if (id < 0 || static_cast<size_t>(id) >= id_to_token.size()) return nullptr;
    if (skip_special && is_special[id]) return nullptr;
    if (id_to_token[id].empty()) return nullptr;
    return &id_to_token[id];
  }
};

namespace {

absl::Status ParseAddedTokens(const JsonRef& root, Tokenizer::Impl* impl) {
  const JsonRef list = MemberOrNull(root, "added_tokens");
  if (list.value.is_null()) return absl::OkStatus();
  if (!list.value.is_array()) return list.Error("expected an array");
  for (size_t i = 0; i < list.value.size(); ++i) {
    const JsonRef entry = list.Element(i);
    AddedToken token;
    absl::StatusOr<int64_t> id = entry.Int("id", -1);
    if (!id.ok()) return id.status();
    if (*id < 0 || *id > INT32_MAX) return entry.MemberError("id", "missing or not a non-negative 32-bit integer");
    token.id = static_cast<int32_t>(*id);
    absl::StatusOr<std::string> content = entry.String("content");
    if (!content.ok()) return content.status();
    if (content->empty()) return entry.MemberError("content", "must not be empty");
    token.content = *content;
    for (auto [key, field] : {std::pair{"special", &token.special}, std::pair{"lstrip", &token.lstrip},
                              std::pair{"rstrip", &token.rstrip}, std::pair{"single_word", &token.single_word}}) {
      absl::StatusOr<bool> value = entry.Bool(key, false);
      if (!value.ok()) return value.status();
      *field = *value;
    }
    impl->added_by_content.insert_or_assign(token.content, token.id);
    impl->added_tokens.push_back(std::move(token));
  }
  for (size_t i = 0; i < impl->added_tokens.size(); ++i) {
    impl->added_by_first_byte[static_cast<uint8_t>(impl->added_tokens[i].content[0])].push_back(static_cast<int>(i));
  }
  for (auto& bucket : impl->added_by_first_byte) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](int a, int b) {
      return impl->added_tokens[a].content.size() > impl->added_tokens[b].content.size();
    });
  }
  return absl::OkStatus();
}

// The BOS id the post-processor puts in front of a single sequence, if any.
absl::StatusOr<std::optional<int32_t>> PostProcessorBos(const JsonRef& processor, const Tokenizer::Impl& impl) {
  if (processor.value.is_null()) return std::optional<int32_t>();
  absl::StatusOr<std::string> type = processor.Type();
  if (!type.ok()) return type.status();
  if (*type == "ByteLevel") return std::optional<int32_t>();
  if (*type == "Sequence") {
    absl::StatusOr<JsonRef> children = processor.Array("processors");
    if (!children.ok()) return children.status();
    for (size_t i = 0; i < children->value.size(); ++i) {
      absl::StatusOr<std::optional<int32_t>> bos = PostProcessorBos(children->Element(i), impl);
      if (!bos.ok() || bos->has_value()) return bos;
    }
    return std::optional<int32_t>();
  }
  if (*type != "TemplateProcessing") {
    return processor.MemberError(
        "type", Concat(Quote(*type), " is not supported; supported post-processors: TemplateProcessing, "
                                           "ByteLevel, Sequence"));
  }
  absl::StatusOr<JsonRef> single = processor.Array("single");
  if (!single.ok()) return single.status();
  if (single->value.empty()) return std::optional<int32_t>();
  const JsonRef first = single->Element(0);
  if (!first.Has("SpecialToken")) return std::optional<int32_t>();
  absl::StatusOr<JsonRef> special = first.Object("SpecialToken");
  if (!special.ok()) return special.status();
  absl::StatusOr<std::string> name = special->String("id");
  if (!name.ok()) return name.status();
  const JsonRef table = MemberOrNull(processor, "special_tokens");
  if (table.Has(*name)) {
    absl::StatusOr<JsonRef> entry = table.Object(*name);
    if (!entry.ok()) return entry.status();
    absl::StatusOr<JsonRef> ids = entry->Array("ids");
    if (!ids.ok()) return ids.status();
    if (ids->value.size() != 1 || !ids->value[0].is_number_integer()) {
      return ids->Error("expected exactly one integer id for the leading special token");
    }
    return std::optional<int32_t>(ids->value[0].get<int32_t>());
  }
  std::optional<int32_t> id = impl.Find(*name);
  if (!id.has_value()) {
    return special->MemberError("id", Concat(Quote(*name), " is neither in special_tokens nor in the vocabulary"));
  }
  return id;
}

// bos_token / eos_token in tokenizer_config.json: a string, an AddedToken
// object {"content": ...}, or null.
absl::StatusOr<std::optional<std::string>> ConfigToken(const JsonRef& config, std::string_view key) {
  if (!config.Has(key)) return std::optional<std::string>();
  const JsonRef value = config.Child(key);
  if (value.value.is_string()) return std::optional<std::string>(value.value.get<std::string>());
  if (value.value.is_object()) {
    absl::StatusOr<std::string> content = value.String("content");
    if (!content.ok()) return content.status();
    return std::optional<std::string>(*content);
  }
  return value.Error("expected a string, an object with \"content\", or null");
}

// chat_template in tokenizer_config.json: a string, or (transformers >= 4.43
// with several templates) a list of {"name", "template"} from which the one
// named "default" is the one apply_chat_template uses.
absl::StatusOr<std::string> ConfigChatTemplate(const JsonRef& config) {
  if (!config.Has("chat_template")) return std::string();
  const JsonRef value = config.Child("chat_template");
  if (value.value.is_string()) return value.value.get<std::string>();
  if (!value.value.is_array()) return value.Error("expected a string or a list of {\"name\", \"template\"}");
  for (size_t i = 0; i < value.value.size(); ++i) {
    const JsonRef entry = value.Element(i);
    absl::StatusOr<std::string> name = entry.String("name");
    if (!name.ok()) return name.status();
    if (*name == "default") return entry.String("template");
  }
  return std::string();
}

absl::Status ResolveSpecialIds(const JsonRef& root, std::string_view config_text, std::string_view config_source,
                               Tokenizer::Impl* impl) {
  absl::StatusOr<std::optional<int32_t>> template_bos =
      PostProcessorBos(MemberOrNull(root, "post_processor"), *impl);
  if (!template_bos.ok()) return template_bos.status();
  impl->bos_id = *template_bos;
  impl->prepended_id = *template_bos;

  std::optional<std::string> eos_text;
  if (!config_text.empty()) {
    absl::StatusOr<Json> config_json = tokenizer::internal::ParseJson(config_text, config_source);
    if (!config_json.ok()) return config_json.status();
    const JsonRef config{*config_json, config_source, ""};
    if (!config.value.is_object()) return config.Error("expected a JSON object");
    absl::StatusOr<std::optional<std::string>> bos_text = ConfigToken(config, "bos_token");
    if (!bos_text.ok()) return bos_text.status();
    absl::StatusOr<std::optional<std::string>> eos = ConfigToken(config, "eos_token");
    if (!eos.ok()) return eos.status();
    eos_text = *eos;
    absl::StatusOr<std::string> chat_template = ConfigChatTemplate(config);
    if (!chat_template.ok()) return chat_template.status();
    impl->chat_template = std::move(*chat_template);
    if (bos_text->has_value()) {
      impl->bos_id = impl->Find(**bos_text);
      if (!impl->bos_id.has_value()) {
        return config.MemberError("bos_token", Concat(Quote(**bos_text), " is not a token of ", root.source));
      }
    }
    // add_bos_token is not read: the post-processor alone decides whether a
    // BOS goes first, as in transformers 5 (checked with 5.24 on byte-level
    // and SentencePiece-style tokenizers under every tokenizer_class: a
    // config's add_bos_token true adds none that the post-processor does not,
    // false removes none it does). DeepSeek-V3 says add_bos_token: true
    // with a post-processor that adds nothing, and gets no BOS.
  }
  if (eos_text.has_value()) {
    impl->eos_id = impl->Find(*eos_text);
    if (!impl->eos_id.has_value()) {
      return absl::InvalidArgumentError(Concat(config_source, ": eos_token: ", Quote(*eos_text),
                                                     " is not a token of ", root.source));
    }
  } else {
    // Without a config, the end-of-text tokens these model families use.
    for (std::string_view candidate : {"<|endoftext|>", "</s>", "<|im_end|>"}) {
      impl->eos_id = impl->Find(candidate);
      if (impl->eos_id.has_value()) break;
    }
  }
  return absl::OkStatus();
}

absl::Status Load(std::string_view tokenizer_json, std::string_view source, std::string_view config_text,
                  std::string_view config_source, Tokenizer::Impl* impl) {
  absl::StatusOr<Json> document = tokenizer::internal::ParseJson(tokenizer_json, source);
  if (!document.ok()) return document.status();
  const JsonRef root{*document, source, ""};
  if (!root.value.is_object()) return root.Error("expected a JSON object at the top level");

  absl::StatusOr<JsonRef> model = root.Object("model");
  if (!model.ok()) return model.status();
  absl::StatusOr<std::optional<std::string>> model_type = model->OptionalString("type");
  if (!model_type.ok()) return model_type.status();
  // Old files omit model.type; HF then recognises BPE by its merges.
  if (model_type->has_value() ? **model_type != "BPE" : !model->Has("merges")) {
    return model->MemberError(
        "type", Concat(model_type->has_value() ? Quote(**model_type) : std::string("missing"),
                             " is not supported; only \"BPE\" models (OLMoE, Qwen2/3, Mixtral) are"));
  }
  absl::StatusOr<BpeModel> bpe = BpeModel::FromJson(*model);
  if (!bpe.ok()) return bpe.status();
  impl->model = std::move(*bpe);

  absl::StatusOr<Normalizer> normalizer = Normalizer::FromJson(MemberOrNull(root, "normalizer"));
  if (!normalizer.ok()) return normalizer.status();
  impl->normalizer = std::move(*normalizer);
  absl::StatusOr<PreTokenizer> pre_tokenizer = PreTokenizer::FromJson(MemberOrNull(root, "pre_tokenizer"));
  if (!pre_tokenizer.ok()) return pre_tokenizer.status();
  impl->pre_tokenizer = std::move(*pre_tokenizer);
  absl::StatusOr<TokenDecoder> decoder = TokenDecoder::FromJson(MemberOrNull(root, "decoder"));
  if (!decoder.ok()) return decoder.status();
  impl->decoder = std::move(*decoder);

  if (absl::Status s = ParseAddedTokens(root, impl); !s.ok()) return s;

  int64_t max_id = -1;
  for (const auto& [text, id] : impl->model.vocab()) max_id = std::max<int64_t>(max_id, id);
  for (const AddedToken& token : impl->added_tokens) max_id = std::max<int64_t>(max_id, token.id);
  if (max_id < 0) return root.Error("model.vocab and added_tokens are both empty");
  // The id tables are indexed by id, so a few sparse huge ids would cost
  // gigabytes. Real vocabularies number their tokens densely from 0 (added
  // tokens follow the vocabulary), so the largest id stays below a small
  // multiple of the token count.
  const int64_t tokens = static_cast<int64_t>(impl->model.vocab().size() + impl->added_tokens.size());
  const int64_t max_allowed_id = 4 * tokens + 1024;
  if (max_id > max_allowed_id) {
    return root.Error(absl::StrCat("token id ", max_id, " is far beyond the ", tokens,
                                   " tokens defined (ids must be dense from 0; at most ", max_allowed_id, ")"));
  }
  const size_t id_count = static_cast<size_t>(max_id) + 1;
  impl->id_to_token.assign(id_count, std::string());
  impl->is_special.assign(id_count, false);
  for (const auto& [text, id] : impl->model.vocab()) impl->id_to_token[id] = text;
  for (const AddedToken& token : impl->added_tokens) {
    impl->id_to_token[token.id] = token.content;
    impl->is_special[token.id] = token.special;
  }
  return ResolveSpecialIds(root, config_text, config_source, impl);
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                               std::string_view tokenizer_config_json,
                                                               std::string_view source_name) {
  auto impl = std::make_unique<Impl>();
  const std::string config_source = Concat("tokenizer_config.json for ", source_name);
  absl::Status status;
  try {
    status = Load(tokenizer_json, source_name, tokenizer_config_json, config_source, impl.get());
  } catch (const std::exception& e) {
    // The loader checks types before every access; this only keeps an
    // unforeseen shape of input from escaping as an exception.
    status = absl::InvalidArgumentError(Concat(source_name, ": unexpected structure: ", e.what()));
  }
  if (!status.ok()) return status;
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& tokenizer_json_path) {
  absl::StatusOr<std::string> tokenizer_json =
      ReadFileCapped(tokenizer_json_path, kMaxTokenizerJsonBytes, "tokenizer.json");
  if (!tokenizer_json.ok()) return tokenizer_json.status();
  const std::filesystem::path config_path =
      std::filesystem::path(tokenizer_json_path).parent_path() / "tokenizer_config.json";
  std::string config_text;
  std::error_code error;
  if (std::filesystem::exists(config_path, error)) {
    absl::StatusOr<std::string> config =
        ReadFileCapped(config_path.string(), kMaxTokenizerConfigBytes, "tokenizer_config.json");
    if (!config.ok()) return config.status();
    config_text = std::move(*config);
  }
  auto impl = std::make_unique<Impl>();
  absl::Status status;
  try {
    status = Load(*tokenizer_json, tokenizer_json_path, config_text, config_path.string(), impl.get());
  } catch (const std::exception& e) {
    status = absl::InvalidArgumentError(Concat(tokenizer_json_path, ": unexpected structure: ", e.what()));
  }
  if (!status.ok()) return status;
  // Newer transformers save the template as its own file beside the config.
  const std::filesystem::path jinja_path =
      std::filesystem::path(tokenizer_json_path).parent_path() / "chat_template.jinja";
  if (impl->chat_template.empty() && std::filesystem::exists(jinja_path, error)) {
    absl::StatusOr<std::string> jinja =
        ReadFileCapped(jinja_path.string(), kMaxChatTemplateBytes, "chat_template.jinja");
    if (!jinja.ok()) return jinja.status();
    impl->chat_template = std::move(*jinja);
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_special && impl_->prepended_id.has_value()) ids.push_back(*impl_->prepended_id);
  size_t text_start = 0;
  size_t pos = 0;
  const auto encode_text_until = [&](size_t end) {
    if (end > text_start) impl_->EncodeText(text.substr(text_start, end - text_start), text_start == 0, &ids);
  };
  while (pos < text.size()) {
    size_t match_end = 0;
    const AddedToken* token = impl_->MatchAddedToken(text, pos, &match_end);
    if (token == nullptr) {
      ++pos;
      continue;
    }
    size_t match_begin = pos;
    if (token->lstrip) {
      while (match_begin > text_start && IsAsciiSpace(text[match_begin - 1])) --match_begin;
    }
    if (token->rstrip) {
      while (match_end < text.size() && IsAsciiSpace(text[match_end])) ++match_end;
    }
    encode_text_until(match_begin);
    ids.push_back(token->id);
    text_start = pos = match_end;
  }
  encode_text_until(text.size());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const std::string* token = impl_->TokenForDecode(id, skip_special)) tokens.push_back(*token);
  }
  return impl_->decoder.Decode(std::move(tokens), /*at_text_start=*/true, /*at_text_end=*/true);
}

std::optional<std::string> Tokenizer::DecodeStreamPiece(int32_t id, bool skip_special, bool at_stream_start) const {
  const std::string* token = impl_->TokenForDecode(id, skip_special);
  if (token == nullptr) return std::nullopt;
  return impl_->decoder.Decode({*token}, at_stream_start, /*at_text_end=*/false);
}

std::string_view Tokenizer::TokenText(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size()) return {};
  return impl_->id_to_token[id];
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view token_text) const { return impl_->Find(token_text); }

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_to_token.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos_id; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->is_special.size() && impl_->is_special[id];
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::Next(int32_t id) {
  std::optional<std::string> piece = tokenizer_.DecodeStreamPiece(id, skip_special_, at_start_);
  if (!piece.has_value()) return {};
  at_start_ = false;
  pending_.append(*piece);
  // Hold back a trailing lead byte (plus its continuation bytes so far) that
  // the next token may complete; everything before it is final.
  size_t hold = pending_.size();
  for (size_t k = std::min<size_t>(3, pending_.size()); k >= 1; --k) {
    if (IsIncompleteUtf8Prefix(std::string_view(pending_).substr(pending_.size() - k))) {
      hold = pending_.size() - k;
      break;
    }
  }
  std::string out = ReplaceInvalidUtf8(std::string_view(pending_).substr(0, hold));
  pending_.erase(0, hold);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out = ReplaceInvalidUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace expertd::tokenizer
