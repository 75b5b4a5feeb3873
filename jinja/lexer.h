#ifndef EXPERTD_JINJA_LEXER_H_
#define EXPERTD_JINJA_LEXER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace expertd::jinja {

// How text around tags is trimmed. Hugging Face compiles chat templates with
// trim_blocks and lstrip_blocks on (the defaults here); Jinja2's own defaults
// are all off. keep_trailing_newline off drops one newline at the very end of
// the template, as Jinja2 does.
struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

struct Token {
  enum class Type {
    kText,  // template text between tags, whitespace control applied
    kVariableBegin,  // {{
    kVariableEnd,  // }}
    kBlockBegin,  // {%
    kBlockEnd,  // %}
    kName,
    kString,  // text holds the value, escapes resolved
    kInt,
    kFloat,
    kOperator,
    kEnd,  // end of the template
  };
  Type type = Type::kEnd;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;  // 1-based, in the template with newlines normalised to \n
  int column = 1;  // 1-based, in bytes
};

// Splits a template into tokens: text runs and the tokens inside {{ }} and
// {% %} tags. Comments are dropped and {% raw %} blocks become text, so the
// parser never sees either. Errors (an unclosed tag, comment or string, a
// character no token starts with) name the line and column.
absl::StatusOr<std::vector<Token>> Lex(std::string_view source, const LexOptions& options);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_LEXER_H_
