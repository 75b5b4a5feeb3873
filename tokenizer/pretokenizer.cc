#include "tokenizer/pretokenizer.h"

#include <utility>

#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"

namespace expertd::tokenizer::internal {
namespace {

// HF's Whitespace pre-tokenizer keeps runs of word characters and runs of
// other non-space characters.
constexpr std::string_view kWhitespaceRegex = R"(\w+|[^\w\s]+)";
// HF's is_punctuation: ASCII punctuation (which includes symbols like $+<=>)
// or a Unicode P* character.
constexpr std::string_view kPunctuationRegex = R"([\p{P}!-/:-@\[-`{-~])";

}  // namespace

absl::Status PreTokenizer::AddSteps(const JsonRef& pre_tokenizer, std::vector<Step>* steps) {
  absl::StatusOr<std::string> type = pre_tokenizer.Type();
  if (!type.ok()) return type.status();
  const auto parse_behavior = [&](std::string_view default_value) -> absl::StatusOr<SplitBehavior> {
    absl::StatusOr<std::optional<std::string>> name = pre_tokenizer.OptionalString("behavior");
    if (!name.ok()) return name.status();
    const std::string value = name->value_or(std::string(default_value));
    if (value == "Removed") return SplitBehavior::kRemoved;
    if (value == "Isolated") return SplitBehavior::kIsolated;
    if (value == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
    if (value == "MergedWithNext") return SplitBehavior::kMergedWithNext;
    if (value == "Contiguous") return SplitBehavior::kContiguous;
    return pre_tokenizer.MemberError(
        "behavior", Concat(Quote(value), " is not one of Removed, Isolated, MergedWithPrevious, "
                                               "MergedWithNext, Contiguous"));
  };
  const auto add_split = [&](std::string_view pattern, SplitBehavior behavior, bool invert) -> absl::Status {
    absl::StatusOr<UnicodeRegex> regex = UnicodeRegex::Compile(pattern);
    if (!regex.ok()) return regex.status();
    steps->push_back(Step{.kind = Kind::kSplit, .regex = std::move(*regex), .behavior = behavior, .invert = invert});
    return absl::OkStatus();
  };

  if (*type == "Sequence") {
    return ForEachSequenceChild(pre_tokenizer, "pretokenizers", [&](const JsonRef& child) { return AddSteps(child, steps); });
  }
  if (*type == "ByteLevel") {
    absl::StatusOr<bool> add_prefix_space = pre_tokenizer.Bool("add_prefix_space", true);
    if (!add_prefix_space.ok()) return add_prefix_space.status();
    absl::StatusOr<bool> use_regex = pre_tokenizer.Bool("use_regex", true);
    if (!use_regex.ok()) return use_regex.status();
    Step step{.kind = Kind::kByteLevel, .add_prefix_space = *add_prefix_space};
    if (*use_regex) {
      absl::StatusOr<UnicodeRegex> regex = UnicodeRegex::Compile(kGpt2PreTokenizerRegex);
      if (!regex.ok()) return regex.status();
      step.regex = std::move(*regex);
    }
    steps->push_back(std::move(step));
    return absl::OkStatus();
  }
  if (*type == "Split") {
    absl::StatusOr<UnicodeRegex> regex = ParsePattern(pre_tokenizer, nullptr);
    if (!regex.ok()) return regex.status();
    absl::StatusOr<SplitBehavior> behavior = parse_behavior("Isolated");
    if (!behavior.ok()) return behavior.status();
    absl::StatusOr<bool> invert = pre_tokenizer.Bool("invert", false);
    if (!invert.ok()) return invert.status();
    steps->push_back(Step{.kind = Kind::kSplit, .regex = std::move(*regex), .behavior = *behavior, .invert = *invert});
    return absl::OkStatus();
  }
  if (*type == "Digits") {
    absl::StatusOr<bool> individual = pre_tokenizer.Bool("individual_digits", false);
    if (!individual.ok()) return individual.status();
    return add_split("[0-9]", *individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
  }
  if (*type == "Whitespace") return add_split(kWhitespaceRegex, SplitBehavior::kRemoved, /*invert=*/true);
  if (*type == "WhitespaceSplit") return add_split(R"(\s+)", SplitBehavior::kRemoved, false);
  if (*type == "Punctuation") {
    absl::StatusOr<SplitBehavior> behavior = parse_behavior("Isolated");
    if (!behavior.ok()) return behavior.status();
    return add_split(kPunctuationRegex, *behavior, false);
  }
  if (*type == "Metaspace") {
    absl::StatusOr<std::optional<std::string>> replacement = pre_tokenizer.OptionalString("replacement");
    if (!replacement.ok()) return replacement.status();
    Step step{.kind = Kind::kMetaspace, .replacement = replacement->value_or("\u2581")};
    if (step.replacement.empty()) return pre_tokenizer.MemberError("replacement", "must not be empty");
    absl::StatusOr<std::optional<std::string>> scheme = pre_tokenizer.OptionalString("prepend_scheme");
    if (!scheme.ok()) return scheme.status();
    if (scheme->has_value()) {
      if (**scheme == "always") {
        step.prepend_scheme = PrependScheme::kAlways;
      } else if (**scheme == "first") {
        step.prepend_scheme = PrependScheme::kFirst;
      } else if (**scheme == "never") {
        step.prepend_scheme = PrependScheme::kNever;
      } else {
        return pre_tokenizer.MemberError("prepend_scheme",
                                         Concat(Quote(**scheme), " is not one of always, first, never"));
      }
    } else {
      // Files written before prepend_scheme existed carry add_prefix_space.
      absl::StatusOr<bool> add_prefix_space = pre_tokenizer.Bool("add_prefix_space", true);
      if (!add_prefix_space.ok()) return add_prefix_space.status();
      step.prepend_scheme = *add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
    }
    absl::StatusOr<bool> split = pre_tokenizer.Bool("split", true);
    if (!split.ok()) return split.status();
    step.split = *split;
    steps->push_back(std::move(step));
    return absl::OkStatus();
  }
  return pre_tokenizer.MemberError(
      "type", Concat(Quote(*type), " is not supported; supported pre-tokenizers: Sequence, ByteLevel, Split, "
                                         "Digits, Metaspace, Whitespace, WhitespaceSplit, Punctuation"));
}

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const JsonRef& pre_tokenizer) {
  PreTokenizer result;
  if (pre_tokenizer.value.is_null()) return result;
  if (absl::Status s = AddSteps(pre_tokenizer, &result.steps_); !s.ok()) return s;
  return result;
}

namespace {

struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// Applies a split behavior to the alternating list of gaps and delimiter
// matches, mirroring HF's NormalizedString::split.
std::vector<Span> ApplyBehavior(std::vector<Span> spans, SplitBehavior behavior) {
  std::vector<Span> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out.push_back(s);
      }
      return out;
    case SplitBehavior::kIsolated:
      return spans;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back(*it);
        }
        previous_match = it->is_match;
      }
      return std::vector<Span>(out.rbegin(), out.rend());
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return out;
  }
  return spans;
}

std::vector<Span> SpansFromMatches(size_t size, const std::vector<std::pair<size_t, size_t>>& matches, bool invert) {
  std::vector<Span> spans;
  size_t previous = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > previous) spans.push_back({previous, begin, invert});
    spans.push_back({begin, end, !invert});
    previous = end;
  }
  if (previous < size) spans.push_back({previous, size, invert});
  return spans;
}

}  // namespace

void PreTokenizer::SplitPiece(const Piece& piece, const UnicodeRegex& regex, SplitBehavior behavior, bool invert,
                              std::vector<Piece>* out) {
  const std::vector<Span> spans = ApplyBehavior(SpansFromMatches(piece.text.size(), regex.FindAll(piece.text), invert),
                                                behavior);
  for (const Span& span : spans) {
    if (span.end <= span.begin) continue;
    out->push_back(Piece{piece.text.substr(span.begin, span.end - span.begin),
                         piece.at_input_start && span.begin == 0});
  }
}

void PreTokenizer::SplitOnLiteral(const Piece& piece, std::string_view delimiter, SplitBehavior behavior,
                                  std::vector<Piece>* out) {
  std::vector<std::pair<size_t, size_t>> matches;
  for (size_t pos = piece.text.find(delimiter); pos != std::string::npos;
       pos = piece.text.find(delimiter, pos + delimiter.size())) {
    matches.emplace_back(pos, pos + delimiter.size());
  }
  for (const Span& span :
       ApplyBehavior(SpansFromMatches(piece.text.size(), matches, false), behavior)) {
    if (span.end <= span.begin) continue;
    out->push_back(Piece{piece.text.substr(span.begin, span.end - span.begin),
                         piece.at_input_start && span.begin == 0});
  }
}

std::vector<std::string> PreTokenizer::Apply(std::string_view text, bool at_input_start) const {
  std::vector<Piece> pieces;
  if (!text.empty()) pieces.push_back(Piece{std::string(text), at_input_start});
  std::vector<Piece> next;
  for (const Step& step : steps_) {
    next.clear();
    for (Piece& piece : pieces) {
      switch (step.kind) {
        case Kind::kSplit:
          SplitPiece(piece, *step.regex, step.behavior, step.invert, &next);
          break;
        case Kind::kByteLevel: {
          if (step.add_prefix_space && (piece.text.empty() || piece.text[0] != ' ')) piece.text.insert(0, " ");
          const size_t first_new = next.size();
          if (step.regex.has_value()) {
            SplitPiece(piece, *step.regex, SplitBehavior::kIsolated, false, &next);
          } else {
            next.push_back(std::move(piece));
          }
          // Byte-level spelling happens per piece after the split, as in HF.
          for (size_t i = first_new; i < next.size(); ++i) {
            std::string mapped;
            AppendByteLevel(next[i].text, &mapped);
            next[i].text = std::move(mapped);
          }
          break;
        }
        case Kind::kMetaspace: {
          std::string replaced;
          replaced.reserve(piece.text.size() + step.replacement.size());
          for (char c : piece.text) {
            if (c == ' ') {
              replaced.append(step.replacement);
            } else {
              replaced.push_back(c);
            }
          }
          const bool prepend = step.prepend_scheme == PrependScheme::kAlways ||
                               (step.prepend_scheme == PrependScheme::kFirst && piece.at_input_start);
          if (prepend && !replaced.starts_with(step.replacement)) replaced.insert(0, step.replacement);
          Piece replaced_piece{std::move(replaced), piece.at_input_start};
          if (step.split) {
            SplitOnLiteral(replaced_piece, step.replacement, SplitBehavior::kMergedWithNext, &next);
          } else {
            next.push_back(std::move(replaced_piece));
          }
          break;
        }
      }
    }
    pieces.swap(next);
  }
  std::vector<std::string> words;
  words.reserve(pieces.size());
  for (Piece& piece : pieces) words.push_back(std::move(piece.text));
  return words;
}

}  // namespace expertd::tokenizer::internal
