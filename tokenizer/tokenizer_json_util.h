#ifndef EXPERTD_TOKENIZER_TOKENIZER_JSON_UTIL_H_
#define EXPERTD_TOKENIZER_TOKENIZER_JSON_UTIL_H_

// Checked access to tokenizer.json values. Every failure becomes an
// InvalidArgument status naming the file and the key path
// ("tokenizer.json: pre_tokenizer.pretokenizers[1].type: ..."), so a user can
// find the offending entry; nothing here throws.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace expertd::tokenizer::internal {

using Json = nlohmann::json;

// Concatenates strings and numbers. Debian's Abseil is built with its own
// absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), so absl::StrCat
// does not take the std::string_view this module uses throughout.
template <typename... Args>
std::string Concat(const Args&... args) {
  std::string out;
  const auto append = [&out](const auto& arg) {
    using T = std::decay_t<decltype(arg)>;
    if constexpr (std::is_convertible_v<const T&, std::string_view>) {
      out.append(std::string_view(arg));
    } else {
      static_assert(std::is_arithmetic_v<T>, "Concat takes strings and numbers");
      out.append(std::to_string(arg));
    }
  };
  (append(args), ...);
  return out;
}

// Hash and equality for std::string keys that also accept std::string_view
// lookups without building a std::string (absl's own string hash takes only
// absl::string_view here, see Concat).
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const { return std::hash<std::string_view>()(text); }
};
struct StringViewEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};
// Token text -> id.
using StringIdMap = absl::flat_hash_map<std::string, int32_t, StringViewHash, StringViewEq>;

// A value together with where it was found.
struct JsonRef {
  const Json& value;
  std::string_view source;  // file name (or caller-given name) for messages
  std::string path;         // dotted key path inside the document; "" for the root

  JsonRef Child(std::string_view key) const;  // value[key], which must exist
  JsonRef Element(size_t index) const;        // value[index], which must exist
  std::string PathOf(std::string_view key) const;
  std::string Describe() const;  // "<source>: <path>" or "<source>" at the root

  absl::Status Error(std::string_view problem) const;
  absl::Status MemberError(std::string_view key, std::string_view problem) const;

  bool Has(std::string_view key) const;  // present and not null

  // Accessors for members of an object. "Optional" ones accept a missing key
  // or null; the others require the key.
  absl::StatusOr<std::string> String(std::string_view key) const;
  absl::StatusOr<std::optional<std::string>> OptionalString(std::string_view key) const;
  absl::StatusOr<bool> Bool(std::string_view key, bool default_value) const;
  absl::StatusOr<int64_t> Int(std::string_view key, int64_t default_value) const;
  // A member that must be an object (or an array), returned as a reference.
  absl::StatusOr<JsonRef> Object(std::string_view key) const;
  absl::StatusOr<JsonRef> Array(std::string_view key) const;
  // The "type" member of a component object.
  absl::StatusOr<std::string> Type() const;
};

// A "Sequence" component: its `children_key` array's elements, each handed
// to add(element) in order, stopping at the first error. The normalizer,
// pre-tokenizer and decoder lists of tokenizer.json all nest this way.
template <typename AddChild>
absl::Status ForEachSequenceChild(const JsonRef& sequence, std::string_view children_key, AddChild add) {
  absl::StatusOr<JsonRef> children = sequence.Array(children_key);
  if (!children.ok()) return children.status();
  for (size_t i = 0; i < children->value.size(); ++i) {
    if (absl::Status s = add(children->Element(i)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Quotes a string for an error message, truncating long values.
std::string Quote(std::string_view text);

// Parses `text` as JSON; errors name `source` and the parser's position.
absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view source);

}  // namespace expertd::tokenizer::internal

#endif  // EXPERTD_TOKENIZER_TOKENIZER_JSON_UTIL_H_
