#ifndef EXPERTD_JINJA_CALLABLE_H_
#define EXPERTD_JINJA_CALLABLE_H_

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "jinja/ast.h"
#include "jinja/value.h"

namespace expertd::jinja {

// The arguments of a call, a filter or a test, as Python passes them.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  Position position;  // of the call, for errors

  // Argument `index` by position, else by keyword `name`; null when absent.
  const Value* Get(size_t index, std::string_view name) const {
    if (index < positional.size()) return &positional[index];
    for (const auto& [key, value] : keyword) {
      if (key == name) return &value;
    }
    return nullptr;
  }
};

// Something a template can call: a global (range, namespace,
// raise_exception), a bound method ("text".startswith) or a macro. Failures
// throw TemplateError.
struct Callable {
  std::string name;
  std::function<Value(const CallArgs&)> function;
};

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_CALLABLE_H_
