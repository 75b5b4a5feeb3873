#include "jinja/builtins.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "jinja/error.h"

namespace expertd::jinja {
namespace {

[[noreturn]] void Fail(Position position, const std::string& message) {
  throw TemplateError(TemplateError::Kind::kRender, position, message);
}

// Whether a float truncates to an int64 without undefined behaviour.
bool FitsInt64(double f) { return std::isfinite(f) && f > -9.2e18 && f < 9.2e18; }

// UTF-8 decoding for code point work; malformed bytes stand for themselves
// (U+FFFD would change the text when it is written back).
std::vector<uint32_t> Decode(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (i + static_cast<size_t>(extra) >= s.size()) extra = 0;  // truncated: the byte alone
    uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
    for (int k = 1; k <= extra; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + static_cast<size_t>(k)]) & 0x3F);
    out.push_back(cp);
    i += static_cast<size_t>(extra) + 1;
  }
  return out;
}

void Encode(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    *out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out += static_cast<char>(0xC0 | (cp >> 6));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out += static_cast<char>(0xE0 | (cp >> 12));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out += static_cast<char>(0xF0 | (cp >> 18));
    *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// str.isspace() for one code point.
bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// str.strip/lstrip/rstrip: chars null strips whitespace.
std::string Strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::vector<uint32_t> cps = Decode(s);
  std::vector<uint32_t> set;
  const bool whitespace = chars == nullptr || chars->is_none();
  if (!whitespace) set = Decode(chars->Str());
  auto strip = [&](uint32_t c) { return whitespace ? IsPythonSpace(c) : std::find(set.begin(), set.end(), c) != set.end(); };
  size_t begin = 0;
  size_t end = cps.size();
  if (left) {
    while (begin < end && strip(cps[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip(cps[end - 1])) --end;
  }
  std::string out;
  for (size_t i = begin; i < end; ++i) Encode(cps[i], &out);
  return out;
}

std::string Upper(std::string s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return s;
}

std::string Lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string Title(const std::string& s) {
  std::string out = s;
  bool previous_cased = false;
  for (char& c : out) {
    if (IsAlpha(c)) {
      c = previous_cased ? Lower(std::string(1, c))[0] : Upper(std::string(1, c))[0];
      previous_cased = true;
    } else {
      previous_cased = false;
    }
  }
  return out;
}

std::string Capitalize(const std::string& s) {
  std::string out = Lower(s);
  if (!out.empty()) out[0] = Upper(out.substr(0, 1))[0];
  return out;
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) {
    // Python inserts `to` around every character.
    std::string out;
    int64_t done = 0;
    for (const std::string& c : Characters(s)) {
      if (count < 0 || done < count) {
        out += to;
        ++done;
      }
      out += c;
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  std::string out;
  size_t at = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t next = s.find(from, at);
    if (next == std::string::npos) break;
    out.append(s, at, next - at);
    out += to;
    at = next + from.size();
    ++done;
  }
  out.append(s, at, std::string::npos);
  return out;
}

// str.split(sep, maxsplit) and rsplit.
List Split(const std::string& s, const Value* separator, int64_t max_split, bool from_right, Position position) {
  std::vector<std::string> parts;
  if (separator == nullptr || separator->is_none()) {
    // Runs of whitespace separate; leading and trailing whitespace yield
    // nothing.
    const std::vector<uint32_t> cps = Decode(s);
    std::vector<std::pair<size_t, size_t>> words;
    for (size_t i = 0; i < cps.size();) {
      while (i < cps.size() && IsPythonSpace(cps[i])) ++i;
      if (i == cps.size()) break;
      size_t j = i;
      while (j < cps.size() && !IsPythonSpace(cps[j])) ++j;
      words.emplace_back(i, j);
      i = j;
    }
    auto text = [&](size_t begin, size_t end) {
      std::string out;
      for (size_t k = begin; k < end; ++k) Encode(cps[k], &out);
      return out;
    };
    if (max_split >= 0 && static_cast<int64_t>(words.size()) > max_split + 1) {
      if (!from_right) {
        for (int64_t k = 0; k < max_split; ++k) parts.push_back(text(words[static_cast<size_t>(k)].first, words[static_cast<size_t>(k)].second));
        size_t rest = words[static_cast<size_t>(max_split)].first;
        size_t end = cps.size();
        while (end > rest && IsPythonSpace(cps[end - 1])) --end;
        parts.push_back(text(rest, end));
      } else {
        const size_t keep = words.size() - static_cast<size_t>(max_split);
        size_t begin = 0;
        while (begin < cps.size() && IsPythonSpace(cps[begin])) ++begin;
        parts.push_back(text(begin, words[keep - 1].second));
        for (size_t k = keep; k < words.size(); ++k) parts.push_back(text(words[k].first, words[k].second));
      }
    } else {
      for (const auto& [b, e] : words) parts.push_back(text(b, e));
    }
  } else {
    const std::string sep = separator->Str();
    if (sep.empty()) Fail(position, "ValueError: empty separator");
    if (!from_right) {
      size_t at = 0;
      int64_t done = 0;
      while (max_split < 0 || done < max_split) {
        const size_t next = s.find(sep, at);
        if (next == std::string::npos) break;
        parts.push_back(s.substr(at, next - at));
        at = next + sep.size();
        ++done;
      }
      parts.push_back(s.substr(at));
    } else {
      size_t end = s.size();
      int64_t done = 0;
      std::vector<std::string> reversed;
      while (max_split < 0 || done < max_split) {
        if (end < sep.size()) break;
        const size_t next = s.rfind(sep, end - sep.size());
        if (next == std::string::npos) break;
        reversed.push_back(s.substr(next + sep.size(), end - next - sep.size()));
        end = next;
        ++done;
      }
      reversed.push_back(s.substr(0, end));
      parts.assign(reversed.rbegin(), reversed.rend());
    }
  }
  List out;
  for (std::string& part : parts) out.emplace_back(std::move(part));
  return out;
}

int64_t IntArg(const CallArgs& args, size_t index, std::string_view name, int64_t fallback) {
  const Value* v = args.Get(index, name);
  if (v == nullptr || v->is_none()) return fallback;
  if (!v->is_int() && !v->is_bool()) Fail(args.position, absl::StrCat("argument '", std::string(name), "' must be an integer"));
  return v->int_value();
}

const Value& RequireArg(const CallArgs& args, size_t index, std::string_view name, std::string_view function) {
  const Value* v = args.Get(index, name);
  if (v == nullptr) Fail(args.position, absl::StrCat(std::string(function), "() is missing its argument '", std::string(name), "'"));
  return *v;
}

const std::string& RequireString(const Value& v, Position position, std::string_view what) {
  if (v.is_undefined()) FailUndefined(v, position);
  if (!v.is_string()) Fail(position, absl::StrCat(std::string(what), " needs a str, not ", v.TypeName()));
  return v.string_value();
}

// `text.format(...)`: {} and {0} by position, {name} by keyword.
std::string Format(const std::string& text, const CallArgs& args) {
  std::string out;
  size_t next_auto = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '{' && i + 1 < text.size() && text[i + 1] == '{') {
      out += '{';
      ++i;
    } else if (c == '}' && i + 1 < text.size() && text[i + 1] == '}') {
      out += '}';
      ++i;
    } else if (c == '{') {
      const size_t close = text.find('}', i);
      if (close == std::string::npos) Fail(args.position, "str.format: a '{' is never closed");
      const std::string field = text.substr(i + 1, close - i - 1);
      const Value* value = nullptr;
      if (field.empty()) {
        value = args.Get(next_auto++, "");
      } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
        value = args.Get(static_cast<size_t>(std::strtoull(field.c_str(), nullptr, 10)), "");
      } else {
        value = args.Get(SIZE_MAX, field);
      }
      if (value == nullptr) Fail(args.position, absl::StrCat("str.format has no argument for {", field, "}"));
      out += value->Str();
      i = close;
    } else {
      out += c;
    }
  }
  return out;
}

Value MakeMethod(std::string name, std::function<Value(const CallArgs&)> function) {
  auto callable = std::make_shared<Callable>();
  callable->name = std::move(name);
  callable->function = std::move(function);
  return Value::MakeCallable(std::move(callable));
}

std::optional<Value> StringMethod(const std::string& s, std::string_view name) {
  const std::string method(name);
  auto bind = [&](std::function<Value(const CallArgs&)> f) { return MakeMethod(method, std::move(f)); };
  if (name == "startswith" || name == "endswith") {
    const bool starts = name == "startswith";
    return bind([s, starts, method](const CallArgs& args) {
      const Value& affix = RequireArg(args, 0, "prefix", method);
      auto matches = [&](const Value& a) {
        const std::string& t = RequireString(a, args.position, method);
        return starts ? std::string_view(s).starts_with(t) : std::string_view(s).ends_with(t);
      };
      if (affix.is_list()) return Value(std::any_of(affix.list().begin(), affix.list().end(), matches));
      return Value(matches(affix));
    });
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool left = name != "rstrip";
    const bool right = name != "lstrip";
    return bind([s, left, right](const CallArgs& args) { return Value(Strip(s, args.Get(0, "chars"), left, right)); });
  }
  if (name == "split" || name == "rsplit") {
    const bool from_right = name == "rsplit";
    return bind([s, from_right](const CallArgs& args) {
      return Value::MakeList(Split(s, args.Get(0, "sep"), IntArg(args, 1, "maxsplit", -1), from_right, args.position));
    });
  }
  if (name == "replace") {
    return bind([s](const CallArgs& args) {
      return Value(Replace(s, RequireString(RequireArg(args, 0, "old", "replace"), args.position, "replace"),
                           RequireString(RequireArg(args, 1, "new", "replace"), args.position, "replace"),
                           IntArg(args, 2, "count", -1)));
    });
  }
  if (name == "upper") return bind([s](const CallArgs&) { return Value(Upper(s)); });
  if (name == "lower") return bind([s](const CallArgs&) { return Value(Lower(s)); });
  if (name == "title") return bind([s](const CallArgs&) { return Value(Title(s)); });
  if (name == "capitalize") return bind([s](const CallArgs&) { return Value(Capitalize(s)); });
  if (name == "format") return bind([s](const CallArgs& args) { return Value(Format(s, args)); });
  if (name == "join") {
    return bind([s](const CallArgs& args) {
      std::string out;
      bool first = true;
      for (const Value& item : Iterate(RequireArg(args, 0, "iterable", "join"), args.position)) {
        if (!first) out += s;
        first = false;
        out += RequireString(item, args.position, "str.join");
      }
      return Value(std::move(out));
    });
  }
  if (name == "find" || name == "count") {
    const bool find = name == "find";
    return bind([s, find](const CallArgs& args) {
      const std::string& needle = RequireString(RequireArg(args, 0, "sub", find ? "find" : "count"), args.position, "str");
      if (find) {
        const size_t at = s.find(needle);
        return at == std::string::npos ? Value(-1) : Value(static_cast<int64_t>(Decode(s.substr(0, at)).size()));
      }
      if (needle.empty()) return Value(static_cast<int64_t>(Decode(s).size()) + 1);
      int64_t n = 0;
      for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
      return Value(n);
    });
  }
  if (name == "splitlines") {
    return bind([s](const CallArgs&) {
      List lines;
      size_t at = 0;
      while (at < s.size()) {
        const size_t end = s.find('\n', at);
        if (end == std::string::npos) {
          lines.emplace_back(s.substr(at));
          break;
        }
        lines.emplace_back(s.substr(at, end - at));
        at = end + 1;
      }
      return Value::MakeList(std::move(lines));
    });
  }
  if (name == "isdigit" || name == "isalpha" || name == "isspace") {
    const std::string which = method;
    return bind([s, which](const CallArgs&) {
      if (s.empty()) return Value(false);
      return Value(std::all_of(s.begin(), s.end(), [&](char c) {
        if (which == "isdigit") return c >= '0' && c <= '9';
        if (which == "isalpha") return IsAlpha(c);
        return IsPythonSpace(static_cast<unsigned char>(c));
      }));
    });
  }
  return std::nullopt;
}

List Pairs(const Dict& dict) {
  List out;
  for (const auto& [key, value] : dict.items()) out.push_back(Value::MakeTuple({key, value}));
  return out;
}

std::optional<Value> DictMethod(const Value& object, std::string_view name) {
  const Value dict = object;
  if (name == "items") return MakeMethod("items", [dict](const CallArgs&) { return Value::MakeList(Pairs(dict.dict())); });
  if (name == "keys" || name == "values") {
    const bool keys = name == "keys";
    return MakeMethod(std::string(name), [dict, keys](const CallArgs&) {
      List out;
      for (const auto& [key, value] : dict.dict().items()) out.push_back(keys ? key : value);
      return Value::MakeList(std::move(out));
    });
  }
  if (name == "get") {
    return MakeMethod("get", [dict](const CallArgs& args) {
      const Value& key = RequireArg(args, 0, "key", "get");
      const Value* fallback = args.Get(1, "default");
      const Value* found = dict.dict().FindItem(key);
      if (found != nullptr) return *found;
      return fallback != nullptr ? *fallback : Value::None();
    });
  }
  return std::nullopt;
}

}  // namespace

bool Less(const Value& a, const Value& b, Position position) {
  if (a.is_number() && b.is_number()) return a.number() < b.number();
  if (a.is_string() && b.is_string()) return a.string_value() < b.string_value();
  if (a.is_list() && b.is_list()) {
    return std::lexicographical_compare(a.list().begin(), a.list().end(), b.list().begin(), b.list().end(),
                                        [&](const Value& x, const Value& y) { return Less(x, y, position); });
  }
  if (a.is_undefined()) FailUndefined(a, position);
  if (b.is_undefined()) FailUndefined(b, position);
  Fail(position, absl::StrCat("'<' not supported between instances of '", a.TypeName(), "' and '", b.TypeName(), "'"));
}

namespace {

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
    Fail(args.position, "select needs the name of a test");
  }
  CallArgs test_args;
  test_args.position = args.position;
  test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(first) + 1, args.positional.end());
  return ApplyTest(RequireString(args.positional[first], args.position, "a test name"), item, test_args);
}

std::string ToJsonOrFail(const Value& v, const CallArgs& args) {
  int indent = -1;
  if (const Value* i = args.Get(0, "indent"); i != nullptr && !i->is_none()) {
    if (!i->is_int()) Fail(args.position, "tojson's indent must be an integer");
    indent = static_cast<int>(std::clamp<int64_t>(i->int_value(), 0, 64));
  }
  const Value* ensure_ascii = args.Get(SIZE_MAX, "ensure_ascii");
  std::string out;
  std::string bad_type;
  if (!ToJson(v, indent, ensure_ascii != nullptr && ensure_ascii->Truthy(), &out, &bad_type)) {
    if (v.is_undefined()) FailUndefined(v, args.position);
    Fail(args.position, absl::StrCat("tojson: Object of type ", bad_type, " is not JSON serializable"));
  }
  return out;
}

}  // namespace

[[noreturn]] void FailUndefined(const Value& undefined, Position position) {
  Fail(position, undefined.string_value().empty() ? std::string("a value is undefined") : undefined.string_value());
}

std::vector<std::string> Characters(const std::string& text) {
  std::vector<std::string> out;
  for (uint32_t cp : Decode(text)) {
    std::string c;
    Encode(cp, &c);
    out.push_back(std::move(c));
  }
  return out;
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
  Fail(position, absl::StrCat("'", value.TypeName(), "' object is not iterable"));
}

int64_t Length(const Value& value, Position position) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(Decode(value.string_value()).size());
    case Value::Kind::kList:
      return static_cast<int64_t>(value.list().size());
    case Value::Kind::kDict:
      if (!value.is_namespace()) return static_cast<int64_t>(value.dict().size());
      break;
    default:
      break;
  }
  Fail(position, absl::StrCat("object of type '", value.TypeName(), "' has no len()"));
}

std::optional<Value> BoundMethod(const Value& object, std::string_view name) {
  if (object.is_string()) return StringMethod(object.string_value(), name);
  if (object.is_dict() && !object.is_namespace()) return DictMethod(object, name);
  return std::nullopt;
}

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
    if (!v.is_int()) Fail(args.position, absl::StrCat("test '", std::string(name), "' needs an integer, not ", v.TypeName()));
    if (name == "divisibleby") {
      const int64_t d = IntArg(args, 0, "num", 1);
      if (d == 0) Fail(args.position, "divisibleby 0");
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
  Fail(args.position, absl::StrCat("no test named '", std::string(name), "'"));
}

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
      if (v.int_value() == INT64_MIN) Fail(position, "integer overflow in abs");
      return Value(v.int_value() < 0 ? -v.int_value() : v.int_value());
    }
    if (v.is_float()) return Value(std::fabs(v.float_value()));
    Fail(position, absl::StrCat("bad operand type for abs(): '", v.TypeName(), "'"));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::MakeList();
    if (!v.is_dict() || v.is_namespace()) Fail(position, absl::StrCat("items needs a mapping, not ", v.TypeName()));
    return Value::MakeList(Pairs(v.dict()));
  }
  if (name == "dictsort") {
    if (!v.is_dict()) Fail(position, absl::StrCat("dictsort needs a mapping, not ", v.TypeName()));
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
        if (!item.is_number() || !total.is_number()) Fail(position, "sum needs numbers");
        int64_t sum = 0;
        if (total.is_float() || item.is_float()) {
          total = Value(total.number() + item.number());
        } else if (__builtin_add_overflow(total.int_value(), item.int_value(), &sum)) {
          Fail(position, "integer overflow in sum");
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
        if (args.positional.empty()) Fail(position, "map needs a filter name or attribute=");
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
  if (name == "batch" || name == "slice") Fail(position, absl::StrCat("filter '", std::string(name), "' is not supported"));
  Fail(position, absl::StrCat("no filter named '", std::string(name), "'"));
}

std::string HtmlEscape(const std::string& text) {
    std::string out;
    for (char c : text) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    return out;
}

}  // namespace expertd::jinja
