#include "tokenizer/bpe.h"

#include <queue>

#include "absl/strings/str_format.h"
#include "tokenizer/utf8.h"

namespace expertd::tokenizer::internal {
namespace {

// Rejects a model option we do not implement when it is set to a value that
// would change the output.
absl::Status CheckUnsetString(const JsonRef& model, std::string_view key) {
  absl::StatusOr<std::optional<std::string>> value = model.OptionalString(key);
  if (!value.ok()) return value.status();
  if (value->has_value() && !(*value)->empty()) {
    return model.MemberError(key, Concat("is ", Quote(**value), "; only null or \"\" is supported"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BpeModel> BpeModel::FromJson(const JsonRef& model) {
  BpeModel bpe;
  if (absl::Status s = CheckUnsetString(model, "continuing_subword_prefix"); !s.ok()) return s;
  if (absl::Status s = CheckUnsetString(model, "end_of_word_suffix"); !s.ok()) return s;
  if (model.Has("dropout")) {
    const Json& dropout = model.value.at("dropout");
    if (!dropout.is_number() || dropout.get<double>() != 0.0) {
      return model.MemberError("dropout", "BPE dropout is a training option and is not supported; set it to null");
    }
  }
  absl::StatusOr<bool> byte_fallback = model.Bool("byte_fallback", false);
  if (!byte_fallback.ok()) return byte_fallback.status();
  absl::StatusOr<bool> fuse_unk = model.Bool("fuse_unk", false);
  if (!fuse_unk.ok()) return fuse_unk.status();
  absl::StatusOr<bool> ignore_merges = model.Bool("ignore_merges", false);
  if (!ignore_merges.ok()) return ignore_merges.status();
  bpe.byte_fallback_ = *byte_fallback;
  bpe.fuse_unk_ = *fuse_unk;
  bpe.ignore_merges_ = *ignore_merges;

  absl::StatusOr<JsonRef> vocab = model.Object("vocab");
  if (!vocab.ok()) return vocab.status();
  bpe.vocab_.reserve(vocab->value.size());
  for (const auto& [token, id] : vocab->value.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return vocab->MemberError(token, "expected a non-negative 32-bit integer id");
    }
    bpe.vocab_.emplace(token, static_cast<int32_t>(id.get<int64_t>()));
  }

  absl::StatusOr<JsonRef> merges = model.Array("merges");
  if (!merges.ok()) return merges.status();
  bpe.merges_.reserve(merges->value.size());
  for (size_t i = 0; i < merges->value.size(); ++i) {
    const JsonRef entry = merges->Element(i);
    std::string left;
    std::string right;
    if (entry.value.is_string()) {
      // The older "a b" form: tokens cannot contain a space in it, which
      // holds for byte-level and SentencePiece vocabularies ('Ġ', '▁').
      const std::string& line = entry.value.get_ref<const std::string&>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return entry.Error(Concat("expected \"left right\" with exactly one space, found ", Quote(line)));
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (entry.value.is_array() && entry.value.size() == 2 && entry.value[0].is_string() &&
               entry.value[1].is_string()) {
      left = entry.value[0].get<std::string>();
      right = entry.value[1].get<std::string>();
    } else {
      return entry.Error("expected a \"left right\" string or a [\"left\", \"right\"] pair");
    }
    const auto left_it = bpe.vocab_.find(left);
    const auto right_it = bpe.vocab_.find(right);
    const auto merged_it = bpe.vocab_.find(Concat(left, right));
    for (const auto& [it, text] : {std::pair{left_it, left}, std::pair{right_it, right}}) {
      if (it == bpe.vocab_.end()) return entry.Error(Concat("token ", Quote(text), " is not in model.vocab"));
    }
    if (merged_it == bpe.vocab_.end()) {
      return entry.Error(Concat("merged token ", Quote(Concat(left, right)), " is not in model.vocab"));
    }
    // A repeated pair keeps its first (lowest) rank.
    bpe.merges_.try_emplace(PairKey(left_it->second, right_it->second),
                            Merge{static_cast<int32_t>(i), merged_it->second});
  }

  absl::StatusOr<std::optional<std::string>> unk = model.OptionalString("unk_token");
  if (!unk.ok()) return unk.status();
  if (unk->has_value()) {
    const auto it = bpe.vocab_.find(**unk);
    if (it == bpe.vocab_.end()) {
      return model.MemberError("unk_token", Concat(Quote(**unk), " is not in model.vocab"));
    }
    bpe.unk_id_ = it->second;
  }
  if (bpe.byte_fallback_) {
    bpe.byte_token_ids_.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      const auto it = bpe.vocab_.find(absl::StrFormat("<0x%02X>", b));
      if (it != bpe.vocab_.end()) bpe.byte_token_ids_[b] = it->second;
    }
  }
  return bpe;
}

std::optional<int32_t> BpeModel::Find(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::AppendInitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const {
  bool previous_was_unk = false;
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = Utf8UnitLength(word, pos);
    const std::string_view unit = word.substr(pos, len);
    pos += len;
    if (const auto it = vocab_.find(unit); it != vocab_.end()) {
      symbols->push_back(it->second);
      previous_was_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes_known = true;
      for (char c : unit) all_bytes_known = all_bytes_known && byte_token_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes_known) {
        for (char c : unit) symbols->push_back(byte_token_ids_[static_cast<uint8_t>(c)]);
        previous_was_unk = false;
        continue;
      }
    }
    if (unk_id_.has_value()) {
      if (!(fuse_unk_ && previous_was_unk)) symbols->push_back(*unk_id_);
      previous_was_unk = true;
    }
  }
}

void BpeModel::Encode(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto it = vocab_.find(word); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  AppendInitialSymbols(word, &symbols);
  const int n = static_cast<int>(symbols.size());
  if (n <= 1) {
    ids->insert(ids->end(), symbols.begin(), symbols.end());
    return;
  }
  // Symbols form a doubly linked list; a merged-away symbol gets id -1.
  std::vector<int> prev(n);
  std::vector<int> next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int left;  // index of the left symbol; ties go to the leftmost pair
    int32_t merged_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  const auto push_pair = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    const auto it = merges_.find(PairKey(symbols[left], symbols[next[left]]));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.merged_id});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const int left = top.left;
    if (symbols[left] < 0 || next[left] < 0) continue;
    const int right = next[left];
    // Entries go stale when a neighbour merged since they were queued; the
    // pair is still valid only if it still merges into the same token.
    const auto it = merges_.find(PairKey(symbols[left], symbols[right]));
    if (it == merges_.end() || it->second.merged_id != top.merged_id || it->second.rank != top.rank) continue;
    symbols[left] = top.merged_id;
    symbols[right] = -1;
    next[left] = next[right];
    if (next[left] >= 0) prev[next[left]] = left;
    push_pair(prev[left]);
    push_pair(left);
  }
  for (int i = 0; i >= 0; i = next[i]) ids->push_back(symbols[i]);
}

}  // namespace expertd::tokenizer::internal
