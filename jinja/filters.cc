// Jinja2's filters as chat templates use them, tojson as Hugging Face
// defines it.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "jinja/builtins.h"
#include "jinja/text.h"

namespace expertd::jinja {
namespace {

// Whether a float truncates to an int64 without undefined behaviour.
bool FitsInt64(double f) { return std::isfinite(f) && f > -9.2e18 && f < 9.2e18; }

// Jinja2's attribute lookup for filters with attribute=: dotted paths, items
// of dicts, indexes of lists.
Value AttributeOf(const Value& item, const std::string& path) {
  Value current = item;
  size_t at = 0;
  while (at <= path.size()) {
    const size_t dot = path.find('.', at);
    const std::string part = path.substr(at, dot == std::string::npos ? std::string::npos : dot - at);
    if (current.is_dict()) {
      const Value* found = current.dict().Find(part);
      current = found != nullptr ? *found : Value::Undefined(absl::StrCat("'dict object' has no attribute '", part, "'"));
    } else if (current.is_list() && !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      const size_t index = static_cast<size_t>(std::strtoull(part.c_str(), nullptr, 10));
      current = index < current.list().size() ? current.list()[index] : Value::Undefined("list index out of range");
    } else {
      current = Value::Undefined(absl::StrCat("'", current.TypeName(), " object' has no attribute '", part, "'"));
    }
    if (dot == std::string::npos) break;
    at = dot + 1;
  }
  return current;
}

// The test named by a select/reject style filter's arguments from `first`.
bool RunTestFromArgs(const Value& item, const CallArgs& args, size_t first, bool truthiness_when_absent) {
  if (args.positional.size() <= first) {
    if (truthiness_when_absent) return item.Truthy();
    FailRender(args.position, "select needs the name of a test");
  }
  CallArgs test_args;
  test_args.position = args.position;
  test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(first) + 1, args.positional.end());
  return ApplyTest(RequireString(args.positional[first], args.position, "a test name"), item, test_args);
}

std::string ToJsonOrFail(const Value& v, const CallArgs& args) {
  int indent = -1;
  if (const Value* i = args.Get(0, "indent"); i != nullptr && !i->is_none()) {
    if (!i->is_int()) FailRender(args.position, "tojson's indent must be an integer");
    indent = static_cast<int>(std::clamp<int64_t>(i->int_value(), 0, 64));
  }
  const Value* ensure_ascii = args.Get(SIZE_MAX, "ensure_ascii");
  std::string out;
  std::string bad_type;
  if (!ToJson(v, indent, ensure_ascii != nullptr && ensure_ascii->Truthy(), &out, &bad_type)) {
    if (v.is_undefined()) FailUndefined(v, args.position);
    FailRender(args.position, absl::StrCat("tojson: Object of type ", bad_type, " is not JSON serializable"));
  }
  return out;
}

}  // namespace

Value ApplyFilter(std::string_view name, const Value& v, const CallArgs& args) {
  const Position position = args.position;
  if (name == "safe") return v.is_markup() ? v : Value::MakeMarkup(v.Str());
  if (name == "list" && v.is_list()) return v;
  if (name == "string") return Value(v.Str());
  if (name == "trim") return Value(Strip(v.Str(), args.Get(0, "chars"), true, true));
  if (name == "upper") return Value(Upper(v.Str()));
  if (name == "lower") return Value(Lower(v.Str()));
  if (name == "title") return Value(Title(v.Str()));
  if (name == "capitalize") return Value(Capitalize(v.Str()));
  if (name == "length" || name == "count") return Value(Length(v, position));
  if (name == "tojson") return Value(ToJsonOrFail(v, args));
  if (name == "default" || name == "d") {
    const Value* fallback = args.Get(0, "default_value");
    const Value* boolean = args.Get(1, "boolean");
    const bool use_fallback = v.is_undefined() || (boolean != nullptr && boolean->Truthy() && !v.Truthy());
    if (!use_fallback) return v;
    return fallback != nullptr ? *fallback : Value("");
  }
  if (name == "list") return Value::MakeList(Iterate(v, position));
  if (name == "first" || name == "last") {
    if (v.is_undefined()) FailUndefined(v, position);
    List items = Iterate(v, position);
    if (items.empty()) return Value::Undefined(absl::StrCat("No ", std::string(name), " item, sequence was empty."));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    const Value* separator = args.Get(0, "d");
    const Value* attribute = args.Get(1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : Iterate(v, position)) {
      if (!first && separator != nullptr) out += separator->Str();
      first = false;
      out += (attribute != nullptr ? AttributeOf(item, attribute->Str()) : item).Str();
    }
    return Value(std::move(out));
  }
  if (name == "int") {
    const int64_t fallback = IntArg(args, 0, "default", 0);
    if (v.is_int() || v.is_bool()) return Value(v.int_value());
    if (v.is_float()) return FitsInt64(v.float_value()) ? Value(static_cast<int64_t>(v.float_value())) : Value(fallback);
    if (v.is_string()) {
      const std::string s = Strip(v.string_value(), nullptr, true, true);
      char* end = nullptr;
      const long long i = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && end == s.c_str() + s.size()) return Value(static_cast<int64_t>(i));
      const double f = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size() && FitsInt64(f)) return Value(static_cast<int64_t>(f));
    }
    return Value(fallback);
  }
  if (name == "float") {
    if (v.is_number()) return Value(v.number());
    if (v.is_string()) {
      const std::string s = Strip(v.string_value(), nullptr, true, true);
      char* end = nullptr;
      const double f = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size()) return Value(f);
    }
    const Value* fallback = args.Get(0, "default");
    return fallback != nullptr ? Value(fallback->number()) : Value(0.0);
  }
  if (name == "abs") {
    if (v.is_int() || v.is_bool()) {
      if (v.int_value() == INT64_MIN) FailRender(position, "integer overflow in abs");
      return Value(v.int_value() < 0 ? -v.int_value() : v.int_value());
    }
    if (v.is_float()) return Value(std::fabs(v.float_value()));
    FailRender(position, absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::MakeList();
    if (!v.is_dict() || v.is_namespace()) FailRender(position, absl::StrCat("items needs a mapping, not ", v.TypeName()));
    return Value::MakeList(Pairs(v.dict()));
  }
  if (name == "dictsort") {
    if (!v.is_dict()) FailRender(position, absl::StrCat("dictsort needs a mapping, not ", v.TypeName()));
    List pairs = Pairs(v.dict());
    // By key, strings compared case-insensitively (Jinja2's default).
    auto key = [](const Value& pair) {
      const Value& k = pair.list()[0];
      return k.is_string() ? Value(Lower(k.string_value())) : k;
    };
    std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& a, const Value& b) { return Less(key(a), key(b), position); });
    return Value::MakeList(std::move(pairs));
  }
  if (name == "replace") {
    return Value(Replace(v.Str(), RequireArg(args, 0, "old", "replace").Str(), RequireArg(args, 1, "new", "replace").Str(),
                         IntArg(args, 2, "count", -1)));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<std::string> chars = Characters(v.string_value());
      std::string out;
      for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
      return Value(std::move(out));
    }
    List items = Iterate(v, position);
    std::reverse(items.begin(), items.end());
    return Value::MakeList(std::move(items));
  }
  if (name == "unique") {
    // Jinja2 compares strings case-insensitively unless case_sensitive.
    const Value* case_sensitive = args.Get(0, "case_sensitive");
    const bool fold = case_sensitive == nullptr || !case_sensitive->Truthy();
    List out;
    List seen;
    for (const Value& item : Iterate(v, position)) {
      const Value key = fold && item.is_string() ? Value(Lower(item.string_value())) : item;
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
      seen.push_back(key);
      out.push_back(item);
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "sort") {
    List items = Iterate(v, position);
    const Value* reverse = args.Get(0, "reverse");
    const Value* attribute = args.Get(2, "attribute");
    auto key = [&](const Value& item) {
      Value k = attribute != nullptr ? AttributeOf(item, attribute->Str()) : item;
      return k.is_string() ? Value(Lower(k.string_value())) : k;
    };
    std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) { return Less(key(a), key(b), position); });
    if (reverse != nullptr && reverse->Truthy()) std::reverse(items.begin(), items.end());
    return Value::MakeList(std::move(items));
  }
  if (name == "sum" || name == "min" || name == "max") {
    List items = Iterate(v, position);
    if (name == "sum") {
      Value total = args.Get(1, "start") != nullptr ? *args.Get(1, "start") : Value(0);
      for (const Value& item : items) {
        if (!item.is_number() || !total.is_number()) FailRender(position, "sum needs numbers");
        int64_t sum = 0;
        if (total.is_float() || item.is_float()) {
          total = Value(total.number() + item.number());
        } else if (__builtin_add_overflow(total.int_value(), item.int_value(), &sum)) {
          FailRender(position, "integer overflow in sum");
        } else {
          total = Value(sum);
        }
      }
      return total;
    }
    if (items.empty()) return Value::Undefined(absl::StrCat("No ", std::string(name), " item, sequence was empty."));
    Value best = items.front();
    for (const Value& item : items) {
      if (name == "min" ? Less(item, best, position) : Less(best, item, position)) best = item;
    }
    return best;
  }
  if (name == "round") {
    const int64_t precision = IntArg(args, 0, "precision", 0);
    const double scale = std::pow(10.0, static_cast<double>(precision));
    return Value(std::nearbyint(v.number() * scale) / scale);
  }
  // Jinja2's select, reject, selectattr, rejectattr and map read their
  // input only when it is true, so none and undefined give nothing.
  const bool lazy = name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr" || name == "map";
  if (lazy && !v.Truthy()) return Value::MakeList();
  if (name == "select" || name == "reject") {
    const bool keep = name == "select";
    List out;
    for (const Value& item : Iterate(v, position)) {
      if (RunTestFromArgs(item, args, 0, true) == keep) out.push_back(item);
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "selectattr" || name == "rejectattr") {
    const bool keep = name == "selectattr";
    const std::string attribute = RequireString(RequireArg(args, 0, "attribute", name), position, "the attribute name");
    List out;
    for (const Value& item : Iterate(v, position)) {
      if (RunTestFromArgs(AttributeOf(item, attribute), args, 1, true) == keep) out.push_back(item);
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "map") {
    List out;
    const Value* attribute = args.Get(SIZE_MAX, "attribute");
    for (const Value& item : Iterate(v, position)) {
      if (attribute != nullptr) {
        Value mapped = AttributeOf(item, attribute->Str());
        const Value* fallback = args.Get(SIZE_MAX, "default");
        if (mapped.is_undefined() && fallback != nullptr) mapped = *fallback;
        out.push_back(std::move(mapped));
      } else {
        if (args.positional.empty()) FailRender(position, "map needs a filter name or attribute=");
        CallArgs rest;
        rest.position = position;
        rest.positional.assign(args.positional.begin() + 1, args.positional.end());
        rest.keyword = args.keyword;
        out.push_back(ApplyFilter(RequireString(args.positional[0], position, "a filter name"), item, rest));
      }
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "indent") {
    const Value* width_arg = args.Get(0, "width");
    const std::string pad = width_arg == nullptr ? std::string(4, ' ')
                            : width_arg->is_string() ? width_arg->string_value()
                                                     : std::string(static_cast<size_t>(std::clamp<int64_t>(width_arg->int_value(), 0, 256)), ' ');
    const Value* first = args.Get(1, "first");
    const Value* blank = args.Get(2, "blank");
    const std::string text = v.Str();
    std::string out;
    size_t at = 0;
    bool first_line = true;
    while (true) {
      const size_t end = text.find('\n', at);
      const std::string line = text.substr(at, end == std::string::npos ? std::string::npos : end - at);
      const bool indent = first_line ? (first != nullptr && first->Truthy()) : (!line.empty() || (blank != nullptr && blank->Truthy()));
      if (indent) out += pad;
      out += line;
      if (end == std::string::npos) break;
      out += '\n';
      at = end + 1;
      first_line = false;
    }
    return Value(std::move(out));
  }
  if (name == "escape" || name == "e") return v.is_markup() ? v : Value::MakeMarkup(HtmlEscape(v.Str()));
  if (name == "batch" || name == "slice") FailRender(position, absl::StrCat("filter '", std::string(name), "' is not supported"));
  FailRender(position, absl::StrCat("no filter named '", std::string(name), "'"));
}

}  // namespace expertd::jinja
