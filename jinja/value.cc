#include "jinja/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace expertd::jinja {

const Value* Dict::Find(std::string_view key) const {
  for (const auto& [k, v] : items_) {
    if (k.is_string() && k.string_value() == key) return &v;
  }
  return nullptr;
}

Value* Dict::Find(std::string_view key) {
  for (auto& [k, v] : items_) {
    if (k.is_string() && k.string_value() == key) return &v;
  }
  return nullptr;
}

const Value* Dict::FindItem(const Value& key) const {
  for (const auto& [k, v] : items_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::Set(std::string key, Value value) { SetItem(Value(std::move(key)), std::move(value)); }

void Dict::SetItem(Value key, Value value) {
  for (auto& [k, v] : items_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items_.emplace_back(std::move(key), std::move(value));
}

Value Value::Undefined(std::string missing_name) {
  Value v;
  v.string_ = std::move(missing_name);
  return v;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::MakeList(List items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<List>(std::move(items));
  return v;
}

Value Value::MakeMarkup(std::string text) {
  Value v(std::move(text));
  v.markup_ = true;
  return v;
}

Value Value::MakeTuple(List items) {
  Value v = MakeList(std::move(items));
  v.tuple_ = true;
  return v;
}

Value Value::MakeDict(Dict items) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<Dict>(std::move(items));
  return v;
}

Value Value::MakeNamespace(Dict items) {
  Value v = MakeDict(std::move(items));
  v.namespace_ = true;
  return v;
}

Value Value::MakeCallable(std::shared_ptr<const Callable> callable) {
  Value v;
  v.kind_ = Kind::kCallable;
  v.callable_ = std::move(callable);
  return v;
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
    case Kind::kInt:
      return int_ != 0;
    case Kind::kFloat:
      return float_ != 0;
    case Kind::kString:
      return !string_.empty();
    case Kind::kList:
      return !list_->empty();
    case Kind::kDict:
      // A namespace is an object, always true in Python.
      return namespace_ || dict_->size() != 0;
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string FormatFloat(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f < 0 ? "-inf" : "inf";
  // The shortest digits that round-trip (what Python's repr picks), laid out
  // as repr lays them out: positional for exponents -4..15, else d.ddde+XX.
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific);
  const std::string sci(buf, result.ptr);
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exponent = std::atoi(sci.c_str() + e + 1);
  std::string sign;
  if (!mantissa.empty() && mantissa[0] == '-') {
    sign = "-";
    mantissa.erase(0, 1);
  }
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits += c;
  }
  if (exponent >= -4 && exponent < 16) {
    std::string out;
    if (exponent < 0) {
      out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out = digits + std::string(static_cast<size_t>(exponent + 1) - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<size_t>(exponent + 1)) + "." + digits.substr(static_cast<size_t>(exponent + 1));
    }
    return sign + out;
  }
  std::string out = digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_text[16];
  std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return sign + out + exp_text;
}

namespace {

// Python's repr() of a str: single quotes unless the text holds a single
// quote and no double quote; control characters escaped.
std::string ReprString(const std::string& s) {
  const bool use_double = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char quote = use_double ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

void AppendEscape(uint32_t unit, std::string* out) {
  char hex[16];
  std::snprintf(hex, sizeof hex, "\\u%04x", unit);
  *out += hex;
}

void JsonString(const std::string& s, bool ensure_ascii, std::string* out) {
  *out += '"';
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (ensure_ascii && c >= 0x80) {
      // Decode one UTF-8 sequence; a malformed byte is written as itself.
      const int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
      if (extra > 0 && i + static_cast<size_t>(extra) < s.size()) {
        uint32_t cp = c & (0x3F >> extra);
        for (int k = 1; k <= extra; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + static_cast<size_t>(k)]) & 0x3F);
        i += static_cast<size_t>(extra);
        if (cp >= 0x10000) {
          cp -= 0x10000;
          AppendEscape(0xD800 + (cp >> 10), out);
          AppendEscape(0xDC00 + (cp & 0x3FF), out);
        } else {
          AppendEscape(cp, out);
        }
        continue;
      }
    }
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\u%04x", c);
          *out += hex;
        } else {
          *out += static_cast<char>(c);
        }
    }
  }
  *out += '"';
}

bool JsonValue(const Value& v, int indent, bool ensure_ascii, int depth, std::string* out, std::string* error) {
  auto newline = [&](int level) {
    if (indent < 0) return;
    *out += '\n';
    out->append(static_cast<size_t>(indent * level), ' ');
  };
  const char* item_separator = indent < 0 ? ", " : ",";
  switch (v.kind()) {
    case Value::Kind::kNone:
      *out += "null";
      return true;
    case Value::Kind::kBool:
      *out += v.bool_value() ? "true" : "false";
      return true;
    case Value::Kind::kInt:
      *out += std::to_string(v.int_value());
      return true;
    case Value::Kind::kFloat: {
      const double f = v.float_value();
      if (std::isnan(f)) {
        *out += "NaN";
      } else if (std::isinf(f)) {
        *out += f < 0 ? "-Infinity" : "Infinity";
      } else {
        *out += FormatFloat(f);
      }
      return true;
    }
    case Value::Kind::kString:
      JsonString(v.string_value(), ensure_ascii, out);
      return true;
    case Value::Kind::kList: {
      if (v.list().empty()) {
        *out += "[]";
        return true;
      }
      *out += '[';
      bool first = true;
      for (const Value& item : v.list()) {
        if (!first) *out += item_separator;
        first = false;
        newline(depth + 1);
        if (!JsonValue(item, indent, ensure_ascii, depth + 1, out, error)) return false;
      }
      newline(depth);
      *out += ']';
      return true;
    }
    case Value::Kind::kDict: {
      if (v.is_namespace()) break;
      if (v.dict().size() == 0) {
        *out += "{}";
        return true;
      }
      *out += '{';
      bool first = true;
      for (const auto& [key, item] : v.dict().items()) {
        if (!first) *out += item_separator;
        first = false;
        newline(depth + 1);
        // json.dumps writes number, bool and null keys as strings.
        if (key.is_string()) {
          JsonString(key.string_value(), ensure_ascii, out);
        } else if (key.is_bool() || key.is_none()) {
          JsonString(key.is_none() ? "null" : key.bool_value() ? "true" : "false", ensure_ascii, out);
        } else {
          JsonString(key.Repr(), ensure_ascii, out);
        }
        *out += ": ";
        if (!JsonValue(item, indent, ensure_ascii, depth + 1, out, error)) return false;
      }
      newline(depth);
      *out += '}';
      return true;
    }
    case Value::Kind::kUndefined:
    case Value::Kind::kCallable:
      break;
  }
  *error = v.is_undefined() ? "Undefined" : v.TypeName();
  return false;
}

}  // namespace

bool ToJson(const Value& value, int indent, bool ensure_ascii, std::string* out, std::string* error) {
  return JsonValue(value, indent, ensure_ascii, 0, out, error);
}

std::string Value::Str() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return string_;
    default:
      return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return int_ ? "True" : "False";
    case Kind::kInt:
      return std::to_string(int_);
    case Kind::kFloat:
      return FormatFloat(float_);
    case Kind::kString:
      return ReprString(string_);
    case Kind::kList: {
      std::string out = tuple_ ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i > 0) out += ", ";
        out += (*list_)[i].Repr();
      }
      if (tuple_ && list_->size() == 1) out += ",";
      return out + (tuple_ ? ")" : "]");
    }
    case Kind::kDict: {
      if (namespace_) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (const auto& [key, item] : dict_->items()) {
        if (!first) out += ", ";
        first = false;
        out += key.Repr() + ": " + item.Repr();
      }
      return out + "}";
    }
    case Kind::kCallable:
      return "<function>";
  }
  return "";
}

std::string Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return tuple_ ? "tuple" : "list";
    case Kind::kDict:
      return namespace_ ? "Namespace" : "dict";
    case Kind::kCallable:
      return "function";
  }
  return "object";
}

bool operator==(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.number() == b.number();
    return a.int_value() == b.int_value();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.string_value() == b.string_value();
    case Value::Kind::kList:
      return a.list() == b.list();
    case Value::Kind::kDict: {
      if (a.is_namespace() || b.is_namespace()) return &a.dict() == &b.dict();
      if (a.dict().size() != b.dict().size()) return false;
      for (const auto& [key, item] : a.dict().items()) {
        const Value* other = b.dict().FindItem(key);
        if (other == nullptr || !(*other == item)) return false;
      }
      return true;
    }
    case Value::Kind::kCallable:
      return &a.callable() == &b.callable();
    default:
      return false;
  }
}

}  // namespace expertd::jinja
