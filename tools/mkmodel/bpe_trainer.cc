#include "tools/mkmodel/bpe_trainer.h"

#include <algorithm>
#include <queue>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer_json_util.h"

namespace expertd::tools {
namespace {

using Json = nlohmann::json;
using tokenizer::internal::Concat;

Json PreTokenizerJson(BpeTrainerOptions::Style style) {
  if (style == BpeTrainerOptions::Style::kGpt2) {
    return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  }
  return {{"type", "Sequence"},
          {"pretokenizers",
           Json::array({Json{{"type", "Split"},
                             {"pattern", {{"Regex", std::string(tokenizer::internal::kQwen2PreTokenizerRegex)}}},
                             {"behavior", "Isolated"},
                             {"invert", false}},
                        Json{{"type", "ByteLevel"},
                             {"add_prefix_space", false},
                             {"trim_offsets", false},
                             {"use_regex", false}}})}};
}

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

// Incremental pair statistics (the approach of Sennrich et al.'s learn_bpe
// and HF's BpeTrainer): after a merge only the words that contained the pair
// are recounted.
class PairStats {
 public:
  void Add(const Word& word, int word_index, int64_t sign, absl::flat_hash_map<uint64_t, int64_t>* delta) {
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const uint64_t key = PairKey(word.symbols[i], word.symbols[i + 1]);
      (*delta)[key] += sign * word.count;
      if (sign > 0) where_[key].insert(word_index);
    }
  }

  void Apply(const absl::flat_hash_map<uint64_t, int64_t>& delta) {
    for (const auto& [key, change] : delta) {
      if (change == 0) continue;
      const int64_t count = (counts_[key] += change);
      if (count > 0) queue_.push({count, key});
    }
  }

  // The most frequent pair; ties go to the smaller (left, right) ids, which
  // makes training deterministic. Returns count 0 when no pair is left.
  std::pair<uint64_t, int64_t> Best() {
    while (!queue_.empty()) {
      const Entry top = queue_.top();
      const auto it = counts_.find(top.key);
      if (it != counts_.end() && it->second == top.count) return {top.key, top.count};
      queue_.pop();  // stale: the count changed after this entry was queued
    }
    return {0, 0};
  }

  void Retire(uint64_t key) {
    counts_.erase(key);
    where_.erase(key);
  }

  std::vector<int> WordsWith(uint64_t key) const {
    const auto it = where_.find(key);
    if (it == where_.end()) return {};
    std::vector<int> words(it->second.begin(), it->second.end());
    std::sort(words.begin(), words.end());
    return words;
  }

 private:
  struct Entry {
    int64_t count;
    uint64_t key;
    bool operator<(const Entry& other) const {
      // priority_queue pops the greatest: higher count, then smaller key.
      return count != other.count ? count < other.count : key > other.key;
    }
  };
  absl::flat_hash_map<uint64_t, int64_t> counts_;
  absl::flat_hash_map<uint64_t, absl::flat_hash_set<int>> where_;
  std::priority_queue<Entry> queue_;
};

}  // namespace

absl::StatusOr<Json> TrainByteLevelBpe(std::string_view corpus, const BpeTrainerOptions& options) {
  const int special_count = static_cast<int>(options.special_tokens.size());
  if (options.vocab_size < 256 + special_count) {
    return absl::InvalidArgumentError(Concat("BPE vocab_size ", options.vocab_size,
                                                   " is too small: it must hold the 256 byte tokens and the ",
                                                   special_count, " special tokens"));
  }

  std::vector<std::string> tokens;  // by id
  tokenizer::internal::StringIdMap vocab;
  int32_t byte_ids[256];
  for (int i = 0; i < 256; ++i) {
    const uint8_t byte = tokenizer::ByteLevelOrder()[i];
    std::string text;
    tokenizer::AppendByteLevel(std::string_view(reinterpret_cast<const char*>(&byte), 1), &text);
    vocab.emplace(text, i);
    tokens.push_back(std::move(text));
    byte_ids[byte] = i;
  }
  absl::flat_hash_set<std::string> seen_specials;
  for (const std::string& special : options.special_tokens) {
    if (special.empty()) return absl::InvalidArgumentError("BPE special tokens must not be empty");
    if (!seen_specials.insert(special).second) {
      return absl::InvalidArgumentError(Concat("BPE special token \"", special, "\" is listed twice"));
    }
  }

  const Json pre_tokenizer_json = PreTokenizerJson(options.style);
  absl::StatusOr<tokenizer::internal::PreTokenizer> pre_tokenizer =
      tokenizer::internal::PreTokenizer::FromJson(tokenizer::internal::JsonRef{pre_tokenizer_json, "trainer", ""});
  if (!pre_tokenizer.ok()) return pre_tokenizer.status();

  // Distinct pre-tokenized words with their frequencies, in sorted order so
  // that nothing depends on hash iteration order.
  absl::flat_hash_map<std::string, int64_t> word_counts;
  for (std::string& word : pre_tokenizer->Apply(corpus, /*at_input_start=*/true)) ++word_counts[word];
  std::vector<std::pair<std::string, int64_t>> sorted_words(word_counts.begin(), word_counts.end());
  std::sort(sorted_words.begin(), sorted_words.end());
  std::vector<Word> words;
  words.reserve(sorted_words.size());
  for (const auto& [text, count] : sorted_words) {
    // The words are byte-level spelled: split them back into the byte tokens.
    std::string bytes;
    tokenizer::AppendBytesFromByteLevel(text, &bytes);
    Word word{.symbols = {}, .count = count};
    for (char c : bytes) word.symbols.push_back(byte_ids[static_cast<uint8_t>(c)]);
    words.push_back(std::move(word));
  }

  PairStats stats;
  {
    absl::flat_hash_map<uint64_t, int64_t> delta;
    for (size_t i = 0; i < words.size(); ++i) stats.Add(words[i], static_cast<int>(i), +1, &delta);
    stats.Apply(delta);
  }

  const size_t learned_vocab_size = static_cast<size_t>(options.vocab_size - special_count);
  std::vector<std::pair<std::string, std::string>> merges;
  while (tokens.size() < learned_vocab_size) {
    const auto [key, count] = stats.Best();
    if (count < 2) break;  // a pair seen once teaches nothing about the corpus
    const auto left = static_cast<int32_t>(key >> 32);
    const auto right = static_cast<int32_t>(key & 0xFFFFFFFFu);
    std::string merged = tokens[left] + tokens[right];
    // Different pairs can spell the same string ("a"+"bc", "ab"+"c"); the
    // token is then shared, as in HF's trainer.
    auto [it, inserted] = vocab.try_emplace(merged, static_cast<int32_t>(tokens.size()));
    if (inserted) tokens.push_back(merged);
    const int32_t merged_id = it->second;
    merges.emplace_back(tokens[left], tokens[right]);

    absl::flat_hash_map<uint64_t, int64_t> delta;
    for (int word_index : stats.WordsWith(key)) {
      Word& word = words[word_index];
      std::vector<int32_t> merged_symbols;
      merged_symbols.reserve(word.symbols.size());
      bool changed = false;
      for (size_t i = 0; i < word.symbols.size(); ++i) {
        if (i + 1 < word.symbols.size() && word.symbols[i] == left && word.symbols[i + 1] == right) {
          merged_symbols.push_back(merged_id);
          ++i;
          changed = true;
        } else {
          merged_symbols.push_back(word.symbols[i]);
        }
      }
      if (!changed) continue;
      stats.Add(word, word_index, -1, &delta);
      word.symbols = std::move(merged_symbols);
      stats.Add(word, word_index, +1, &delta);
    }
    stats.Retire(key);
    delta.erase(key);
    stats.Apply(delta);
  }

  Json vocab_json = Json::object();
  for (size_t id = 0; id < tokens.size(); ++id) vocab_json[tokens[id]] = id;
  const bool qwen = options.style == BpeTrainerOptions::Style::kQwen2;
  Json merges_json = Json::array();
  for (const auto& [left, right] : merges) {
    // Both spellings occur in the wild; GPT-2-style files use "a b" strings
    // and newer (Qwen) files use pairs. Byte-level tokens never hold a space.
    if (qwen) {
      merges_json.push_back(Json::array({left, right}));
    } else {
      merges_json.push_back(Concat(left, " ", right));
    }
  }
  Json added_tokens = Json::array();
  for (const std::string& special : options.special_tokens) {
    if (vocab.contains(special)) {
      return absl::InvalidArgumentError(
          Concat("BPE special token \"", special, "\" collides with a learned or byte token"));
    }
    added_tokens.push_back({{"id", tokens.size() + added_tokens.size()},
                            {"content", special},
                            {"single_word", false},
                            {"lstrip", false},
                            {"rstrip", false},
                            {"normalized", false},
                            {"special", true}});
  }

  Json model = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", qwen ? Json("") : Json(nullptr)},
                {"end_of_word_suffix", qwen ? Json("") : Json(nullptr)},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", std::move(vocab_json)},
                {"merges", std::move(merges_json)}};
  Json post_processor = {{"type", "ByteLevel"},
                         {"add_prefix_space", !qwen},
                         {"trim_offsets", !qwen},
                         {"use_regex", !qwen}};
  Json decoder = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  return Json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", std::move(added_tokens)},
              {"normalizer", nullptr},
              {"pre_tokenizer", pre_tokenizer_json},
              {"post_processor", std::move(post_processor)},
              {"decoder", std::move(decoder)},
              {"model", std::move(model)}};
}

std::string MakeTokenizerConfigJson(const TokenizerConfigOptions& options) {
  nlohmann::ordered_json config;
  const auto token_or_null = [](const std::optional<std::string>& token) {
    return token.has_value() ? nlohmann::ordered_json(*token) : nlohmann::ordered_json(nullptr);
  };
  config["add_bos_token"] = options.add_bos_token;
  config["add_eos_token"] = false;
  config["bos_token"] = token_or_null(options.bos_token);
  config["eos_token"] = token_or_null(options.eos_token);
  config["pad_token"] = token_or_null(options.pad_token);
  config["clean_up_tokenization_spaces"] = false;
  config["model_max_length"] = options.model_max_length;
  config["tokenizer_class"] = "PreTrainedTokenizerFast";
  return config.dump(2) + "\n";
}

std::string_view DefaultTrainingCorpus() {
  // Original text written for expertd; no rights reserved.
  static constexpr std::string_view kCorpus = R"corpus(The Keeper of the North Light

The lighthouse stood on a low shelf of rock, two miles from the nearest village. It was built in 1871, and for one hundred and forty-three years a keeper lived there. The last of them was a woman named Ada Morrow, who kept a logbook in a careful, slanted hand.

"Wind from the west, 24 knots. Rain at 6:15. The lamp was lit at 4:52 in the afternoon, and it burned until 7:10 the next morning." That was a typical entry. Most days were like that: wind, rain, the lamp, the sea.

She didn't mind the quiet. "It's not lonely," she told a visitor once, "it's only far." The visitor had come out on the supply boat, which arrived every 14 days if the weather allowed. He asked her what she did all day. She laughed. "I'm cleaning the glass, I'm winding the clock, I'm painting whatever the salt has eaten. I'll tell you what I don't do: I don't sit still."

In the winter of 1998 the storms came one after another. The log for January shows 11 days of gales. On the 19th the boat could not land, and on the 20th it could not even leave the harbour. Ada counted her stores: 9 tins of beans, 6 of peaches, 3 loaves, a sack of potatoes, and 40 litres of water in the cistern. "We've had worse," she wrote, though there was no "we" on the island but her and the cat.

The cat was called Pilot. He had come with the previous keeper and refused to leave with him. He slept on the warm stones beside the stove and woke only for fish.

When the boat finally came on the 26th, the captain found her on the gallery, polishing the brass rail as if nothing had happened. "You're all right, then?" he called up. "Of course I'm all right," she said. "The light never went out. That's the whole job, isn't it? You keep the light."

A Note on Measurements

The tower was 31 metres tall, with 117 steps from the door to the lamp room. The lens was a first-order Fresnel lens, 2.6 metres high, made of 1,024 prisms of glass. On a clear night its beam could be seen from 22 nautical miles away. The clockwork that turned it had to be wound every 4 hours; a heavy weight of 180 kilograms fell slowly down the centre of the tower and drove the gears.

In 2014 the light was automated. A small electric lamp, no larger than a teacup, replaced the old burner, and a solar panel on the roof charged its batteries. The lens still turns, but now a motor turns it. Nobody lives on the rock any more.

Letters

Dear Ada,
Thank you for your letter of the 3rd. We were glad to hear that the new paint has held up through the autumn. The board has agreed to send two extra barrels of oil, and a new pair of boots, size 7. Please let us know if there is anything else you need before the spring.
Yours sincerely,
T. Hale, Secretary

Dear Mr. Hale,
The boots arrived and they fit. The oil arrived too, though one barrel had a dent in it. I have checked it and it does not leak. There is nothing else I need, except perhaps a newer almanac: mine is from 1996, and the tide tables are starting to disagree with the sea.
With thanks,
A. Morrow

Things She Wrote in the Margins

- The gulls are back. There are 57 nests on the east ledge this year, up from 41.
- Saw a seal at 10:30. It watched me for a long time and then went away.
- The clock is running 2 minutes fast. Adjusted it.
- Found a bottle on the shore with a note inside. It said only: "Hello from a boat." I wrote back and threw it in again.
- Fog all day. Sounded the horn every 30 seconds, 2,880 times in all. My ears are ringing.
- Pilot caught a fish by himself. He is very proud.

What Remains

People still visit the island in summer, when the sea is calm. They climb the 117 steps and look out at the water, and they read the logbooks, which are kept in a glass case in the old kitchen. The last entry is dated 30 June 2014. It reads: "Lamp lit at 9:41. Wind light, from the south. The new light works well. I'm leaving in the morning. Somebody should feed the gulls."

Under it, in a different hand, someone has added: "We did."
)corpus";
  return kCorpus;
}

}  // namespace expertd::tools
