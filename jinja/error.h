#ifndef EXPERTD_JINJA_ERROR_H_
#define EXPERTD_JINJA_ERROR_H_

#include <stdexcept>
#include <string>

#include "jinja/ast.h"

namespace expertd::jinja {

// How the parser and the evaluator fail inside this module. Nearly every step
// of a tree walk can fail (a missing attribute, a bad operand, a limit), so
// they throw instead of threading a Status through each call; Template's
// public functions catch and turn it into an absl::Status naming the template
// line and column, so no exception leaves the module.
class TemplateError : public std::runtime_error {
 public:
  enum class Kind {
    kSyntax,  // the template cannot be parsed
    kRender,  // rendering failed: a type error, an undefined value used, a limit
    kRaised,  // the template called raise_exception(message)
  };
  TemplateError(Kind kind, Position position, const std::string& message)
      : std::runtime_error(message), kind_(kind), position_(position) {}

  Kind kind() const { return kind_; }
  Position position() const { return position_; }

 private:
  Kind kind_;
  Position position_;
};

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_ERROR_H_
