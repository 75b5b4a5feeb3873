// The methods of str and dict that chat templates call, bound to their
// object when a template reads the attribute.
#include <algorithm>
#include <cstdlib>
#include <functional>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "jinja/builtins.h"
#include "jinja/text.h"

namespace expertd::jinja {
namespace {

// str.split(sep, maxsplit) and rsplit.
List Split(const std::string& s, const Value* separator, int64_t max_split, bool from_right, Position position) {
  std::vector<std::string> parts;
  if (separator == nullptr || separator->is_none()) {
    // Runs of whitespace separate; leading and trailing whitespace yield
    // nothing.
    const std::vector<uint32_t> cps = CodePoints(s);
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
      for (size_t k = begin; k < end; ++k) AppendCodePoint(cps[k], &out);
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
    if (sep.empty()) FailRender(position, "ValueError: empty separator");
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
      if (close == std::string::npos) FailRender(args.position, "str.format: a '{' is never closed");
      const std::string field = text.substr(i + 1, close - i - 1);
      const Value* value = nullptr;
      if (field.empty()) {
        value = args.Get(next_auto++, "");
      } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
        value = args.Get(static_cast<size_t>(std::strtoull(field.c_str(), nullptr, 10)), "");
      } else {
        value = args.Get(SIZE_MAX, field);
      }
      if (value == nullptr) FailRender(args.position, absl::StrCat("str.format has no argument for {", field, "}"));
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
        return at == std::string::npos ? Value(-1) : Value(static_cast<int64_t>(CodePoints(s.substr(0, at)).size()));
      }
      if (needle.empty()) return Value(static_cast<int64_t>(CodePoints(s).size()) + 1);
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
        if (which == "isalpha") return IsAsciiLetter(c);
        return IsPythonSpace(static_cast<unsigned char>(c));
      }));
    });
  }
  return std::nullopt;
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

std::optional<Value> BoundMethod(const Value& object, std::string_view name) {
  if (object.is_string()) return StringMethod(object.string_value(), name);
  if (object.is_dict() && !object.is_namespace()) return DictMethod(object, name);
  return std::nullopt;
}

}  // namespace expertd::jinja
