#include "tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tokenizer/byte_level.h"
#include "tokenizer/unicode_nfc.h"
#include "tokenizer/utf8.h"
#include "tools/mkmodel/bpe_trainer.h"

namespace expertd::tokenizer {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

std::unique_ptr<Tokenizer> Load(const Json& tokenizer_json, const std::string& config = "") {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(tokenizer_json.dump(), config, "test.json");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

std::string LoadError(std::string_view tokenizer_json, std::string_view config = "") {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(tokenizer_json, config, "test.json");
  EXPECT_FALSE(tokenizer.ok());
  return tokenizer.ok() ? std::string() : std::string(tokenizer.status().message());
}

std::vector<std::string> Texts(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::vector<std::string> texts;
  for (int32_t id : ids) texts.emplace_back(tokenizer.TokenText(id));
  return texts;
}

// --- Byte-level tokenizers with a hand-written vocabulary -------------------

const char kGpt2Regex[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char kQwenRegex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The 256 byte tokens in GPT-2 order, then one token per merge, in the
// ranks given. Merges are "a b" strings.
Json ByteLevelModel(const std::vector<std::string>& merges) {
  Json vocab = Json::object();
  int next_id = 0;
  for (uint8_t byte : ByteLevelOrder()) {
    std::string text;
    AppendByteLevel(std::string_view(reinterpret_cast<const char*>(&byte), 1), &text);
    vocab[text] = next_id++;
  }
  for (const std::string& merge : merges) {
    const size_t space = merge.find(' ');
    const std::string merged = merge.substr(0, space) + merge.substr(space + 1);
    if (!vocab.contains(merged)) vocab[merged] = next_id++;
  }
  return {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"unk_token", nullptr}};
}

const std::vector<std::string> kHandMerges = {
    "t h", "th e", "Ġ c", "a t", "Ġc at", "1 2", "3 4", "12 34", "Ġ 1", "D O", "DO N", "' T", "Ġ Ġ", "Ġ b",
};

Json Gpt2Tokenizer() {
  return {{"model", ByteLevelModel(kHandMerges)},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"post_processor", {{"type", "ByteLevel"}, {"trim_offsets", false}}},
          {"added_tokens",
           {{{"id", 400}, {"content", "<|endoftext|>"}, {"special", true}},
            {{"id", 401}, {"content", "<|im_start|>"}, {"special", true}},
            {{"id", 402}, {"content", "<|im_start|>x"}, {"special", true}},
            {{"id", 403}, {"content", "<pad>"}, {"special", true}, {"lstrip", true}, {"rstrip", true}}}}};
}

Json QwenTokenizer() {
  Json model = ByteLevelModel(kHandMerges);
  // Qwen files spell merges as pairs and use "" for the unused affixes.
  Json pairs = Json::array();
  for (const std::string& merge : kHandMerges) {
    const size_t space = merge.find(' ');
    pairs.push_back({merge.substr(0, space), merge.substr(space + 1)});
  }
  model["merges"] = pairs;
  model["continuing_subword_prefix"] = "";
  model["end_of_word_suffix"] = "";
  return {{"model", model},
          {"normalizer", {{"type", "NFC"}}},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", kQwenRegex}}}, {"behavior", "Isolated"}, {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"post_processor", nullptr},
          {"added_tokens",
           {{{"id", 400}, {"content", "<|endoftext|>"}, {"special", true}},
            {{"id", 401}, {"content", "<|im_start|>"}, {"special", true}},
            {{"id", 402}, {"content", "<|im_end|>"}, {"special", true}}}}};
}

TEST(ByteLevelTest, MatchesGpt2Alphabet) {
  // GPT-2's vocab.json: "!" is id 0, the byte 0x00 ("Ā") id 188, space "Ġ".
  EXPECT_EQ(ByteLevelOrder()[0], '!');
  EXPECT_EQ(ByteLevelOrder()[188], 0);
  EXPECT_EQ(ByteToCodePoint(' '), 0x120u);
  EXPECT_EQ(ByteToCodePoint('\n'), 0x10Au);
  EXPECT_EQ(ByteToCodePoint('a'), static_cast<uint32_t>('a'));
  EXPECT_EQ(ByteToCodePoint(0xAD), 0x143u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(CodePointToByte(ByteToCodePoint(static_cast<uint8_t>(b))), b);
}

TEST(Gpt2TokenizerTest, HandWorkedSegmentation) {
  auto tokenizer = Load(Gpt2Tokenizer());
  ASSERT_NE(tokenizer, nullptr);
  // "the" | " cat" | " 12345". In " 12345", (1,2) has rank 5 and beats
  // (Ġ,1) at rank 8, so Ġ stays alone: Ġ 12 3 4 5 -> Ġ 12 34 5 -> Ġ 1234 5.
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("the cat 12345")),
              ElementsAre("the", "Ġcat", "Ġ", "1234", "5"));
  // 't is a contraction only in lower case: "DON" "'" "T", so "'T" can't merge.
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("DON'T")), ElementsAre("DON", "'", "T"));
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("don't")), ElementsAre("d", "o", "n", "'", "t"));
  // \s+(?!\S) leaves the last space of a run to the next word.
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("a  b")), ElementsAre("a", "Ġ", "Ġb"));
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("a   b")), ElementsAre("a", "ĠĠ", "Ġb"));
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("a  ")), ElementsAre("a", "ĠĠ"));
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("\n\n")), ElementsAre("Ċ", "Ċ"));
  // Ids of the merged tokens follow the 256 byte tokens in merge order.
  EXPECT_EQ(tokenizer->TokenId("th"), 256);
  EXPECT_EQ(tokenizer->TokenId("the"), 257);
  EXPECT_EQ(tokenizer->Encode("the")[0], 257);
  EXPECT_EQ(tokenizer->vocab_size(), 404);
}

TEST(QwenTokenizerTest, HandWorkedSegmentation) {
  auto tokenizer = Load(QwenTokenizer());
  ASSERT_NE(tokenizer, nullptr);
  // Qwen's regex isolates every digit and keeps the space before them alone.
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("the cat 12345")),
              ElementsAre("the", "Ġcat", "Ġ", "1", "2", "3", "4", "5"));
  // Case-insensitive contractions: "'T" is one pre-token and merges.
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("DON'T")), ElementsAre("DON", "'T"));
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("a   b")), ElementsAre("a", "ĠĠ", "Ġb"));
  // A letter run takes one preceding non-letter: ".the" stays together.
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("x.the")), ElementsAre("x", ".", "the"));
}

TEST(QwenTokenizerTest, NfcNormalizerComposes) {
  auto tokenizer = Load(QwenTokenizer());
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->Encode("e\xCC\x81"), tokenizer->Encode("\xC3\xA9"));
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode("e\xCC\x81")), "\xC3\xA9");
}

class ByteLevelRoundTripTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ByteLevelRoundTripTest, DecodeInvertsEncode) {
  const std::vector<std::string> inputs = {
      "Hello, world! It's 2024.",
      "  leading and trailing  ",
      "tabs\tand\t\ttabs",
      "line\n\nbreaks\r\n and \n",
      "1234567890 3.14159 -42",
      "日本語のテキストと中文",
      "emoji 😀👍🏽 and 👨‍👩‍👧",
      "combining: e\xCC\x81 a\xCC\x8A n\xCC\x83",
      std::string("nul\0byte", 8),
      "invalid \xFF\xFE bytes \xC3 and \xE2\x82 truncated \x80",
      "<|endoftext|> inside <|im_start|>text",
  };
  auto tokenizer = Load(GetParam() == "gpt2" ? Gpt2Tokenizer() : QwenTokenizer());
  ASSERT_NE(tokenizer, nullptr);
  for (const std::string& text : inputs) {
    // Qwen's NFC step composes the combining sequence; compare with that.
    const std::string expected = GetParam() == "qwen" ? NormalizeNfc(text) : text;
    EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text), /*skip_special=*/false), expected) << text;
  }
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(all_bytes)), all_bytes);
}

INSTANTIATE_TEST_SUITE_P(Styles, ByteLevelRoundTripTest, ::testing::Values("gpt2", "qwen"));

TEST(AddedTokensTest, SpecialTokensBecomeSingleIds) {
  auto tokenizer = Load(Gpt2Tokenizer());
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(tokenizer->Encode("<|endoftext|>"), ElementsAre(400));
  const std::vector<int32_t> ids = tokenizer->Encode("the<|endoftext|>the");
  EXPECT_THAT(ids, ElementsAre(257, 400, 257));
  EXPECT_TRUE(tokenizer->IsSpecial(400));
  EXPECT_FALSE(tokenizer->IsSpecial(257));
  EXPECT_EQ(tokenizer->Decode(ids, /*skip_special=*/true), "thethe");
  EXPECT_EQ(tokenizer->Decode(ids, /*skip_special=*/false), "the<|endoftext|>the");
  // Longest match first: "<|im_start|>x" wins over "<|im_start|>".
  EXPECT_THAT(tokenizer->Encode("<|im_start|>xy"), ElementsAre(402, tokenizer->Encode("y")[0]));
  EXPECT_THAT(tokenizer->Encode("<|im_start|>y"), ElementsAre(401, tokenizer->Encode("y")[0]));
  // lstrip/rstrip swallow the surrounding spaces.
  EXPECT_THAT(tokenizer->Encode("the  <pad>  the"), ElementsAre(257, 403, 257));
  // A partial special token is ordinary text.
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode("<|endoftext")), "<|endoftext");
  EXPECT_EQ(tokenizer->TokenId("<|im_start|>"), 401);
  EXPECT_EQ(tokenizer->TokenText(400), "<|endoftext|>");
  EXPECT_EQ(tokenizer->TokenText(9999), "");
}

TEST(SpecialIdsTest, InferredWithoutConfig) {
  auto gpt2 = Load(Gpt2Tokenizer());
  ASSERT_NE(gpt2, nullptr);
  EXPECT_EQ(gpt2->eos_id(), 400);
  EXPECT_EQ(gpt2->bos_id(), std::nullopt);  // the ByteLevel post-processor adds nothing
  EXPECT_EQ(gpt2->Encode("the").size(), 1u);
}

TEST(SpecialIdsTest, FromTokenizerConfig) {
  auto tokenizer = Load(QwenTokenizer(), R"({"bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>",
                                             "add_bos_token": true})");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->bos_id(), 401);
  EXPECT_EQ(tokenizer->eos_id(), 402);
  // add_bos_token: true adds no BOS the post-processor does not add (as in
  // transformers 5: DeepSeek-V3's config says true, its post-processor adds
  // nothing, and HF encodes no BOS).
  EXPECT_THAT(tokenizer->Encode("the"), ElementsAre(257));
  EXPECT_THAT(tokenizer->Encode("the", /*add_special=*/false), ElementsAre(257));
}

// The files are read with caps: an endless device (or a file far larger than
// any tokenizer) fails naming the file and the cap, after reading that much.
TEST(TokenizerFilesTest, ReadsAreCapped) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile("/dev/zero");
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(tokenizer.status().message(), AllOf(HasSubstr("tokenizer.json /dev/zero"), HasSubstr("64.0 MiB")));

  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "expertd_tokenizer_caps";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << Gpt2Tokenizer().dump();
  ASSERT_TRUE(Tokenizer::FromFile((dir / "tokenizer.json").string()).ok());
  std::filesystem::create_symlink("/dev/zero", dir / "tokenizer_config.json");
  tokenizer = Tokenizer::FromFile((dir / "tokenizer.json").string());
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(tokenizer.status().message(), AllOf(HasSubstr("tokenizer_config.json"), HasSubstr("16.0 MiB")));
  std::filesystem::remove(dir / "tokenizer_config.json");
  std::filesystem::create_symlink("/dev/zero", dir / "chat_template.jinja");
  tokenizer = Tokenizer::FromFile((dir / "tokenizer.json").string());
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(tokenizer.status().message(), AllOf(HasSubstr("chat_template.jinja"), HasSubstr("1.0 MiB")));
  std::filesystem::remove_all(dir);
}

// --- SentencePiece-style BPE (Mixtral) -------------------------------------

Json MixtralTokenizer(bool byte_fallback = true) {
  Json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  int next_id = 3;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = next_id++;
  }
  for (const char* piece : {"▁", "H", "e", "l", "o", "w", "r", "d"}) vocab[piece] = next_id++;
  const std::vector<std::string> merges = {"▁ H", "l l", "e ll", "▁H ell", "▁Hell o",
                                           "▁ w", "o r", "▁w or", "l d",    "▁wor ld"};
  for (const std::string& merge : merges) {
    const size_t space = merge.find(' ');
    vocab[merge.substr(0, space) + merge.substr(space + 1)] = next_id++;
  }
  return {
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "▁"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", byte_fallback},
        {"vocab", vocab},
        {"merges", merges}}}};
}

TEST(SentencePieceTest, HandWorkedSegmentationWithBos) {
  auto tokenizer = Load(MixtralTokenizer());
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  const std::vector<int32_t> ids = tokenizer->Encode("Hello world");
  EXPECT_THAT(Texts(*tokenizer, ids), ElementsAre("<s>", "▁Hello", "▁world"));
  EXPECT_EQ(tokenizer->Decode(ids), "Hello world");
  EXPECT_EQ(tokenizer->Decode(ids, /*skip_special=*/false), "<s> Hello world");
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("Hello world", /*add_special=*/false)),
              ElementsAre("▁Hello", "▁world"));
  // Each stretch of text after an added token gets its own "▁" (as in HF).
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("Hello</s>world", false)),
              ElementsAre("▁Hello", "</s>", "▁world"));
}

TEST(SentencePieceTest, ByteFallbackForUnknownCharacters) {
  auto tokenizer = Load(MixtralTokenizer());
  ASSERT_NE(tokenizer, nullptr);
  // "i" and the snowman (E2 98 83) are not in the vocabulary.
  const std::vector<int32_t> ids = tokenizer->Encode("Hi \xE2\x98\x83", false);
  EXPECT_THAT(Texts(*tokenizer, ids), ElementsAre("▁H", "<0x69>", "▁", "<0xE2>", "<0x98>", "<0x83>"));
  EXPECT_EQ(tokenizer->Decode(ids), "Hi \xE2\x98\x83");
  for (const std::string_view text : {"  two leading", "tail  ", "a\tb\nc", "日本 😀", "bad \xFF byte"}) {
    EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text)), text) << text;
  }
}

TEST(SentencePieceTest, UnknownWithoutByteFallbackFusesToUnk) {
  auto tokenizer = Load(MixtralTokenizer(/*byte_fallback=*/false));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("Hixyz", false)), ElementsAre("▁H", "<unk>"));
}

// The post-processor decides, not add_bos_token (transformers 5.24 keeps a
// TemplateProcessing BOS under add_bos_token: false, whatever the
// tokenizer_class).
TEST(SentencePieceTest, ConfigDoesNotTurnThePostProcessorsBosOff) {
  auto tokenizer = Load(MixtralTokenizer(), R"({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false})");
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("Hello")), ElementsAre("<s>", "▁Hello"));
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("Hello", /*add_special=*/false)), ElementsAre("▁Hello"));
}

TEST(SentencePieceTest, StreamStripsOnlyTheFirstLeadingSpace) {
  auto tokenizer = Load(MixtralTokenizer());
  ASSERT_NE(tokenizer, nullptr);
  StreamDecoder stream(*tokenizer);
  std::string text;
  for (int32_t id : tokenizer->Encode("Hello world Hello")) text += stream.Next(id);
  text += stream.Flush();
  EXPECT_EQ(text, "Hello world Hello");
}

TEST(SentencePieceTest, MetaspacePreTokenizerWithPrependSchemeFirst) {
  // The newer Mistral/Llama files: no normalizer, Metaspace pre-tokenizer
  // and decoder. "first" prepends "▁" only at the start of the input.
  Json doc = MixtralTokenizer();
  doc["normalizer"] = nullptr;
  doc["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
  doc["decoder"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
  auto tokenizer = Load(doc);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("Hello world", false)), ElementsAre("▁Hello", "▁world"));
  const std::vector<int32_t> ids = tokenizer->Encode("Hello</s>world", false);
  EXPECT_THAT(Texts(*tokenizer, ids), ElementsAre("▁Hello", "</s>", "w", "or", "ld"));
  EXPECT_EQ(tokenizer->Decode(ids), "Helloworld");
  EXPECT_EQ(tokenizer->Decode(tokenizer->Encode("Hello world")), "Hello world");
}

// A byte-level tokenizer whose pre-tokenizer is Split("-", behavior) then
// ByteLevel; the merges make piece boundaries visible in the tokens.
std::vector<std::string> SplitPieces(const std::string& behavior, bool invert, const std::string& text) {
  Json doc = {{"model", ByteLevelModel({"a -", "- b", "- -"})},
              {"pre_tokenizer",
               {{"type", "Sequence"},
                {"pretokenizers",
                 {{{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}},
                  {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
              {"decoder", {{"type", "ByteLevel"}}}};
  auto tokenizer = Load(doc);
  return tokenizer ? Texts(*tokenizer, tokenizer->Encode(text)) : std::vector<std::string>();
}

TEST(PreTokenizerTest, SplitBehaviors) {
  EXPECT_THAT(SplitPieces("Isolated", false, "a-b"), ElementsAre("a", "-", "b"));
  EXPECT_THAT(SplitPieces("Removed", false, "a-b"), ElementsAre("a", "b"));
  EXPECT_THAT(SplitPieces("MergedWithPrevious", false, "a-b"), ElementsAre("a-", "b"));
  EXPECT_THAT(SplitPieces("MergedWithNext", false, "a-b"), ElementsAre("a", "-b"));
  EXPECT_THAT(SplitPieces("Isolated", false, "a--b"), ElementsAre("a", "-", "-", "b"));
  EXPECT_THAT(SplitPieces("Contiguous", false, "a--b"), ElementsAre("a", "--", "b"));
  EXPECT_THAT(SplitPieces("Removed", true, "a-b"), ElementsAre("-"));
}

TEST(PreTokenizerTest, DigitsSplitsEachDigit) {
  Json doc = {{"model", ByteLevelModel({"1 2"})},
              {"pre_tokenizer",
               {{"type", "Sequence"},
                {"pretokenizers",
                 {{{"type", "Digits"}, {"individual_digits", true}},
                  {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
              {"decoder", {{"type", "ByteLevel"}}}};
  auto tokenizer = Load(doc);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("x12")), ElementsAre("x", "1", "2"));
  doc["pre_tokenizer"]["pretokenizers"][0]["individual_digits"] = false;
  tokenizer = Load(doc);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_THAT(Texts(*tokenizer, tokenizer->Encode("x12")), ElementsAre("x", "12"));
}

// --- StreamDecoder -----------------------------------------------------------

TEST(StreamDecoderTest, HoldsSplitCharacterUntilComplete) {
  auto tokenizer = Load(Gpt2Tokenizer());
  ASSERT_NE(tokenizer, nullptr);
  // "é" is C3 A9; with no merges it is two byte tokens.
  const std::vector<int32_t> ids = tokenizer->Encode("\xC3\xA9!");
  ASSERT_EQ(ids.size(), 3u);
  StreamDecoder stream(*tokenizer);
  EXPECT_EQ(stream.Next(ids[0]), "");
  EXPECT_EQ(stream.Next(ids[1]), "\xC3\xA9");
  EXPECT_EQ(stream.Next(ids[2]), "!");
  EXPECT_EQ(stream.Flush(), "");
}

TEST(StreamDecoderTest, FourByteCharacterAcrossFourTokens) {
  auto tokenizer = Load(MixtralTokenizer());
  ASSERT_NE(tokenizer, nullptr);
  // 😀 = F0 9F 98 80 -> four byte-fallback tokens after "▁".
  const std::vector<int32_t> ids = tokenizer->Encode("\xF0\x9F\x98\x80", false);
  ASSERT_EQ(ids.size(), 5u);
  StreamDecoder stream(*tokenizer);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(stream.Next(id));
  EXPECT_THAT(pieces, ElementsAre("", "", "", "", "\xF0\x9F\x98\x80"));
}

TEST(StreamDecoderTest, FlushReplacesInvalidLeftovers) {
  auto tokenizer = Load(Gpt2Tokenizer());
  ASSERT_NE(tokenizer, nullptr);
  StreamDecoder stream(*tokenizer);
  const std::vector<int32_t> ids = tokenizer->Encode("a\xE2\x82");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(stream.Next(ids[0]), "a");
  EXPECT_EQ(stream.Next(ids[1]), "");
  EXPECT_EQ(stream.Next(ids[2]), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");
  // A byte that can never start a character is replaced right away.
  EXPECT_EQ(stream.Next(tokenizer->Encode("\xFF")[0]), "\xEF\xBF\xBD");
  // Special tokens are dropped unless asked for.
  EXPECT_EQ(stream.Next(400), "");
  StreamDecoder keep_special(*tokenizer, /*skip_special=*/false);
  EXPECT_EQ(keep_special.Next(400), "<|endoftext|>");
}

// --- UTF-8 and NFC helpers ---------------------------------------------------

TEST(Utf8Test, ReplacesMaximalInvalidSubparts) {
  EXPECT_EQ(ReplaceInvalidUtf8("a\xE2\x82" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(ReplaceInvalidUtf8("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(ReplaceInvalidUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(ReplaceInvalidUtf8("ok \xF0\x9F\x98\x80"), "ok \xF0\x9F\x98\x80");
  EXPECT_TRUE(IsIncompleteUtf8Prefix("\xF0\x9F\x98"));
  EXPECT_FALSE(IsIncompleteUtf8Prefix("\xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsIncompleteUtf8Prefix("\xE0\x80"));  // can never become valid
}

TEST(NfcTest, ComposesReordersAndKeepsExclusions) {
  EXPECT_EQ(NormalizeNfc("e\xCC\x81"), "\xC3\xA9");                       // e + acute -> é
  EXPECT_EQ(NormalizeNfc("\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");    // Hangul L+V -> 가
  EXPECT_EQ(NormalizeNfc("\xEA\xB0\x80\xE1\x86\xA8"), "\xEA\xB0\x81");    // 가 + T -> 각
  EXPECT_EQ(NormalizeNfc("\xE2\x84\xAB"), "\xC3\x85");                    // Angstrom sign -> Å
  EXPECT_EQ(NormalizeNfc("s\xCC\x87\xCC\xA3"), "\xE1\xB9\xA9");           // s + dot above + dot below -> ṩ
  EXPECT_EQ(NormalizeNfc("\xE0\xA5\x98"), "\xE0\xA4\x95\xE0\xA4\xBC");    // excluded: क़ stays decomposed
  EXPECT_EQ(NormalizeNfc("a\xCC\x81\xCC\x81"), "\xC3\xA1\xCC\x81");       // second acute is blocked
  EXPECT_EQ(NormalizeNfc("e\xFF\xCC\x81"), "e\xFF\xCC\x81");              // invalid byte blocks
  EXPECT_EQ(NormalizeNfc("plain ascii"), "plain ascii");
}

// --- Trainer -----------------------------------------------------------------

tools::BpeTrainerOptions TrainerOptions(tools::BpeTrainerOptions::Style style, int vocab_size = 600) {
  tools::BpeTrainerOptions options;
  options.vocab_size = vocab_size;
  options.special_tokens = {"<|endoftext|>", "<|padding|>"};
  options.style = style;
  return options;
}

class TrainerTest : public ::testing::TestWithParam<tools::BpeTrainerOptions::Style> {};

TEST_P(TrainerTest, DeterministicAndSized) {
  const auto options = TrainerOptions(GetParam());
  absl::StatusOr<Json> first = tools::TrainByteLevelBpe(tools::DefaultTrainingCorpus(), options);
  absl::StatusOr<Json> second = tools::TrainByteLevelBpe(tools::DefaultTrainingCorpus(), options);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->dump(), second->dump());
  auto tokenizer = Load(*first);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->vocab_size(), options.vocab_size);
  EXPECT_EQ(tokenizer->TokenId("<|endoftext|>"), options.vocab_size - 2);
  EXPECT_EQ(tokenizer->TokenId("<|padding|>"), options.vocab_size - 1);
  EXPECT_TRUE(tokenizer->IsSpecial(options.vocab_size - 1));
  EXPECT_EQ(tokenizer->eos_id(), options.vocab_size - 2);
}

TEST_P(TrainerTest, MergesAreValidAndLearned) {
  absl::StatusOr<Json> trained = tools::TrainByteLevelBpe(tools::DefaultTrainingCorpus(), TrainerOptions(GetParam()));
  ASSERT_TRUE(trained.ok()) << trained.status();
  const Json& vocab = (*trained)["model"]["vocab"];
  const Json& merges = (*trained)["model"]["merges"];
  EXPECT_EQ(vocab.size() + 2, 600u);
  EXPECT_GE(merges.size(), vocab.size() - 256);
  for (const Json& merge : merges) {
    std::string left;
    std::string right;
    if (merge.is_string()) {
      const std::string line = merge.get<std::string>();
      left = line.substr(0, line.find(' '));
      right = line.substr(line.find(' ') + 1);
    } else {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    }
    EXPECT_TRUE(vocab.contains(left)) << left;
    EXPECT_TRUE(vocab.contains(right)) << right;
    EXPECT_TRUE(vocab.contains(left + right)) << left << right;
  }
  auto tokenizer = Load(*trained);
  ASSERT_NE(tokenizer, nullptr);
  // Frequent words of the corpus became single tokens.
  EXPECT_EQ(tokenizer->Encode(" the").size(), 1u);
  EXPECT_EQ(tokenizer->Encode(" light").size(), 1u);
  EXPECT_LT(tokenizer->Encode(std::string(tools::DefaultTrainingCorpus())).size(),
            tools::DefaultTrainingCorpus().size() / 2);
}

TEST_P(TrainerTest, TrainedTokenizerRoundTrips) {
  absl::StatusOr<Json> trained = tools::TrainByteLevelBpe(tools::DefaultTrainingCorpus(), TrainerOptions(GetParam()));
  ASSERT_TRUE(trained.ok()) << trained.status();
  auto tokenizer = Load(*trained);
  ASSERT_NE(tokenizer, nullptr);
  for (const std::string& text : {std::string(tools::DefaultTrainingCorpus()), std::string("  x\t\ty \n\n z  "),
                                 std::string("数字 12345 😀 e\xCC\x81"), std::string("\xFF\x00\x80 raw", 7),
                                 std::string("<|endoftext|>after<|padding|>")}) {
    EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text), /*skip_special=*/false), text);
  }
  const size_t digit_tokens = tokenizer->Encode("12345").size();
  if (GetParam() == tools::BpeTrainerOptions::Style::kQwen2) {
    EXPECT_EQ(digit_tokens, 5u);  // Qwen never merges digits
  }
}

INSTANTIATE_TEST_SUITE_P(Styles, TrainerTest,
                         ::testing::Values(tools::BpeTrainerOptions::Style::kGpt2,
                                           tools::BpeTrainerOptions::Style::kQwen2));

TEST(TrainerErrorsTest, RejectsTooSmallVocabAndDuplicateSpecials) {
  auto options = TrainerOptions(tools::BpeTrainerOptions::Style::kGpt2, 257);
  absl::StatusOr<Json> trained = tools::TrainByteLevelBpe("abc", options);
  ASSERT_FALSE(trained.ok());
  EXPECT_THAT(trained.status().message(), HasSubstr("vocab_size 257"));
  options = TrainerOptions(tools::BpeTrainerOptions::Style::kGpt2);
  options.special_tokens = {"<x>", "<x>"};
  EXPECT_FALSE(tools::TrainByteLevelBpe("abc", options).ok());
}

TEST(TrainerErrorsTest, SmallCorpusStopsEarly) {
  absl::StatusOr<Json> trained =
      tools::TrainByteLevelBpe("abab", TrainerOptions(tools::BpeTrainerOptions::Style::kGpt2, 1000));
  ASSERT_TRUE(trained.ok()) << trained.status();
  // "abab" is one word; (a,b) occurs twice, then (ab,ab) only once.
  EXPECT_EQ((*trained)["model"]["merges"], Json::array({"a b"}));
  EXPECT_EQ((*trained)["added_tokens"][0]["id"], 257);
}

TEST(TokenizerConfigJsonTest, LoadsBack) {
  tools::TokenizerConfigOptions options;
  options.eos_token = "<|endoftext|>";
  options.bos_token = "<|endoftext|>";
  options.add_bos_token = true;
  absl::StatusOr<Json> trained =
      tools::TrainByteLevelBpe(tools::DefaultTrainingCorpus(), TrainerOptions(tools::BpeTrainerOptions::Style::kGpt2));
  ASSERT_TRUE(trained.ok());
  auto tokenizer = Load(*trained, tools::MakeTokenizerConfigJson(options));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->bos_id(), 598);
  // The trained tokenizer's ByteLevel post-processor adds no BOS, whatever
  // the config's add_bos_token says.
  EXPECT_NE(tokenizer->Encode("x")[0], 598);
}

// --- Bad input ---------------------------------------------------------------

TEST(BadInputTest, MalformedJson) {
  const std::string message = LoadError(R"({"model": {"type": "BPE", )");
  EXPECT_THAT(message, HasSubstr("test.json"));
  EXPECT_THAT(message, HasSubstr("not valid JSON"));
}

TEST(BadInputTest, UnknownModelType) {
  Json doc = Gpt2Tokenizer();
  doc["model"]["type"] = "WordPiece";
  const std::string message = LoadError(doc.dump());
  EXPECT_THAT(message, HasSubstr("model.type"));
  EXPECT_THAT(message, HasSubstr("WordPiece"));
}

TEST(BadInputTest, UnknownPreTokenizerType) {
  Json doc = QwenTokenizer();
  doc["pre_tokenizer"]["pretokenizers"][1]["type"] = "CharDelimiterSplit";
  const std::string message = LoadError(doc.dump());
  EXPECT_THAT(message, HasSubstr("pre_tokenizer.pretokenizers[1].type"));
  EXPECT_THAT(message, HasSubstr("CharDelimiterSplit"));
}

TEST(BadInputTest, MissingVocab) {
  Json doc = Gpt2Tokenizer();
  doc["model"].erase("vocab");
  const std::string message = LoadError(doc.dump());
  EXPECT_THAT(message, HasSubstr("model.vocab"));
  EXPECT_THAT(message, HasSubstr("missing"));
}

TEST(BadInputTest, OtherProblemsNameTheirKey) {
  Json doc = Gpt2Tokenizer();
  doc["model"]["merges"][0] = "t zz";
  EXPECT_THAT(LoadError(doc.dump()), HasSubstr("model.merges[0]: token \"zz\" is not in model.vocab"));
  doc = Gpt2Tokenizer();
  doc["model"]["vocab"]["the"] = "seven";
  EXPECT_THAT(LoadError(doc.dump()), HasSubstr("model.vocab.the"));
  doc = Gpt2Tokenizer();
  doc["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THAT(LoadError(doc.dump()), HasSubstr("normalizer.type: \"NFKC\" is not supported"));
  doc = Gpt2Tokenizer();
  doc["decoder"] = {{"type", "WordPiece"}};
  EXPECT_THAT(LoadError(doc.dump()), HasSubstr("decoder.type"));
  doc = QwenTokenizer();
  doc["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_THAT(LoadError(doc.dump()), HasSubstr("pre_tokenizer.pretokenizers[0].pattern"));
  doc = Gpt2Tokenizer();
  doc["added_tokens"][0].erase("content");
  EXPECT_THAT(LoadError(doc.dump()), HasSubstr("added_tokens[0].content"));
  EXPECT_THAT(LoadError("[1, 2]"), HasSubstr("top level"));
  EXPECT_THAT(LoadError(Gpt2Tokenizer().dump(), "{nope"), HasSubstr("tokenizer_config.json"));
  EXPECT_THAT(LoadError(Gpt2Tokenizer().dump(), R"({"eos_token": "</s>"})"), HasSubstr("eos_token"));
}

// Found by fuzz/tokenizer_json_fuzz: the id tables are sized by the largest
// id, so one token numbered 2^31 - 1 asked for 2^31 strings.
TEST(BadInputTest, SparseHugeIdsAreRefusedNotAllocated) {
  EXPECT_THAT(LoadError(R"({"model":{"type":"BPE","vocab":{"a":2147483647},"merges":[]}})"),
              HasSubstr("token id 2147483647 is far beyond the 1 tokens defined"));
  Json doc = Gpt2Tokenizer();
  doc["added_tokens"][0]["id"] = 222222221;
  EXPECT_THAT(LoadError(doc.dump()), HasSubstr("token id 222222221"));
}

TEST(FromFileTest, ReadsConfigBesideTokenizerJson) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "expertd_tokenizer_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << QwenTokenizer().dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|im_end|>", "bos_token": null})";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile((dir / "tokenizer.json").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->eos_id(), 402);
  EXPECT_EQ((*tokenizer)->bos_id(), std::nullopt);
  std::filesystem::remove_all(dir);

  absl::StatusOr<std::unique_ptr<Tokenizer>> missing = Tokenizer::FromFile((dir / "nope.json").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.json"));
}

}  // namespace
}  // namespace expertd::tokenizer
