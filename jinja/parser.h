#ifndef EXPERTD_JINJA_PARSER_H_
#define EXPERTD_JINJA_PARSER_H_

#include <vector>

#include "jinja/ast.h"
#include "jinja/lexer.h"

namespace expertd::jinja {

// Builds the tree of a template from its tokens (Jinja2's grammar and
// operator precedence). Throws TemplateError (kSyntax) naming the token at
// fault; expressions and blocks nested deeper than max_depth are refused, so
// a hostile template cannot exhaust the stack.
Body ParseTokens(const std::vector<Token>& tokens, int max_depth);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_PARSER_H_
