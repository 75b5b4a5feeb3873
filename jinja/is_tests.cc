// Jinja2's tests: `value is name(args)`.
#include "absl/strings/str_cat.h"
#include "jinja/builtins.h"
#include "jinja/text.h"

namespace expertd::jinja {

bool ApplyTest(std::string_view name, const Value& v, const CallArgs& args) {
  auto arg = [&](std::string_view what) -> const Value& { return RequireArg(args, 0, what, name); };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.bool_value();
  if (name == "false") return v.is_bool() && !v.bool_value();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict() && !v.is_namespace();
  // Jinja2's Undefined iterates (as empty), so it passes these two.
  if (name == "iterable") return v.is_list() || v.is_string() || (v.is_dict() && !v.is_namespace()) || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_string() || (v.is_dict() && !v.is_namespace()) || v.is_undefined();
  if (name == "callable") return v.is_callable();
  if (name == "eq" || name == "equalto" || name == "==") return v == arg("other");
  if (name == "ne" || name == "!=") return !(v == arg("other"));
  if (name == "lt" || name == "lessthan" || name == "<") return Less(v, arg("other"), args.position);
  if (name == "gt" || name == "greaterthan" || name == ">") return Less(arg("other"), v, args.position);
  if (name == "le" || name == "<=") return !Less(arg("other"), v, args.position);
  if (name == "ge" || name == ">=") return !Less(v, arg("other"), args.position);
  if (name == "in") {
    const Value& container = arg("seq");
    if (container.is_string()) return container.string_value().find(RequireString(v, args.position, "'in <string>'")) != std::string::npos;
    for (const Value& item : Iterate(container, args.position)) {
      if (item == v) return true;
    }
    return false;
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_int()) FailRender(args.position, absl::StrCat("test '", std::string(name), "' needs an integer, not ", v.TypeName()));
    if (name == "divisibleby") {
      const int64_t d = IntArg(args, 0, "num", 1);
      if (d == 0) FailRender(args.position, "divisibleby 0");
      return v.int_value() % d == 0;
    }
    return (v.int_value() % 2 != 0) == (name == "odd");
  }
  if (name == "sameas") {
    const Value& other = arg("other");
    if (v.kind() != other.kind()) return false;
    switch (v.kind()) {
      case Value::Kind::kNone:
      case Value::Kind::kUndefined:
        return true;
      case Value::Kind::kBool:
        return v.bool_value() == other.bool_value();
      case Value::Kind::kList:
        return &v.list() == &other.list();
      case Value::Kind::kDict:
        return &v.dict() == &other.dict();
      default:
        return v == other;
    }
  }
  if (name == "lower" || name == "upper") {
    const std::string s = v.Str();
    return name == "lower" ? Lower(s) == s : Upper(s) == s;
  }
  FailRender(args.position, absl::StrCat("no test named '", std::string(name), "'"));
}

}  // namespace expertd::jinja
