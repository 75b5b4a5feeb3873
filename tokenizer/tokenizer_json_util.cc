#include "tokenizer/tokenizer_json_util.h"


namespace expertd::tokenizer::internal {
namespace {

const char* TypeName(const Json& value) { return value.type_name(); }

}  // namespace

std::string Quote(std::string_view text) {
  constexpr size_t kMaxShown = 60;
  if (text.size() <= kMaxShown) return Concat("\"", text, "\"");
  return Concat("\"", text.substr(0, kMaxShown), "...\"");
}

std::string JsonRef::PathOf(std::string_view key) const {
  return path.empty() ? std::string(key) : Concat(path, ".", key);
}

std::string JsonRef::Describe() const {
  return path.empty() ? std::string(source) : Concat(source, ": ", path);
}

absl::Status JsonRef::Error(std::string_view problem) const {
  return absl::InvalidArgumentError(Concat(Describe(), ": ", problem));
}

absl::Status JsonRef::MemberError(std::string_view key, std::string_view problem) const {
  return absl::InvalidArgumentError(Concat(source, ": ", PathOf(key), ": ", problem));
}

JsonRef JsonRef::Child(std::string_view key) const {
  return JsonRef{value.at(std::string(key)), source, PathOf(key)};
}

JsonRef JsonRef::Element(size_t index) const {
  return JsonRef{value.at(index), source, Concat(path, "[", index, "]")};
}

bool JsonRef::Has(std::string_view key) const {
  if (!value.is_object()) return false;
  auto it = value.find(std::string(key));
  return it != value.end() && !it->is_null();
}

absl::StatusOr<std::string> JsonRef::String(std::string_view key) const {
  if (!value.is_object()) return Error(Concat("expected an object, found ", TypeName(value)));
  auto it = value.find(std::string(key));
  if (it == value.end() || it->is_null()) return MemberError(key, "missing (expected a string)");
  if (!it->is_string()) return MemberError(key, Concat("expected a string, found ", TypeName(*it)));
  return it->get<std::string>();
}

absl::StatusOr<std::optional<std::string>> JsonRef::OptionalString(std::string_view key) const {
  if (!Has(key)) return std::optional<std::string>();
  const Json& member = value.at(std::string(key));
  if (!member.is_string()) return MemberError(key, Concat("expected a string or null, found ", TypeName(member)));
  return std::optional<std::string>(member.get<std::string>());
}

absl::StatusOr<bool> JsonRef::Bool(std::string_view key, bool default_value) const {
  if (!Has(key)) return default_value;
  const Json& member = value.at(std::string(key));
  if (!member.is_boolean()) return MemberError(key, Concat("expected true or false, found ", TypeName(member)));
  return member.get<bool>();
}

absl::StatusOr<int64_t> JsonRef::Int(std::string_view key, int64_t default_value) const {
  if (!Has(key)) return default_value;
  const Json& member = value.at(std::string(key));
  if (!member.is_number_integer()) {
    return MemberError(key, Concat("expected an integer, found ", TypeName(member)));
  }
  return member.get<int64_t>();
}

absl::StatusOr<JsonRef> JsonRef::Object(std::string_view key) const {
  if (!value.is_object()) return Error(Concat("expected an object, found ", TypeName(value)));
  auto it = value.find(std::string(key));
  if (it == value.end() || it->is_null()) return MemberError(key, "missing (expected an object)");
  if (!it->is_object()) return MemberError(key, Concat("expected an object, found ", TypeName(*it)));
  return Child(key);
}

absl::StatusOr<JsonRef> JsonRef::Array(std::string_view key) const {
  if (!value.is_object()) return Error(Concat("expected an object, found ", TypeName(value)));
  auto it = value.find(std::string(key));
  if (it == value.end() || it->is_null()) return MemberError(key, "missing (expected an array)");
  if (!it->is_array()) return MemberError(key, Concat("expected an array, found ", TypeName(*it)));
  return Child(key);
}

absl::StatusOr<std::string> JsonRef::Type() const {
  if (!value.is_object()) return Error(Concat("expected an object with a \"type\", found ", TypeName(value)));
  return String("type");
}

absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view source) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    // nlohmann's message carries the line and column of the syntax error.
    return absl::InvalidArgumentError(Concat(source, ": not valid JSON: ", e.what()));
  }
}

}  // namespace expertd::tokenizer::internal
