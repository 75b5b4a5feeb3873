#include "jinja/template.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "jinja/ast.h"
#include "jinja/error.h"
#include "jinja/interpreter.h"
#include "jinja/parser.h"

namespace expertd::jinja {
namespace {

// Marks a status that carries a template's raise_exception message.
constexpr char kRaisedPayload[] = "type.expertd/jinja-raise-exception";

// Deep enough for any real template (they nest a handful of levels), shallow
// enough that the recursive descent cannot overflow the stack.
constexpr int kMaxParseDepth = 200;

absl::Status ToStatus(const TemplateError& error) {
  if (error.kind() == TemplateError::Kind::kRaised) {
    absl::Status status = absl::InvalidArgumentError(error.what());
    status.SetPayload(kRaisedPayload, absl::Cord("1"));
    return status;
  }
  return absl::InvalidArgumentError(absl::StrCat("template line ", error.position().line, " column ",
                                                 error.position().column, ": ", error.what()));
}

}  // namespace

absl::StatusOr<Template> Template::Parse(std::string_view source, const LexOptions& options) {
  absl::StatusOr<std::vector<Token>> tokens = Lex(source, options);
  if (!tokens.ok()) return tokens.status();
  try {
    return Template(std::make_shared<const Body>(ParseTokens(*tokens, kMaxParseDepth)));
  } catch (const TemplateError& error) {
    return ToStatus(error);
  }
}

absl::StatusOr<std::string> Template::Render(const Dict& context, const RenderOptions& options) const {
  try {
    return Interpret(*body_, context, options);
  } catch (const TemplateError& error) {
    return ToStatus(error);
  }
}

bool IsRaisedByTemplate(const absl::Status& status) { return status.GetPayload(kRaisedPayload).has_value(); }

}  // namespace expertd::jinja
