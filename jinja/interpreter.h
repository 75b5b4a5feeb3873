#ifndef EXPERTD_JINJA_INTERPRETER_H_
#define EXPERTD_JINJA_INTERPRETER_H_

#include <string>

#include "jinja/ast.h"
#include "jinja/template.h"
#include "jinja/value.h"

namespace expertd::jinja {

// Walks a parsed template with `context` as its top-level variables and
// returns the text. Throws TemplateError (kRender or kRaised).
std::string Interpret(const Body& body, const Dict& context, const RenderOptions& options);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_INTERPRETER_H_
