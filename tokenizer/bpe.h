#ifndef EXPERTD_TOKENIZER_BPE_H_
#define EXPERTD_TOKENIZER_BPE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "tokenizer/tokenizer_json_util.h"

namespace expertd::tokenizer::internal {

// The "model" of a tokenizer.json of type BPE (Sennrich et al. 2016, as HF
// tokenizers implements it): a vocabulary, merge rules ranked by the order
// they were learned, and what to do with characters outside the vocabulary.
class BpeModel {
 public:
  // Parses model.vocab, model.merges ("a b" strings or ["a", "b"] pairs),
  // unk_token, byte_fallback, fuse_unk and ignore_merges. Options that change
  // the output and are not implemented (dropout, continuing_subword_prefix,
  // end_of_word_suffix) are errors.
  static absl::StatusOr<BpeModel> FromJson(const JsonRef& model);

  // Appends the ids of one pre-token. Characters are the initial symbols;
  // the adjacent pair whose merge has the lowest rank is merged first (ties:
  // leftmost), until no pair has a merge. A character missing from the vocab
  // becomes its <0xNN> byte tokens when byte_fallback is set, else the unk
  // token, else it is dropped (HF does the same).
  void Encode(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> Find(std::string_view token) const;
  const StringIdMap& vocab() const { return vocab_; }
  size_t merge_count() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void AppendInitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const;

  StringIdMap vocab_;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  // Ids of the <0xNN> tokens, -1 where absent; filled when byte_fallback.
  std::vector<int32_t> byte_token_ids_;
};

}  // namespace expertd::tokenizer::internal

#endif  // EXPERTD_TOKENIZER_BPE_H_
