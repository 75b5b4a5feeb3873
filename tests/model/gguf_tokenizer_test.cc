// TokenizerFromGguf: the bundled model's vocabulary as GGUF
// (testdata/olmoe_kjv_tokenizer.gguf, written by hf_to_gguf.py's converter
// through make_gguf_tokenizer_fixture.py) must tokenize exactly as
// models/olmoe-kjv/tokenizer.json does; then small vocabularies written here
// for the rules the bundled one does not reach, and refusals naming the key.

#include "model/gguf_tokenizer.h"

#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/gguf_metadata_file.h"
#include "tokenizer/tokenizer.h"

namespace expertd::model {
namespace {

using ::expertd::testing::GgufMetadataFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(GgufTokenizer, BundledVocabularyTokenizesAsItsTokenizerJson) {
  auto from_json = tokenizer::Tokenizer::FromFile(std::string(EXPERTD_MODEL_DIR) + "/tokenizer.json");
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  auto gguf = formats::GgufFile::Open(EXPERTD_GGUF_TOKENIZER);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto from_gguf = TokenizerFromGguf(**gguf);
  ASSERT_TRUE(from_gguf.ok()) << from_gguf.status();
  const tokenizer::Tokenizer& a = **from_json;
  const tokenizer::Tokenizer& b = **from_gguf;

  EXPECT_EQ(a.vocab_size(), b.vocab_size());
  EXPECT_EQ(a.bos_id(), b.bos_id());
  EXPECT_EQ(a.eos_id(), b.eos_id());
  EXPECT_EQ(a.chat_template(), b.chat_template());
  for (int32_t id = 0; id < a.vocab_size(); ++id) {
    ASSERT_EQ(a.TokenText(id), b.TokenText(id)) << "token " << id;
    ASSERT_EQ(a.IsSpecial(id), b.IsSpecial(id)) << "token " << id;
  }

  // The held-out chapters line by line (text the tokenizer was not trained
  // on), plus what a byte-level BPE must survive: specials written literally,
  // whitespace runs, digits, contractions, accents, CJK and emoji.
  std::vector<std::string> texts = {
      "<|endoftext|>In the beginning<|padding|>",
      "  two spaces,\tand a tab\n\nthen 1234567 and 3.14",
      "I'll say it's theirs, they've done; we'd, you're, he's",
      "Ämter café naïve — 日本語テキスト 😀👍🏽",
      "",
      " ",
  };
  std::istringstream heldout(ReadAll(std::string(EXPERTD_MODEL_DIR) + "/heldout.txt"));
  std::string line;
  int lines = 0;
  while (std::getline(heldout, line) && lines < 400) {
    texts.push_back(line);
    ++lines;
  }
  ASSERT_GT(lines, 100);
  for (const std::string& text : texts) {
    for (bool add_special : {true, false}) {
      const std::vector<int32_t> ids = a.Encode(text, add_special);
      ASSERT_EQ(ids, b.Encode(text, add_special)) << text;
      for (bool skip_special : {true, false}) {
        ASSERT_EQ(a.Decode(ids, skip_special), b.Decode(ids, skip_special)) << text;
      }
    }
  }
}

// A byte-level vocabulary of single characters, "ab" (from the merge
// "a b"), a control, a user-defined and an unused token.
GgufMetadataFile SmallVocabulary(const std::string& pre = "gpt-2") {
  GgufMetadataFile f;
  f.Str("tokenizer.ggml.model", "gpt2")
      .Str("tokenizer.ggml.pre", pre)
      .StrArray("tokenizer.ggml.tokens", {"a", "b", "ab", "Ġ", "<|end|>", "<tool>", "[PAD6]", "c"})
      .I32Array("tokenizer.ggml.token_type", {1, 1, 1, 1, 3, 4, 5, 1})
      .StrArray("tokenizer.ggml.merges", {"a b"});
  return f;
}

absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> Build(const GgufMetadataFile& metadata) {
  auto file = metadata.Open();
  if (!file.ok()) return file.status();
  return TokenizerFromGguf(**file);
}

TEST(GgufTokenizer, TokenTypesBecomeVocabularyAddedAndSpecialTokens) {
  auto tokenizer = Build(SmallVocabulary()
                             .U32("tokenizer.ggml.bos_token_id", 4)
                             .U32("tokenizer.ggml.eos_token_id", 4)
                             .Bool("tokenizer.ggml.add_bos_token", true)
                             .Str("tokenizer.chat_template", "{{ messages }}"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const tokenizer::Tokenizer& t = **tokenizer;
  EXPECT_EQ(t.bos_id(), 4);
  EXPECT_EQ(t.eos_id(), 4);
  EXPECT_EQ(t.chat_template(), "{{ messages }}");
  EXPECT_TRUE(t.IsSpecial(4));    // control
  EXPECT_FALSE(t.IsSpecial(5));   // user-defined: matched in text, but not special
  EXPECT_EQ(t.TokenText(6), "");  // unused: left out
  EXPECT_FALSE(t.TokenId("[PAD6]").has_value());
  // BOS first (add_bos_token), "ab" merged, the added tokens matched whole.
  EXPECT_THAT(t.Encode("ab<tool>c<|end|>"), ElementsAre(4, 2, 5, 7, 4));
  EXPECT_THAT(t.Encode("ab", /*add_special=*/false), ElementsAre(2));
  EXPECT_EQ(t.Decode({2, 5, 7, 4}, /*skip_special=*/true), "ab<tool>c");
}

TEST(GgufTokenizer, QwenAndLlama3PreTokenizersSplitDigitsTheirWay) {
  // Qwen splits digits one by one, Llama 3 in runs of up to three, GPT-2
  // keeps a run whole; with single-digit tokens only, the ids show the split
  // only through Decode, so the check is that each builds and round-trips.
  for (const std::string pre : {"qwen2", "llama-bpe", "olmo", "deepseek-r1-qwen"}) {
    GgufMetadataFile f;
    f.Str("tokenizer.ggml.model", "gpt2")
        .Str("tokenizer.ggml.pre", pre)
        .StrArray("tokenizer.ggml.tokens", {"1", "2", "12", "Ġ"})
        .StrArray("tokenizer.ggml.merges", {"1 2"});
    auto tokenizer = Build(f);
    ASSERT_TRUE(tokenizer.ok()) << pre << ": " << tokenizer.status();
    const std::vector<int32_t> ids = (*tokenizer)->Encode("1212", false);
    EXPECT_EQ((*tokenizer)->Decode(ids), "1212") << pre;
    if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
      EXPECT_THAT(ids, ElementsAre(0, 1, 0, 1)) << pre;  // one digit per piece: "12" never merges
    } else if (pre == "llama-bpe") {
      EXPECT_THAT(ids, ElementsAre(2, 0, 1)) << pre;  // "121" | "2"
    } else {
      EXPECT_THAT(ids, ElementsAre(2, 2)) << pre;  // the whole run
    }
  }
}

// A byte-level vocabulary of `tokens` whose last one is made by the one
// merge `merge`: whether a text ends up with it shows whether the
// pre-tokenizer cut inside it.
std::vector<int32_t> EncodeWith(const std::string& pre, const std::vector<std::string>& tokens,
                                const std::string& merge, const std::string& text) {
  GgufMetadataFile f;
  f.Str("tokenizer.ggml.model", "gpt2")
      .Str("tokenizer.ggml.pre", pre)
      .StrArray("tokenizer.ggml.tokens", tokens)
      .StrArray("tokenizer.ggml.merges", {merge});
  auto tokenizer = Build(f);
  EXPECT_TRUE(tokenizer.ok()) << pre << ": " << tokenizer.status();
  if (!tokenizer.ok()) return {};
  return (*tokenizer)->Encode(text, /*add_special=*/false);
}

TEST(GgufTokenizer, Gpt4oAndDeepSeekLlmSplitTheirWay) {
  // gpt-4o cuts a lower-case letter from a following capital (CamelCase
  // words); Llama 3 keeps a letter run whole.
  EXPECT_THAT(EncodeWith("gpt-4o", {"a", "B", "aB"}, "a B", "aB"), ElementsAre(0, 1));
  EXPECT_THAT(EncodeWith("llama-bpe", {"a", "B", "aB"}, "a B", "aB"), ElementsAre(2));
  // gpt-4o keeps a contraction on its word; Llama 3 splits it off.
  EXPECT_THAT(EncodeWith("gpt-4o", {"a", "'", "s", "a'"}, "a '", "a's"), ElementsAre(3, 2));
  EXPECT_THAT(EncodeWith("llama-bpe", {"a", "'", "s", "a'"}, "a '", "a's"), ElementsAre(0, 1, 2));
  // gpt-4o: digits in runs of up to three; DeepSeek-LLM: the whole run.
  EXPECT_THAT(EncodeWith("gpt-4o", {"1", "2", "12"}, "1 2", "1212"), ElementsAre(2, 0, 1));
  EXPECT_THAT(EncodeWith("deepseek-llm", {"1", "2", "12"}, "1 2", "1212"), ElementsAre(2, 2));
  // DeepSeek-LLM isolates every newline; GPT-2 keeps a run of them.
  EXPECT_THAT(EncodeWith("deepseek-llm", {"Ċ", "ĊĊ"}, "Ċ Ċ", "\n\n"), ElementsAre(0, 0));
  EXPECT_THAT(EncodeWith("gpt-2", {"Ċ", "ĊĊ"}, "Ċ Ċ", "\n\n"), ElementsAre(1));
  // DeepSeek-LLM gives no digit run a leading space; GPT-2 does.
  EXPECT_THAT(EncodeWith("deepseek-llm", {"Ġ", "1", "Ġ1"}, "Ġ 1", " 1"), ElementsAre(0, 1));
  EXPECT_THAT(EncodeWith("gpt-2", {"Ġ", "1", "Ġ1"}, "Ġ 1", " 1"), ElementsAre(2));
}

TEST(GgufTokenizer, Llama3TakesAPieceFoundWholeWithoutMerging) {
  // "abc" is a token no merge builds: Llama 3 (ignore_merges) uses it whole,
  // GPT-2 merges what its merges allow.
  for (const std::string pre : {"llama-bpe", "gpt-2"}) {
    GgufMetadataFile f;
    f.Str("tokenizer.ggml.model", "gpt2")
        .Str("tokenizer.ggml.pre", pre)
        .StrArray("tokenizer.ggml.tokens", {"a", "b", "c", "ab", "abc"})
        .StrArray("tokenizer.ggml.merges", {"a b"});
    auto tokenizer = Build(f);
    ASSERT_TRUE(tokenizer.ok()) << pre << ": " << tokenizer.status();
    if (pre == "llama-bpe") {
      EXPECT_THAT((*tokenizer)->Encode("abc", false), ElementsAre(4));
    } else {
      EXPECT_THAT((*tokenizer)->Encode("abc", false), ElementsAre(3, 2));
    }
  }
}

// A SentencePiece vocabulary (tokenizer.ggml.model "llama"): <unk>, <s>,
// </s>, the byte tokens of "€", pieces with scores that do not follow their
// ids, and a user-defined token.
GgufMetadataFile SentencePieceVocabulary() {
  GgufMetadataFile f;
  f.Str("tokenizer.ggml.model", "llama")
      .StrArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "<0xE2>", "<0x82>", "<0xAC>", "▁", "a", "b", "c",
                                          "ab", "bc", "▁a", "<tool>"})
      .I32Array("tokenizer.ggml.token_type", {2, 3, 3, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1, 4})
      .F32Array("tokenizer.ggml.scores", {0, 0, 0, 0, 0, 0, -1, -2, -3, -4, -5, -1, -6, 0});
  return f;
}

TEST(GgufTokenizer, SentencePieceMergesTheBestScoringPieceFirst) {
  // No special ids, add_bos or add_space_prefix keys: llama.cpp's defaults
  // (<unk> 0, <s> 1, </s> 2, BOS added, a space before the text).
  auto tokenizer = Build(SentencePieceVocabulary());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const tokenizer::Tokenizer& t = **tokenizer;
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_TRUE(t.IsSpecial(0));
  EXPECT_TRUE(t.IsSpecial(1));
  EXPECT_FALSE(t.IsSpecial(13));
  // "▁abc": "bc" (score -1) merges before "ab" (-5) although its id is
  // higher, then "▁a" (-6); "abc" is no piece, so that is all.
  EXPECT_THAT(t.Encode("abc"), ElementsAre(1, 12, 11));
  EXPECT_EQ(t.Decode({12, 11}), "abc");  // the prefix space comes off again
  // "€" is no piece: its UTF-8 bytes; "x" has no byte token either: <unk>.
  EXPECT_THAT(t.Encode("a€", false), ElementsAre(12, 3, 4, 5));
  EXPECT_EQ(t.Decode({12, 3, 4, 5}), "a€");
  EXPECT_THAT(t.Encode("x", false), ElementsAre(6, 0));
  // Special and user-defined tokens are matched in the text, and the text
  // after each gets its own prefix space, as llama.cpp does.
  EXPECT_THAT(t.Encode("<s>a</s>", false), ElementsAre(1, 12, 2));
  EXPECT_THAT(t.Encode("a<tool>b", false), ElementsAre(12, 13, 6, 8));
  EXPECT_EQ(t.Decode({1, 12, 2}, /*skip_special=*/false), "<s> a</s>");
  EXPECT_EQ(t.Decode({1, 12, 2}, /*skip_special=*/true), "a");
}

TEST(GgufTokenizer, SentencePieceWithoutSpacePrefixOrBos) {
  auto tokenizer = Build(SentencePieceVocabulary()
                             .Bool("tokenizer.ggml.add_space_prefix", false)
                             .Bool("tokenizer.ggml.add_bos_token", false)
                             .U32("tokenizer.ggml.bos_token_id", 2)
                             .U32("tokenizer.ggml.eos_token_id", 1));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const tokenizer::Tokenizer& t = **tokenizer;
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_THAT(t.Encode("abc"), ElementsAre(7, 11));
  EXPECT_THAT(t.Encode(" a"), ElementsAre(12));
  EXPECT_EQ(t.Decode({6, 7}), " a");  // nothing to strip
}

TEST(GgufTokenizer, RefusalsNameTheKey) {
  auto message = [](const GgufMetadataFile& f) { return std::string(Build(f).status().message()); };
  EXPECT_THAT(message(GgufMetadataFile().Str("tokenizer.ggml.model", "t5")),
              AllOf(HasSubstr("tokenizer.ggml.model 't5'"), HasSubstr("'gpt2'"), HasSubstr("'llama'")));
  EXPECT_THAT(message(GgufMetadataFile().Str("tokenizer.ggml.model", "none")), HasSubstr("no vocabulary"));
  EXPECT_THAT(message(GgufMetadataFile()), HasSubstr("'tokenizer.ggml.model' is missing"));
  EXPECT_THAT(message(SmallVocabulary("starcoder")),
              AllOf(HasSubstr("tokenizer.ggml.pre 'starcoder'"), HasSubstr("qwen2"), HasSubstr("gpt-4o"),
                    HasSubstr("deepseek-llm")));
  EXPECT_THAT(message(SmallVocabulary().U32("tokenizer.ggml.eos_token_id", 99)),
              AllOf(HasSubstr("'tokenizer.ggml.eos_token_id' is 99"), HasSubstr("not a token")));
  EXPECT_THAT(message(SmallVocabulary().U32("tokenizer.ggml.bos_token_id", 6)), HasSubstr("unused"));
  EXPECT_THAT(message(SmallVocabulary().Bool("tokenizer.ggml.add_eos_token", true)),
              HasSubstr("add_eos_token"));
  EXPECT_THAT(message(SmallVocabulary().Bool("tokenizer.ggml.add_bos_token", true)),
              HasSubstr("bos_token_id is missing"));

  GgufMetadataFile duplicate;
  duplicate.Str("tokenizer.ggml.model", "gpt2")
      .Str("tokenizer.ggml.pre", "gpt-2")
      .StrArray("tokenizer.ggml.tokens", {"a", "b", "a"})
      .StrArray("tokenizer.ggml.merges", {});
  EXPECT_THAT(message(duplicate), AllOf(HasSubstr("tokenizer.ggml.tokens[2] repeats token 0")));
  GgufMetadataFile short_types;
  short_types.Str("tokenizer.ggml.model", "gpt2")
      .Str("tokenizer.ggml.pre", "gpt-2")
      .StrArray("tokenizer.ggml.tokens", {"a", "b"})
      .I32Array("tokenizer.ggml.token_type", {1})
      .StrArray("tokenizer.ggml.merges", {});
  EXPECT_THAT(message(short_types), HasSubstr("token_type has 1 entries but tokenizer.ggml.tokens has 2"));
  GgufMetadataFile bad_utf8;
  bad_utf8.Str("tokenizer.ggml.model", "gpt2")
      .Str("tokenizer.ggml.pre", "gpt-2")
      .StrArray("tokenizer.ggml.tokens", {"a", "\xff"})
      .StrArray("tokenizer.ggml.merges", {});
  EXPECT_THAT(message(bad_utf8), HasSubstr("tokenizer.ggml.tokens[1] is not valid UTF-8"));
  EXPECT_THAT(message(SentencePieceVocabulary().Bool("tokenizer.ggml.remove_extra_whitespaces", true)),
              HasSubstr("tokenizer.ggml.remove_extra_whitespaces is true"));
  GgufMetadataFile short_scores;
  short_scores.Str("tokenizer.ggml.model", "llama")
      .StrArray("tokenizer.ggml.tokens", {"a", "b"})
      .F32Array("tokenizer.ggml.scores", {0});
  EXPECT_THAT(message(short_scores), HasSubstr("tokenizer.ggml.scores has 1 entries but tokenizer.ggml.tokens has 2"));
  GgufMetadataFile no_scores;
  no_scores.Str("tokenizer.ggml.model", "llama").StrArray("tokenizer.ggml.tokens", {"a", "b"});
  EXPECT_THAT(message(no_scores), HasSubstr("tokenizer.ggml.scores"));
  GgufMetadataFile nan_score;
  nan_score.Str("tokenizer.ggml.model", "llama")
      .StrArray("tokenizer.ggml.tokens", {"a", "b"})
      .F32Array("tokenizer.ggml.scores", {0, std::numeric_limits<float>::quiet_NaN()});
  EXPECT_THAT(message(nan_score), HasSubstr("tokenizer.ggml.scores[1] is nan"));

  GgufMetadataFile bad_merge;
  bad_merge.Str("tokenizer.ggml.model", "gpt2")
      .Str("tokenizer.ggml.pre", "gpt-2")
      .StrArray("tokenizer.ggml.tokens", {"a", "b"})
      .StrArray("tokenizer.ggml.merges", {"a b"});
  EXPECT_THAT(message(bad_merge), HasSubstr("\"ab\" is not in model.vocab"));
}

}  // namespace
}  // namespace expertd::model
