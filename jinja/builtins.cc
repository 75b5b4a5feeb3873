#include "jinja/builtins.h"

#include "absl/strings/str_cat.h"
#include "jinja/error.h"
#include "jinja/text.h"

namespace expertd::jinja {

void FailRender(Position position, const std::string& message) {
  throw TemplateError(TemplateError::Kind::kRender, position, message);
}

void FailUndefined(const Value& undefined, Position position) {
  FailRender(position, undefined.string_value().empty() ? std::string("a value is undefined") : undefined.string_value());
}

int64_t IntArg(const CallArgs& args, size_t index, std::string_view name, int64_t fallback) {
  const Value* v = args.Get(index, name);
  if (v == nullptr || v->is_none()) return fallback;
  if (!v->is_int() && !v->is_bool()) FailRender(args.position, absl::StrCat("argument '", std::string(name), "' must be an integer"));
  return v->int_value();
}

const Value& RequireArg(const CallArgs& args, size_t index, std::string_view name, std::string_view function) {
  const Value* v = args.Get(index, name);
  if (v == nullptr) FailRender(args.position, absl::StrCat(std::string(function), "() is missing its argument '", std::string(name), "'"));
  return *v;
}

const std::string& RequireString(const Value& v, Position position, std::string_view what) {
  if (v.is_undefined()) FailUndefined(v, position);
  if (!v.is_string()) FailRender(position, absl::StrCat(std::string(what), " needs a str, not ", v.TypeName()));
  return v.string_value();
}

List Pairs(const Dict& dict) {
  List out;
  for (const auto& [key, value] : dict.items()) out.push_back(Value::MakeTuple({key, value}));
  return out;
}

bool Less(const Value& a, const Value& b, Position position) {
  if (a.is_number() && b.is_number()) return a.number() < b.number();
  if (a.is_string() && b.is_string()) return a.string_value() < b.string_value();
  if (a.is_list() && b.is_list()) {
    return std::lexicographical_compare(a.list().begin(), a.list().end(), b.list().begin(), b.list().end(),
                                        [&](const Value& x, const Value& y) { return Less(x, y, position); });
  }
  if (a.is_undefined()) FailUndefined(a, position);
  if (b.is_undefined()) FailUndefined(b, position);
  FailRender(position, absl::StrCat("'<' not supported between instances of '", a.TypeName(), "' and '", b.TypeName(), "'"));
}

List Iterate(const Value& value, Position position) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return {};
    case Value::Kind::kList:
      return value.list();
    case Value::Kind::kDict: {
      if (value.is_namespace()) break;
      List keys;
      for (const auto& [key, item] : value.dict().items()) keys.push_back(key);
      return keys;
    }
    case Value::Kind::kString: {
      List chars;
      for (std::string& c : Characters(value.string_value())) chars.emplace_back(std::move(c));
      return chars;
    }
    default:
      break;
  }
  FailRender(position, absl::StrCat("'", value.TypeName(), "' object is not iterable"));
}

int64_t Length(const Value& value, Position position) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(CodePoints(value.string_value()).size());
    case Value::Kind::kList:
      return static_cast<int64_t>(value.list().size());
    case Value::Kind::kDict:
      if (!value.is_namespace()) return static_cast<int64_t>(value.dict().size());
      break;
    default:
      break;
  }
  FailRender(position, absl::StrCat("object of type '", value.TypeName(), "' has no len()"));
}

}  // namespace expertd::jinja
