#include "tokenizer/token_decoder.h"

#include <utility>

#include "absl/strings/str_join.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/utf8.h"

namespace expertd::tokenizer::internal {
namespace {

// The byte a "<0xNN>" byte-fallback token stands for.
std::optional<uint8_t> ParseByteToken(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token[5] != '>') return std::nullopt;
  int value = 0;
  for (char c : token.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value |= c - 'a' + 10;
    } else {
      return std::nullopt;
    }
  }
  return static_cast<uint8_t>(value);
}

// Strip decoder: removes up to `start` leading and `stop` trailing
// occurrences of the character `content` (counted in characters).
std::string StripChars(const std::string& token, std::string_view content, int start, int stop) {
  size_t begin = 0;
  size_t end = token.size();
  for (int i = 0; i < start && token.compare(begin, content.size(), content) == 0 && begin < end; ++i) {
    begin += content.size();
  }
  for (int i = 0; i < stop && end >= begin + content.size() &&
                  token.compare(end - content.size(), content.size(), content) == 0;
       ++i) {
    end -= content.size();
  }
  return token.substr(begin, end - begin);
}

}  // namespace

absl::Status TokenDecoder::AddSteps(const JsonRef& decoder, std::vector<Step>* steps) {
  absl::StatusOr<std::string> type = decoder.Type();
  if (!type.ok()) return type.status();
  if (*type == "Sequence") {
    return ForEachSequenceChild(decoder, "decoders", [&](const JsonRef& child) { return AddSteps(child, steps); });
  }
  if (*type == "ByteLevel") {
    steps->push_back(Step{.kind = Kind::kByteLevel});
    return absl::OkStatus();
  }
  if (*type == "ByteFallback") {
    steps->push_back(Step{.kind = Kind::kByteFallback});
    return absl::OkStatus();
  }
  if (*type == "Fuse") {
    steps->push_back(Step{.kind = Kind::kFuse});
    return absl::OkStatus();
  }
  if (*type == "Replace") {
    absl::StatusOr<ReplaceRule> rule = ParseReplaceRule(decoder);
    if (!rule.ok()) return rule.status();
    steps->push_back(Step{.kind = Kind::kReplace, .text = rule->literal, .content = rule->content,
                          .regex = std::move(rule->regex)});
    return absl::OkStatus();
  }
  if (*type == "Strip") {
    absl::StatusOr<std::string> content = decoder.String("content");
    if (!content.ok()) return content.status();
    if (content->empty()) return decoder.MemberError("content", "must be one character");
    absl::StatusOr<int64_t> start = decoder.Int("start", 0);
    if (!start.ok()) return start.status();
    absl::StatusOr<int64_t> stop = decoder.Int("stop", 0);
    if (!stop.ok()) return stop.status();
    if (*start < 0 || *start > 1024 || *stop < 0 || *stop > 1024) {
      return decoder.Error("start and stop must be between 0 and 1024");
    }
    steps->push_back(Step{.kind = Kind::kStrip,
                          .text = *content,
                          .strip_start = static_cast<int>(*start),
                          .strip_stop = static_cast<int>(*stop)});
    return absl::OkStatus();
  }
  if (*type == "Metaspace") {
    absl::StatusOr<std::optional<std::string>> replacement = decoder.OptionalString("replacement");
    if (!replacement.ok()) return replacement.status();
    Step step{.kind = Kind::kMetaspace, .text = replacement->value_or("\u2581")};
    if (step.text.empty()) return decoder.MemberError("replacement", "must not be empty");
    absl::StatusOr<std::optional<std::string>> scheme = decoder.OptionalString("prepend_scheme");
    if (!scheme.ok()) return scheme.status();
    if (scheme->has_value()) {
      if (**scheme != "always" && **scheme != "first" && **scheme != "never") {
        return decoder.MemberError("prepend_scheme", Concat(Quote(**scheme), " is not one of always, first, never"));
      }
      step.strip_leading_space = **scheme != "never";
    } else {
      absl::StatusOr<bool> add_prefix_space = decoder.Bool("add_prefix_space", true);
      if (!add_prefix_space.ok()) return add_prefix_space.status();
      step.strip_leading_space = *add_prefix_space;
    }
    steps->push_back(std::move(step));
    return absl::OkStatus();
  }
  return decoder.MemberError(
      "type", Concat(Quote(*type), " is not supported; supported decoders: Sequence, ByteLevel, Replace, "
                                         "ByteFallback, Fuse, Strip, Metaspace"));
}

absl::StatusOr<TokenDecoder> TokenDecoder::FromJson(const JsonRef& decoder) {
  TokenDecoder result;
  if (decoder.value.is_null()) return result;
  result.has_decoder_ = true;
  if (absl::Status s = AddSteps(decoder, &result.steps_); !s.ok()) return s;
  return result;
}

std::string TokenDecoder::Decode(std::vector<std::string> tokens, bool at_text_start, bool at_text_end) const {
  if (!has_decoder_) {
    // HF joins tokens with spaces when there is no decoder; a stream piece
    // that continues the text needs the separator in front of it.
    std::string joined = (!at_text_start && !tokens.empty()) ? std::string(" ") : std::string();
    joined.append(absl::StrJoin(tokens, " "));
    return joined;
  }
  // Each step maps the token list to a new one, as HF's decode_chain does.
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kByteLevel: {
        std::string bytes;
        for (const std::string& token : tokens) {
          if (!AppendBytesFromByteLevel(token, &bytes)) bytes.append(token);
        }
        tokens.assign(1, std::move(bytes));
        break;
      }
      case Kind::kReplace:
        for (std::string& token : tokens) {
          token = ReplaceAll(token, step.regex ? &*step.regex : nullptr, step.text, step.content);
        }
        break;
      case Kind::kByteFallback: {
        std::vector<std::string> out;
        out.reserve(tokens.size());
        bool previous_was_byte = false;
        for (std::string& token : tokens) {
          const std::optional<uint8_t> byte = ParseByteToken(token);
          if (byte.has_value()) {
            // Consecutive byte tokens form one piece so that a character
            // spelled in several bytes stays together.
            if (!previous_was_byte) out.emplace_back();
            out.back().push_back(static_cast<char>(*byte));
          } else {
            out.push_back(std::move(token));
          }
          previous_was_byte = byte.has_value();
        }
        tokens = std::move(out);
        break;
      }
      case Kind::kFuse:
        tokens.assign(1, absl::StrJoin(tokens, ""));
        break;
      case Kind::kStrip:
        // HF strips every token; in a stream only the first piece may lose
        // its start and only the last its end.
        for (size_t i = 0; i < tokens.size(); ++i) {
          const bool strip_start = i > 0 || at_text_start;
          const bool strip_stop = i + 1 < tokens.size() || at_text_end;
          tokens[i] = StripChars(tokens[i], step.text, strip_start ? step.strip_start : 0,
                                 strip_stop ? step.strip_stop : 0);
        }
        break;
      case Kind::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string replaced = ReplaceAll(tokens[i], nullptr, step.text, " ");
          if (i == 0 && at_text_start && step.strip_leading_space && replaced.starts_with(' ')) replaced.erase(0, 1);
          tokens[i] = std::move(replaced);
        }
        break;
    }
  }
  return absl::StrJoin(tokens, "");
}

}  // namespace expertd::tokenizer::internal
