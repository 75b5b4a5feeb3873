#ifndef EXPERTD_JINJA_VALUE_H_
#define EXPERTD_JINJA_VALUE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace expertd::jinja {

class Value;
struct Callable;  // a builtin or a macro; defined by the interpreter (jinja/callable.h)

class Dict;
using List = std::vector<Value>;

// A template value with Python's semantics (the data model chat templates are
// written against: Jinja2 evaluates them as Python objects).
//
// Lists and dicts are shared, as Python objects are: copying a Value copies a
// reference. Templates run in an immutable sandbox (as Hugging Face renders
// them), so the only mutation is `set ns.attr = ...` on a namespace().
//
// Undefined is Jinja2's default Undefined: a name or key that does not exist.
// It prints as "", is false, iterates as empty, and is an error to compute
// with; it carries the name that was missing for that error.
class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kCallable };

  Value() = default;  // undefined
  Value(bool b) : kind_(Kind::kBool), int_(b ? 1 : 0) {}
  Value(int i) : kind_(Kind::kInt), int_(i) {}
  Value(int64_t i) : kind_(Kind::kInt), int_(i) {}
  Value(double f) : kind_(Kind::kFloat), float_(f) {}
  Value(std::string s) : kind_(Kind::kString), string_(std::move(s)) {}
  Value(std::string_view s) : kind_(Kind::kString), string_(s) {}
  Value(const char* s) : kind_(Kind::kString), string_(s) {}

  static Value Undefined(std::string missing_name);
  static Value None();
  static Value MakeList(List items = {});
  // A Python tuple: a list that prints as (a, b); items() pairs and tuple
  // literals are tuples.
  static Value MakeTuple(List items);
  static Value MakeDict(Dict items);
  // Jinja2's namespace(): a dict whose keys are attributes `set` may assign.
  static Value MakeNamespace(Dict items);
  static Value MakeCallable(std::shared_ptr<const Callable> callable);
  // Jinja2's Markup: a str marked safe (by |safe or |escape). It matters in
  // one place: `markup + str` HTML-escapes the str, which a few real
  // templates trip over and Hugging Face renders as such.
  static Value MakeMarkup(std::string text);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kDict && namespace_; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_markup() const { return kind_ == Kind::kString && markup_; }
  bool is_callable() const { return kind_ == Kind::kCallable; }

  bool bool_value() const { return int_ != 0; }
  int64_t int_value() const { return int_; }  // kInt or kBool
  double float_value() const { return float_; }
  // kInt, kBool or kFloat as a double.
  double number() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& string_value() const { return string_; }  // kString; kUndefined: the missing name
  List& list() const { return *list_; }
  Dict& dict() const { return *dict_; }
  const Callable& callable() const { return *callable_; }

  // Python's bool(), str() and repr().
  bool Truthy() const;
  std::string Str() const;
  std::string Repr() const;
  // Python's type name ("str", "dict", "NoneType"), for error messages.
  std::string TypeName() const;

  // Python's ==: deep for lists and dicts, 1 == 1.0 == True; undefined equals
  // only undefined.
  friend bool operator==(const Value& a, const Value& b);

 private:
  Kind kind_ = Kind::kUndefined;
  bool namespace_ = false;
  bool tuple_ = false;
  bool markup_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::string string_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<const Callable> callable_;
};

// A Python dict as templates see it: iteration follows insertion order
// (tojson of a message writes its keys in the order the request gave them, as
// Python does). Keys are strings but for dict literals with numbers as keys.
// Lookup is linear: template dicts hold a handful of keys.
class Dict {
 public:
  const Value* Find(std::string_view key) const;
  Value* Find(std::string_view key);
  // Any key, matched with Python's == (1, 1.0 and True are one key).
  const Value* FindItem(const Value& key) const;
  // Replaces the value of an existing key in place (keeping its position), or
  // appends the key.
  void Set(std::string key, Value value);
  void SetItem(Value key, Value value);
  const std::vector<std::pair<Value, Value>>& items() const { return items_; }
  size_t size() const { return items_.size(); }

 private:
  std::vector<std::pair<Value, Value>> items_;
};

// Python's repr() of a float ("1.0", "0.1", "1e+16", "inf").
std::string FormatFloat(double f);

// Python's json.dumps(value, ensure_ascii=..., indent=indent), as Hugging
// Face's tojson filter calls it (ensure_ascii false by default there):
// indent < 0 is None (one line, ", " and ": "), else newlines with that many
// spaces per level ("," and ": "); ensure_ascii writes every non-ASCII code
// point as \uXXXX (surrogate pairs above U+FFFF). Returns false (and the
// type at fault in *error) for what JSON cannot hold (undefined, a callable,
// a namespace).
bool ToJson(const Value& value, int indent, bool ensure_ascii, std::string* out, std::string* error);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_VALUE_H_
