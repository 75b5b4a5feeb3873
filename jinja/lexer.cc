#include "jinja/lexer.h"

#include <algorithm>
#include <cerrno>
#include <optional>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace expertd::jinja {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }

// Appends code point cp as UTF-8.
void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Lexer {
 public:
  Lexer(std::string source, const LexOptions& options) : src_(std::move(source)), options_(options) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  absl::StatusOr<std::vector<Token>> Run() {
    size_t pos = 0;
    // Whether the last thing consumed ended a line: lstrip_blocks strips
    // the indentation before a tag only when it starts its line.
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t tag = FindTagStart(pos);
      std::string text = src_.substr(pos, tag - pos);
      if (tag == src_.size()) {
        if (!text.empty()) Emit(Token::Type::kText, std::move(text), pos);
        break;
      }
      const char kind = src_[tag + 1];  // '{', '%' or '#'
      const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      } else if (sign != '+' && options_.lstrip_blocks && kind != '{') {
        const size_t line_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if ((line_pos > 0 || line_starting) && line_pos < text.size() &&
            std::all_of(text.begin() + static_cast<std::ptrdiff_t>(line_pos), text.end(), IsSpace)) {
          text.resize(line_pos);
        }
      }
      if (!text.empty()) Emit(Token::Type::kText, std::move(text), pos);
      const size_t body = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      absl::StatusOr<size_t> end = kind == '#' ? SkipComment(tag, body) : LexTag(kind, tag, body);
      if (!end.ok()) return end.status();
      pos = *end;
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    Emit(Token::Type::kEnd, "", src_.size());
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  void LineColumn(size_t offset, int* line, int* column) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const size_t index = static_cast<size_t>(it - line_starts_.begin()) - 1;
    *line = static_cast<int>(index) + 1;
    *column = static_cast<int>(offset - line_starts_[index]) + 1;
  }

  absl::Status Error(size_t offset, std::string_view what) const {
    int line = 0;
    int column = 0;
    LineColumn(offset, &line, &column);
    return absl::InvalidArgumentError(absl::StrCat("template line ", line, " column ", column, ": ", std::string(what)));
  }

  Token& Emit(Token::Type type, std::string text, size_t offset) {
    Token token;
    token.type = type;
    token.text = std::move(text);
    LineColumn(offset, &token.line, &token.column);
    tokens_.push_back(std::move(token));
    return tokens_.back();
  }

  // After a tag's end marker: '-' strips all whitespace that follows,
  // trim_blocks drops one newline after a block or comment ('+' keeps it).
  size_t AfterEnd(size_t end, char sign, bool block_like) const {
    if (sign == '-') {
      while (end < src_.size() && IsSpace(src_[end])) ++end;
    } else if (sign != '+' && block_like && options_.trim_blocks && end < src_.size() && src_[end] == '\n') {
      ++end;
    }
    return end;
  }

  absl::StatusOr<size_t> SkipComment(size_t tag, size_t body) {
    const size_t close = src_.find("#}", body);
    if (close == std::string::npos) return Error(tag, "comment {# is never closed with #}");
    const char sign = close > body && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : '\0';
    return AfterEnd(close + 2, sign, /*block_like=*/true);
  }

  // {% raw %}...{% endraw %}: the text between, untouched.
  std::optional<absl::StatusOr<size_t>> TryRaw(size_t tag, size_t body) {
    size_t p = body;
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && IsNameChar(src_[p + 3]))) return std::nullopt;
    p += 3;
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    char sign = '\0';
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    if (src_.compare(p, 2, "%}") != 0) return std::nullopt;
    size_t start = AfterEnd(p + 2, sign, true);
    for (size_t q = src_.find("{%", start); q != std::string::npos; q = src_.find("{%", q + 1)) {
      size_t r = q + 2;
      const char open_sign = r < src_.size() && (src_[r] == '-' || src_[r] == '+') ? src_[r] : '\0';
      if (open_sign) ++r;
      while (r < src_.size() && IsSpace(src_[r])) ++r;
      if (src_.compare(r, 6, "endraw") != 0) continue;
      r += 6;
      while (r < src_.size() && IsSpace(src_[r])) ++r;
      char close_sign = '\0';
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) close_sign = src_[r++];
      if (src_.compare(r, 2, "%}") != 0) continue;
      std::string text = src_.substr(start, q - start);
      if (open_sign == '-') {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      }
      Emit(Token::Type::kText, std::move(text), start);
      return AfterEnd(r + 2, close_sign, true);
    }
    return absl::StatusOr<size_t>(Error(tag, "{% raw %} is never closed with {% endraw %}"));
  }

  absl::StatusOr<size_t> LexTag(char kind, size_t tag, size_t body) {
    const bool block = kind == '%';
    if (block) {
      if (auto raw = TryRaw(tag, body)) return *raw;
    }
    Emit(block ? Token::Type::kBlockBegin : Token::Type::kVariableBegin, "", tag);
    const char close_first = block ? '%' : '}';
    std::vector<char> brackets;  // closers owed: an end marker inside brackets is an operator
    size_t p = body;
    while (true) {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      if (p >= src_.size()) return Error(tag, block ? "tag {% is never closed with %}" : "tag {{ is never closed with }}");
      if (brackets.empty()) {
        const bool signed_end = (src_[p] == '-' || src_[p] == '+') && src_.compare(p + 1, 1, std::string(1, close_first)) == 0 &&
                                p + 2 < src_.size() && src_[p + 2] == '}';
        const bool plain_end = src_[p] == close_first && p + 1 < src_.size() && src_[p + 1] == '}';
        // '+' before }} is the operator, not whitespace control.
        if ((signed_end && (block || src_[p] == '-')) || plain_end) {
          const char sign = signed_end ? src_[p] : '\0';
          const size_t after = p + (signed_end ? 3 : 2);
          Emit(block ? Token::Type::kBlockEnd : Token::Type::kVariableEnd, "", p);
          return AfterEnd(after, sign, block);
        }
      }
      const char c = src_[p];
      if (IsNameStart(c)) {
        size_t q = p;
        while (q < src_.size() && IsNameChar(src_[q])) ++q;
        Emit(Token::Type::kName, src_.substr(p, q - p), p);
        p = q;
      } else if (IsDigit(c)) {
        absl::StatusOr<size_t> next = LexNumber(p);
        if (!next.ok()) return next.status();
        p = *next;
      } else if (c == '\'' || c == '"') {
        absl::StatusOr<size_t> next = LexString(p);
        if (!next.ok()) return next.status();
        p = *next;
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (std::string_view two : kTwo) {
          if (src_.compare(p, 2, two) == 0) op = std::string(two);
        }
        if (op.empty()) {
          if (std::string_view("+-*/%~<>=()[]{},.:|;!").find(c) == std::string_view::npos) {
            return Error(p, absl::StrCat("unexpected character '", std::string(1, c), "' in a tag"));
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") {
          brackets.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
        } else if (op == ")" || op == "]" || op == "}") {
          if (brackets.empty() || brackets.back() != op[0]) return Error(p, absl::StrCat("unexpected '", op, "'"));
          brackets.pop_back();
        }
        Emit(Token::Type::kOperator, op, p);
        p += op.size();
      }
    }
  }

  absl::StatusOr<size_t> LexNumber(size_t p) {
    size_t q = p;
    auto digits = [&] {
      while (q < src_.size() && (IsDigit(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() && IsDigit(src_[q + 1])))) ++q;
    };
    digits();
    bool is_float = false;
    if (q + 1 < src_.size() && src_[q] == '.' && IsDigit(src_[q + 1])) {
      is_float = true;
      ++q;
      digits();
    }
    if (q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
      size_t r = q + 1;
      if (r < src_.size() && (src_[r] == '+' || src_[r] == '-')) ++r;
      if (r < src_.size() && IsDigit(src_[r])) {
        is_float = true;
        q = r;
        digits();
      }
    }
    std::string text;
    for (size_t i = p; i < q; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    Token& token = Emit(is_float ? Token::Type::kFloat : Token::Type::kInt, text, p);
    if (is_float) {
      token.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      token.int_value = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) return Error(p, "integer literal does not fit in 64 bits");
    }
    return q;
  }

  // A string literal with Python's escapes (\n, \t, \\, \', \", \xXX,
  // \uXXXX, \UXXXXXXXX); an unknown escape stays as written, as in Python.
  absl::StatusOr<size_t> LexString(size_t p) {
    const char quote = src_[p];
    std::string value;
    size_t q = p + 1;
    while (true) {
      if (q >= src_.size()) return Error(p, "string literal is never closed");
      const char c = src_[q];
      if (c == quote) break;
      if (c != '\\' || q + 1 >= src_.size()) {
        value += c;
        ++q;
        continue;
      }
      const char e = src_[q + 1];
      q += 2;
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case 'a': value += '\a'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case '0': value += '\0'; break;
        case '\n': break;  // a line continuation
        case 'x':
        case 'u':
        case 'U': {
          const size_t width = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          const std::string hex = src_.substr(q, width);
          if (hex.size() != width || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
            return Error(q - 2, absl::StrCat("bad \\", std::string(1, e), " escape in a string literal"));
          }
          AppendUtf8(static_cast<uint32_t>(std::strtoul(hex.c_str(), nullptr, 16)), &value);
          q += width;
          break;
        }
        default:
          value += '\\';
          value += e;
      }
    }
    Emit(Token::Type::kString, std::move(value), p);
    return q + 1;
  }

  std::string src_;
  LexOptions options_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(std::string_view source, const LexOptions& options) {
  // Jinja2 reads \r\n and \r as \n, and drops one trailing newline.
  std::string normalised;
  normalised.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalised += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalised += source[i];
    }
  }
  if (!options.keep_trailing_newline && !normalised.empty() && normalised.back() == '\n') normalised.pop_back();
  return Lexer(std::move(normalised), options).Run();
}

}  // namespace expertd::jinja
