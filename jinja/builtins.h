#ifndef EXPERTD_JINJA_BUILTINS_H_
#define EXPERTD_JINJA_BUILTINS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "jinja/callable.h"
#include "jinja/value.h"

namespace expertd::jinja {

// Jinja2's filters, tests and the Python methods of str, dict and list that
// chat templates call, with Python's results (tojson as Hugging Face defines
// it). An unknown name, a wrong argument or a value of the wrong type throws
// TemplateError at args.position.

// `input | name(args)`.
Value ApplyFilter(std::string_view name, const Value& input, const CallArgs& args);
// `input is name(args)`.
bool ApplyTest(std::string_view name, const Value& input, const CallArgs& args);
// `object.name` when it is a method of a str, dict or list (bound to
// object), else nullopt.
std::optional<Value> BoundMethod(const Value& object, std::string_view name);

// Python's `for x in value` as a list: a dict gives its keys, a str its
// characters, undefined nothing; other values throw.
List Iterate(const Value& value, Position position);
// A str's code points as separate UTF-8 strings (Python indexes and slices
// strings by code point).
std::vector<std::string> Characters(const std::string& text);
// Python's len().
int64_t Length(const Value& value, Position position);

// Python's a < b for numbers, strs and lists of them; others throw.
bool Less(const Value& a, const Value& b, Position position);

// Jinja2's escape(): & < > " ' as HTML entities.
std::string HtmlEscape(const std::string& text);

// Throws the error of using an undefined value (Jinja2's UndefinedError).
[[noreturn]] void FailUndefined(const Value& undefined, Position position);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_BUILTINS_H_
