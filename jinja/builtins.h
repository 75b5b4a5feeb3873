#ifndef EXPERTD_JINJA_BUILTINS_H_
#define EXPERTD_JINJA_BUILTINS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "jinja/callable.h"
#include "jinja/value.h"

namespace expertd::jinja {

// Jinja2's filters (filters.cc), tests (is_tests.cc) and the Python methods
// of str and dict that chat templates call (methods.cc), with Python's
// results (tojson as Hugging Face defines it); and the Python operations
// they and the interpreter share (builtins.cc). An unknown name, a wrong
// argument or a value of the wrong type throws TemplateError at
// args.position.

// `input | name(args)`.
Value ApplyFilter(std::string_view name, const Value& input, const CallArgs& args);
// `input is name(args)`.
bool ApplyTest(std::string_view name, const Value& input, const CallArgs& args);
// `object.name` when it is a method of a str or dict (bound to object), else
// nullopt.
std::optional<Value> BoundMethod(const Value& object, std::string_view name);

// Python's `for x in value` as a list: a dict gives its keys, a str its
// characters, undefined nothing; other values throw.
List Iterate(const Value& value, Position position);
// Python's len().
int64_t Length(const Value& value, Position position);
// Python's a < b for numbers, strs and lists of them; others throw.
bool Less(const Value& a, const Value& b, Position position);
// dict.items(): (key, value) tuples.
List Pairs(const Dict& dict);

// Throws a render error at `position`.
[[noreturn]] void FailRender(Position position, const std::string& message);
// Throws the error of using an undefined value (Jinja2's UndefinedError).
[[noreturn]] void FailUndefined(const Value& undefined, Position position);

// Argument `index` (or keyword `name`) as an int; fallback when absent or
// None.
int64_t IntArg(const CallArgs& args, size_t index, std::string_view name, int64_t fallback);
// Argument `index` (or keyword `name`) of `function`, which must be given.
const Value& RequireArg(const CallArgs& args, size_t index, std::string_view name, std::string_view function);
// v's text when it is a str (`what` names the use in the error).
const std::string& RequireString(const Value& v, Position position, std::string_view what);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_BUILTINS_H_
