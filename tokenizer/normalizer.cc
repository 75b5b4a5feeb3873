#include "tokenizer/normalizer.h"

#include "tokenizer/unicode_nfc.h"

namespace expertd::tokenizer::internal {

absl::StatusOr<UnicodeRegex> ParsePattern(const JsonRef& owner, std::string* literal_out) {
  absl::StatusOr<JsonRef> pattern = owner.Object("pattern");
  if (!pattern.ok()) return pattern.status();
  const bool is_string = pattern->Has("String");
  const bool is_regex = pattern->Has("Regex");
  if (is_string == is_regex) return pattern->Error("expected exactly one of \"String\" or \"Regex\"");
  absl::StatusOr<std::string> text = pattern->String(is_string ? "String" : "Regex");
  if (!text.ok()) return text.status();
  if (text->empty()) return pattern->Error("the pattern is empty");
  absl::StatusOr<UnicodeRegex> regex = UnicodeRegex::Compile(*text, /*literal=*/is_string);
  if (!regex.ok()) return pattern->Error(std::string(regex.status().message()));
  if (literal_out != nullptr) *literal_out = is_string ? *text : std::string();
  return regex;
}

absl::StatusOr<ReplaceRule> ParseReplaceRule(const JsonRef& step) {
  ReplaceRule rule;
  absl::StatusOr<std::string> content = step.String("content");
  if (!content.ok()) return content.status();
  rule.content = *std::move(content);
  absl::StatusOr<UnicodeRegex> regex = ParsePattern(step, &rule.literal);
  if (!regex.ok()) return regex.status();
  if (rule.literal.empty()) rule.regex = std::move(*regex);
  return rule;
}

std::string ReplaceAll(std::string_view text, const UnicodeRegex* regex, std::string_view literal,
                       std::string_view content) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (regex != nullptr) {
    matches = regex->FindAll(text);
  } else if (!literal.empty()) {
    for (size_t pos = text.find(literal); pos != std::string_view::npos; pos = text.find(literal, pos + literal.size())) {
      matches.emplace_back(pos, pos + literal.size());
    }
  }
  std::string out;
  size_t copied = 0;
  for (const auto& [begin, end] : matches) {
    out.append(text.substr(copied, begin - copied));
    out.append(content);
    copied = end;
  }
  out.append(text.substr(copied));
  return out;
}

absl::Status Normalizer::AddSteps(const JsonRef& normalizer, std::vector<Step>* steps) {
  absl::StatusOr<std::string> type = normalizer.Type();
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    return ForEachSequenceChild(normalizer, "normalizers", [&](const JsonRef& child) { return AddSteps(child, steps); });
  }
  if (*type == "NFC") {
    steps->push_back(Step{.kind = Kind::kNfc});
    return absl::OkStatus();
  }
  if (*type == "Prepend") {
    absl::StatusOr<std::string> prepend = normalizer.String("prepend");
    if (!prepend.ok()) return prepend.status();
    steps->push_back(Step{.kind = Kind::kPrepend, .text = *prepend});
    return absl::OkStatus();
  }
  if (*type == "Replace") {
    absl::StatusOr<ReplaceRule> rule = ParseReplaceRule(normalizer);
    if (!rule.ok()) return rule.status();
    steps->push_back(Step{.kind = Kind::kReplace, .text = rule->literal, .content = rule->content,
                          .regex = std::move(rule->regex)});
    return absl::OkStatus();
  }
  if (*type == "Strip") {
    absl::StatusOr<bool> left = normalizer.Bool("strip_left", true);
    if (!left.ok()) return left.status();
    absl::StatusOr<bool> right = normalizer.Bool("strip_right", true);
    if (!right.ok()) return right.status();
    absl::StatusOr<UnicodeRegex> regex = UnicodeRegex::Compile(R"(\A\s+|\s+\z)");
    if (!regex.ok()) return regex.status();
    steps->push_back(Step{.kind = Kind::kStrip, .regex = std::move(*regex), .strip_left = *left, .strip_right = *right});
    return absl::OkStatus();
  }
  return normalizer.MemberError(
      "type", Concat(Quote(*type), " is not supported; supported normalizers: Sequence, NFC, Prepend, Replace, Strip"));
}

absl::StatusOr<Normalizer> Normalizer::FromJson(const JsonRef& normalizer) {
  Normalizer result;
  if (normalizer.value.is_null()) return result;
  if (absl::Status s = AddSteps(normalizer, &result.steps_); !s.ok()) return s;
  return result;
}

std::string Normalizer::Apply(std::string_view text) const {
  std::string current(text);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kNfc:
        current = NormalizeNfc(current);
        break;
      case Kind::kPrepend:
        // HF prepends only to non-empty text.
        if (!current.empty()) current.insert(0, step.text);
        break;
      case Kind::kReplace:
        current = ReplaceAll(current, step.regex ? &*step.regex : nullptr, step.text, step.content);
        break;
      case Kind::kStrip: {
        size_t begin = 0;
        size_t end = current.size();
        for (const auto& [match_begin, match_end] : step.regex->FindAll(current)) {
          if (match_begin == 0 && step.strip_left) begin = match_end;
          if (match_end == current.size() && step.strip_right) end = std::max(begin, match_begin);
        }
        current = current.substr(begin, end - begin);
        break;
      }
    }
  }
  return current;
}

}  // namespace expertd::tokenizer::internal
