#include "jinja/interpreter.h"

#include <time.h>

#include <cmath>
#include <memory>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "jinja/builtins.h"
#include "jinja/callable.h"
#include "jinja/error.h"
#include "jinja/text.h"

namespace expertd::jinja {
namespace {

[[noreturn]] void Fail(Position position, const std::string& message) {
  throw TemplateError(TemplateError::Kind::kRender, position, message);
}

// Variables visible at one point of a render. A frame per for-loop
// iteration and per macro call, as Jinja2 scopes them: a `set` inside a loop
// body is gone at the next iteration and after the loop (templates carry
// state out of loops with namespace()), while `if` blocks share their
// enclosing frame.
struct Frame {
  std::unordered_map<std::string, Value> vars;
  const Frame* parent = nullptr;
};

enum class Flow { kNormal, kBreak, kContinue };

class Interpreter {
 public:
  explicit Interpreter(const RenderOptions& options) : options_(options) { DefineGlobals(); }

  std::string Run(const Body& body, const Dict& context) {
    for (const auto& [name, value] : context.items()) root_.vars[name.Str()] = value;
    std::string out;
    Exec(body, &root_, &out);
    return out;
  }

 private:
  // Counts nesting of blocks and macro calls against the limit.
  class DepthGuard {
   public:
    DepthGuard(Interpreter* interpreter, Position position) : interpreter_(interpreter) {
      if (++interpreter_->depth_ > interpreter_->options_.limits.max_call_depth) {
        Fail(position, absl::StrCat("blocks and macro calls nested deeper than ", interpreter_->options_.limits.max_call_depth));
      }
    }
    ~DepthGuard() { --interpreter_->depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    Interpreter* interpreter_;
  };

  Value MakeFunction(std::string name, std::function<Value(const CallArgs&)> function) {
    auto callable = std::make_shared<Callable>();
    callable->name = std::move(name);
    callable->function = std::move(function);
    return Value::MakeCallable(std::move(callable));
  }

  void DefineGlobals() {
    globals_["raise_exception"] = MakeFunction("raise_exception", [](const CallArgs& args) -> Value {
      const Value* message = args.Get(0, "message");
      throw TemplateError(TemplateError::Kind::kRaised, args.position, message != nullptr ? message->Str() : "");
    });
    globals_["strftime_now"] = MakeFunction("strftime_now", [this](const CallArgs& args) {
      const Value* format = args.Get(0, "format");
      if (format == nullptr || !format->is_string()) Fail(args.position, "strftime_now needs a format string");
      const std::time_t now = std::chrono::system_clock::to_time_t(options_.now.value_or(std::chrono::system_clock::now()));
      std::tm local{};
      localtime_r(&now, &local);
      char buf[512];
      const size_t n = std::strftime(buf, sizeof buf, format->string_value().c_str(), &local);
      return Value(std::string(buf, n));
    });
    auto make_dict = [](const CallArgs& args) {
      Dict dict;
      if (!args.positional.empty()) {
        if (!args.positional[0].is_dict()) Fail(args.position, "namespace() and dict() take a mapping or keywords");
        // namespace() keys are attribute names; dict() keeps any key.
        for (const auto& [key, value] : args.positional[0].dict().items()) dict.SetItem(key, value);
      }
      for (const auto& [key, value] : args.keyword) dict.Set(key, value);
      return dict;
    };
    globals_["namespace"] = MakeFunction("namespace", [make_dict](const CallArgs& args) { return Value::MakeNamespace(make_dict(args)); });
    globals_["dict"] = MakeFunction("dict", [make_dict](const CallArgs& args) { return Value::MakeDict(make_dict(args)); });
    globals_["range"] = MakeFunction("range", [this](const CallArgs& args) {
      for (const Value& v : args.positional) {
        if (!v.is_int()) Fail(args.position, absl::StrCat("range() needs integers, not ", v.TypeName()));
      }
      int64_t start = 0;
      int64_t stop = 0;
      int64_t step = 1;
      if (args.positional.size() == 1) {
        stop = args.positional[0].int_value();
      } else if (args.positional.size() >= 2) {
        start = args.positional[0].int_value();
        stop = args.positional[1].int_value();
        if (args.positional.size() >= 3) step = args.positional[2].int_value();
      }
      if (step == 0) Fail(args.position, "range() arg 3 must not be zero");
      List items;
      for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
        if (static_cast<int64_t>(items.size()) >= options_.limits.max_loop_iterations) {
          Fail(args.position, absl::StrCat("range() longer than the loop limit of ", options_.limits.max_loop_iterations));
        }
        items.emplace_back(i);
        if (__builtin_add_overflow(i, step, &i)) break;
      }
      return Value::MakeList(std::move(items));
    });
  }

  void Append(std::string* out, std::string_view text, Position position) const {
    if (out->size() + text.size() > options_.limits.max_output_bytes) {
      Fail(position, absl::StrCat("the rendered text passed the limit of ", options_.limits.max_output_bytes, " bytes"));
    }
    out->append(text);
  }

  Value Lookup(const std::string& name, const Frame* frame) const {
    for (const Frame* f = frame; f != nullptr; f = f->parent) {
      const auto it = f->vars.find(name);
      if (it != f->vars.end()) return it->second;
    }
    const auto it = globals_.find(name);
    if (it != globals_.end()) return it->second;
    return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
  }

  void Bind(const std::vector<std::string>& targets, const Value& value, Frame* frame, Position position) {
    if (targets.size() == 1) {
      frame->vars[targets[0]] = value;
      return;
    }
    const List items = Iterate(value, position);
    if (items.size() != targets.size()) {
      Fail(position, absl::StrCat(items.size() < targets.size() ? "not enough" : "too many", " values to unpack (expected ",
                                  targets.size(), ", got ", items.size(), ")"));
    }
    for (size_t i = 0; i < targets.size(); ++i) frame->vars[targets[i]] = items[i];
  }

  Flow Exec(const Body& body, Frame* frame, std::string* out) {
    for (const Node& node : body) {
      const Flow flow = ExecNode(node, frame, out);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  std::string RenderChild(const Body& body, Frame* parent, Position position) {
    DepthGuard guard(this, position);
    Frame frame;
    frame.parent = parent;
    std::string text;
    Exec(body, &frame, &text);
    return text;
  }

  Flow ExecNode(const Node& node, Frame* frame, std::string* out) {
    switch (node.kind) {
      case Node::Kind::kText:
        Append(out, node.text, node.position);
        return Flow::kNormal;
      case Node::Kind::kOutput:
        Append(out, Eval(*node.expr, frame).Str(), node.position);
        return Flow::kNormal;
      case Node::Kind::kIf:
        for (const auto& [condition, body] : node.branches) {
          if (condition == nullptr || Eval(*condition, frame).Truthy()) {
            DepthGuard guard(this, node.position);
            return Exec(body, frame, out);
          }
        }
        return Flow::kNormal;
      case Node::Kind::kFor:
        ExecFor(node, frame, out);
        return Flow::kNormal;
      case Node::Kind::kSet: {
        Value value = Eval(*node.expr, frame);
        if (!node.attribute.empty()) {
          Value object = Lookup(node.targets[0], frame);
          if (!object.is_namespace()) {
            Fail(node.position, absl::StrCat("cannot set attribute '", node.attribute, "' of '", node.targets[0],
                                             "': only a namespace() has attributes to set"));
          }
          object.dict().Set(node.attribute, std::move(value));
        } else {
          Bind(node.targets, value, frame, node.position);
        }
        return Flow::kNormal;
      }
      case Node::Kind::kSetBlock:
        frame->vars[node.targets[0]] = Value(RenderChild(node.body, frame, node.position));
        return Flow::kNormal;
      case Node::Kind::kMacro:
        frame->vars[node.name] = MakeMacro(node, node.name);
        return Flow::kNormal;
      case Node::Kind::kCallBlock: {
        const Expr& call = *node.expr;
        CallArgs args = EvalArgs(call, 1, frame);
        args.keyword.emplace_back("caller", MakeMacro(node, "caller"));
        Append(out, CallValue(Eval(*call.args[0], frame), args).Str(), node.position);
        return Flow::kNormal;
      }
      case Node::Kind::kFilterBlock:
        Append(out, ApplyFilterChain(*node.expr, Value(RenderChild(node.body, frame, node.position)), frame).Str(), node.position);
        return Flow::kNormal;
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
      case Node::Kind::kScope: {
        DepthGuard guard(this, node.position);
        return Exec(node.body, frame, out);
      }
    }
    return Flow::kNormal;
  }

  void ExecFor(const Node& node, Frame* frame, std::string* out) {
    const Value iterable = Eval(*node.expr, frame);
    List items = Iterate(iterable, node.expr->position);
    if (node.filter != nullptr) {
      // Jinja2 filters first, so loop.length and loop.last count the items
      // that pass.
      List kept;
      for (const Value& item : items) {
        Frame scope;
        scope.parent = frame;
        Bind(node.targets, item, &scope, node.position);
        if (Eval(*node.filter, &scope).Truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    DepthGuard guard(this, node.position);
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      if (++iterations_ > options_.limits.max_loop_iterations) {
        Fail(node.position, absl::StrCat("loops ran more than the limit of ", options_.limits.max_loop_iterations, " iterations"));
      }
      Frame scope;
      scope.parent = frame;
      const Value& item = items[static_cast<size_t>(i)];
      Bind(node.targets, item, &scope, node.position);
      Dict loop;
      loop.Set("index", Value(i + 1));
      loop.Set("index0", Value(i));
      loop.Set("revindex", Value(n - i));
      loop.Set("revindex0", Value(n - i - 1));
      loop.Set("first", Value(i == 0));
      loop.Set("last", Value(i == n - 1));
      loop.Set("length", Value(n));
      loop.Set("depth", Value(1));
      loop.Set("depth0", Value(0));
      if (i > 0) loop.Set("previtem", items[static_cast<size_t>(i - 1)]);
      if (i + 1 < n) loop.Set("nextitem", items[static_cast<size_t>(i + 1)]);
      scope.vars["loop"] = Value::MakeDict(std::move(loop));
      if (Exec(node.body, &scope, out) == Flow::kBreak) break;
    }
    if (n == 0 && !node.else_body.empty()) {
      Frame scope;
      scope.parent = frame;
      Exec(node.else_body, &scope, out);
    }
  }

  // A macro (or a call block's caller): a callable that renders its body in
  // a frame of its own whose parent is the template's top level, so it sees
  // the template's variables as they are when it is called.
  Value MakeMacro(const Node& node, const std::string& name) {
    const Node* definition = &node;
    return MakeFunction(name, [this, definition, name](const CallArgs& args) {
      DepthGuard guard(this, args.position);
      Frame frame;
      frame.parent = &root_;
      const std::vector<Parameter>& parameters = definition->parameters;
      if (args.positional.size() > parameters.size()) {
        Fail(args.position, absl::StrCat("macro '", name, "' takes ", parameters.size(), " arguments, not ", args.positional.size()));
      }
      for (size_t i = 0; i < parameters.size(); ++i) {
        if (i < args.positional.size()) frame.vars[parameters[i].name] = args.positional[i];
      }
      for (const auto& [key, value] : args.keyword) {
        bool known = key == "caller";
        for (const Parameter& parameter : parameters) known = known || parameter.name == key;
        if (!known) Fail(args.position, absl::StrCat("macro '", name, "' takes no keyword argument '", key, "'"));
        frame.vars[key] = value;
      }
      for (const Parameter& parameter : parameters) {
        if (frame.vars.count(parameter.name) != 0) continue;
        frame.vars[parameter.name] = parameter.default_value != nullptr
                                         ? Eval(*parameter.default_value, &frame)
                                         : Value::Undefined(absl::StrCat("parameter '", parameter.name, "' was not provided"));
      }
      std::string text;
      Exec(definition->body, &frame, &text);
      return Value(std::move(text));
    });
  }

  CallArgs EvalArgs(const Expr& expr, size_t first, const Frame* frame) {
    CallArgs args;
    args.position = expr.position;
    for (size_t i = first; i < expr.args.size(); ++i) args.positional.push_back(Eval(*expr.args[i], frame));
    for (const auto& [name, value] : expr.kwargs) args.keyword.emplace_back(name, Eval(*value, frame));
    return args;
  }

  Value CallValue(const Value& callee, const CallArgs& args) {
    if (callee.is_undefined()) FailUndefined(callee, args.position);
    if (!callee.is_callable()) Fail(args.position, absl::StrCat("'", callee.TypeName(), "' object is not callable"));
    return callee.callable().function(args);
  }

  // A filter applied to its argument; the innermost filter of a
  // {% filter %} block has no argument and takes the block's text.
  Value ApplyFilterChain(const Expr& filter, const Value& block_text, const Frame* frame) {
    const Expr* argument = filter.args[0].get();
    const Value input = argument == nullptr ? block_text
                        : argument->kind == Expr::Kind::kFilter ? ApplyFilterChain(*argument, block_text, frame)
                                                                 : Eval(*argument, frame);
    return ApplyFilter(filter.name, input, EvalArgs(filter, 1, frame));
  }

  Value GetAttribute(const Value& object, const std::string& name, Position position) {
    if (object.is_undefined()) FailUndefined(object, position);
    if (object.is_dict()) {
      // Jinja2 tries the Python attribute first: d.items is the method.
      if (std::optional<Value> method = BoundMethod(object, name)) return *method;
      if (const Value* found = object.dict().Find(name)) return *found;
      return Value::Undefined(absl::StrCat("'", object.TypeName(), " object' has no attribute '", name, "'"));
    }
    if (std::optional<Value> method = BoundMethod(object, name)) return *method;
    return Value::Undefined(absl::StrCat("'", object.TypeName(), " object' has no attribute '", name, "'"));
  }

  Value GetItem(const Value& object, const Value& key, Position position) {
    if (object.is_undefined()) FailUndefined(object, position);
    if (object.is_dict()) {
      if (const Value* found = object.dict().FindItem(key)) return *found;
      if (key.is_string()) {
        if (std::optional<Value> method = BoundMethod(object, key.string_value())) return *method;
      }
      return Value::Undefined(absl::StrCat("'", object.TypeName(), " object' has no attribute '", key.Str(), "'"));
    }
    if ((object.is_list() || object.is_string()) && (key.is_int() || key.is_bool())) {
      const int64_t n = Length(object, position);
      int64_t index = key.int_value();
      if (index < 0) index += n;
      if (index < 0 || index >= n) {
        return Value::Undefined(absl::StrCat("'", object.TypeName(), " object' has no element ", key.int_value()));
      }
      if (object.is_list()) return object.list()[static_cast<size_t>(index)];
      return Value(Characters(object.string_value())[static_cast<size_t>(index)]);
    }
    if (key.is_string()) return GetAttribute(object, key.string_value(), position);
    return Value::Undefined(absl::StrCat("'", object.TypeName(), " object' has no element ", key.Repr()));
  }

  Value GetSlice(const Value& object, const Expr& expr, const Frame* frame) {
    if (object.is_undefined()) FailUndefined(object, expr.position);
    auto part = [&](size_t i) -> std::optional<int64_t> {
      if (expr.args[i] == nullptr) return std::nullopt;
      const Value v = Eval(*expr.args[i], frame);
      if (v.is_none() || v.is_undefined()) return std::nullopt;
      if (!v.is_int()) Fail(expr.position, "slice indices must be integers or None");
      return v.int_value();
    };
    const std::optional<int64_t> start_arg = part(1);
    const std::optional<int64_t> stop_arg = part(2);
    const int64_t step = part(3).value_or(1);
    if (step == 0) Fail(expr.position, "slice step cannot be zero");
    std::vector<std::string> chars;
    if (object.is_string()) chars = Characters(object.string_value());
    else if (!object.is_list()) Fail(expr.position, absl::StrCat("'", object.TypeName(), "' object is not subscriptable"));
    const int64_t n = object.is_string() ? static_cast<int64_t>(chars.size()) : static_cast<int64_t>(object.list().size());
    // Python's slice.indices().
    const int64_t lower = step > 0 ? 0 : -1;
    const int64_t upper = step > 0 ? n : n - 1;
    auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
      if (!v.has_value()) return fallback;
      int64_t x = *v;
      if (x < 0) {
        x += n;
        if (x < lower) x = lower;
      } else if (x > upper) {
        x = upper;
      }
      return x;
    };
    const int64_t start = clamp(start_arg, step > 0 ? lower : upper);
    const int64_t stop = clamp(stop_arg, step > 0 ? upper : lower);
    std::string text;
    List items;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (object.is_string()) text += chars[static_cast<size_t>(i)];
      else items.push_back(object.list()[static_cast<size_t>(i)]);
    }
    return object.is_string() ? Value(std::move(text)) : Value::MakeList(std::move(items));
  }

  std::string Checked(std::string text, Position position) const {
    if (text.size() > options_.limits.max_output_bytes) {
      Fail(position, absl::StrCat("a string passed the limit of ", options_.limits.max_output_bytes, " bytes"));
    }
    return text;
  }

  [[noreturn]] void FailOperands(const std::string& op, const Value& a, const Value& b, Position position) {
    if (a.is_undefined()) FailUndefined(a, position);
    if (b.is_undefined()) FailUndefined(b, position);
    Fail(position, absl::StrCat("unsupported operand type(s) for ", op, ": '", a.TypeName(), "' and '", b.TypeName(), "'"));
  }

  Value Arithmetic(const std::string& op, const Value& a, const Value& b, Position position) {
    if (op == "~") return Value(Checked(a.Str() + b.Str(), position));
    if (op == "+") {
      if (a.is_markup() || b.is_markup()) {
        if (a.is_string() && b.is_string()) {
          const std::string left = a.is_markup() ? a.string_value() : HtmlEscape(a.string_value());
          const std::string right = b.is_markup() ? b.string_value() : HtmlEscape(b.string_value());
          return Value::MakeMarkup(Checked(left + right, position));
        }
      }
      if (a.is_string() && b.is_string()) return Value(Checked(a.string_value() + b.string_value(), position));
      if (a.is_list() && b.is_list()) {
        List items = a.list();
        items.insert(items.end(), b.list().begin(), b.list().end());
        return Value::MakeList(std::move(items));
      }
    }
    if (op == "*" && (((a.is_string() || a.is_list()) && b.is_int()) || ((b.is_string() || b.is_list()) && a.is_int()))) {
      const Value& sequence = a.is_int() ? b : a;
      const int64_t times = std::max<int64_t>(0, (a.is_int() ? a : b).int_value());
      if (sequence.is_string()) {
        if (times > 0 && sequence.string_value().size() * static_cast<uint64_t>(times) > options_.limits.max_output_bytes) {
          Fail(position, "a repeated string passed the output limit");
        }
        std::string out;
        for (int64_t i = 0; i < times; ++i) out += sequence.string_value();
        return Value(std::move(out));
      }
      if (times > 0 && sequence.list().size() * static_cast<uint64_t>(times) > static_cast<uint64_t>(options_.limits.max_loop_iterations)) {
        Fail(position, "a repeated list passed the loop limit");
      }
      List items;
      for (int64_t i = 0; i < times; ++i) items.insert(items.end(), sequence.list().begin(), sequence.list().end());
      return Value::MakeList(std::move(items));
    }
    if (!a.is_number() || !b.is_number()) FailOperands(op, a, b, position);
    const bool integers = !a.is_float() && !b.is_float();
    if (op == "/") {
      if (b.number() == 0) Fail(position, "division by zero");
      return Value(a.number() / b.number());
    }
    if (integers) {
      const int64_t x = a.int_value();
      const int64_t y = b.int_value();
      int64_t r = 0;
      if (op == "+" && !__builtin_add_overflow(x, y, &r)) return Value(r);
      if (op == "-" && !__builtin_sub_overflow(x, y, &r)) return Value(r);
      if (op == "*" && !__builtin_mul_overflow(x, y, &r)) return Value(r);
      if (op == "//" || op == "%") {
        if (y == 0) Fail(position, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) Fail(position, "integer overflow");
        // Python floors: the remainder takes the divisor's sign.
        int64_t q = x / y;
        int64_t m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return op == "//" ? Value(q) : Value(m);
      }
      if (op == "**" && y >= 0) {
        // By squaring: a large exponent of 0, 1 or -1 must not loop.
        int64_t result = 1;
        int64_t base = x;
        for (int64_t e = y; e > 0; e >>= 1) {
          if ((e & 1) != 0 && __builtin_mul_overflow(result, base, &result)) Fail(position, "integer overflow in **");
          if (e > 1 && __builtin_mul_overflow(base, base, &base)) Fail(position, "integer overflow in **");
        }
        return Value(result);
      }
      if (op != "**") Fail(position, absl::StrCat("integer overflow in ", op));
    }
    const double x = a.number();
    const double y = b.number();
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "**") return Value(std::pow(x, y));
    if (op == "//" || op == "%") {
      if (y == 0) Fail(position, "float division or modulo by zero");
      const double m = std::fmod(x, y);
      const double mod = (m != 0 && ((m < 0) != (y < 0))) ? m + y : m;
      return op == "%" ? Value(mod) : Value(std::floor((x - mod) / y + 0.5));
    }
    FailOperands(op, a, b, position);
  }

  bool Contains(const Value& container, const Value& item, Position position) {
    if (container.is_string()) {
      if (!item.is_string()) {
        if (item.is_undefined()) FailUndefined(item, position);
        Fail(position, absl::StrCat("'in <string>' requires string as left operand, not ", item.TypeName()));
      }
      return container.string_value().find(item.string_value()) != std::string::npos;
    }
    if (container.is_dict() && !container.is_namespace()) {
      return container.dict().FindItem(item) != nullptr;
    }
    if (container.is_list()) {
      for (const Value& v : container.list()) {
        if (v == item) return true;
      }
      return false;
    }
    if (container.is_undefined()) return false;  // Undefined iterates as empty
    Fail(position, absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
  }

  bool Compare(const std::string& op, const Value& a, const Value& b, Position position) {
    if (op == "==") return a == b;
    if (op == "!=") return !(a == b);
    if (op == "in") return Contains(b, a, position);
    if (op == "notin") return !Contains(b, a, position);
    if (op == "<") return Less(a, b, position);
    if (op == ">") return Less(b, a, position);
    if (op == "<=") return !Less(b, a, position);
    return !Less(a, b, position);  // >=
  }

  Value Eval(const Expr& expr, const Frame* frame) {
    switch (expr.kind) {
      case Expr::Kind::kLiteral:
        return expr.value;
      case Expr::Kind::kName:
        return Lookup(expr.name, frame);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        List items;
        for (const ExprPtr& item : expr.args) items.push_back(Eval(*item, frame));
        return expr.kind == Expr::Kind::kTuple ? Value::MakeTuple(std::move(items)) : Value::MakeList(std::move(items));
      }
      case Expr::Kind::kDict: {
        Dict dict;
        for (size_t i = 0; i + 1 < expr.args.size(); i += 2) {
          Value key = Eval(*expr.args[i], frame);
          if (!key.is_string() && !key.is_number() && !key.is_none()) {
            Fail(expr.args[i]->position, absl::StrCat("unhashable type: '", key.TypeName(), "'"));
          }
          dict.SetItem(std::move(key), Eval(*expr.args[i + 1], frame));
        }
        return Value::MakeDict(std::move(dict));
      }
      case Expr::Kind::kAttribute:
        return GetAttribute(Eval(*expr.args[0], frame), expr.name, expr.position);
      case Expr::Kind::kSubscript:
        return GetItem(Eval(*expr.args[0], frame), Eval(*expr.args[1], frame), expr.position);
      case Expr::Kind::kSlice:
        return GetSlice(Eval(*expr.args[0], frame), expr, frame);
      case Expr::Kind::kCall: {
        const Value callee = Eval(*expr.args[0], frame);
        return CallValue(callee, EvalArgs(expr, 1, frame));
      }
      case Expr::Kind::kFilter:
        return ApplyFilterChain(expr, Value(), frame);
      case Expr::Kind::kTest: {
        const Value input = Eval(*expr.args[0], frame);
        return Value(ApplyTest(expr.name, input, EvalArgs(expr, 1, frame)) != expr.negated);
      }
      case Expr::Kind::kUnary: {
        const Value v = Eval(*expr.args[0], frame);
        if (expr.name == "not") return Value(!v.Truthy());
        if (v.is_undefined()) FailUndefined(v, expr.position);
        if (!v.is_number()) Fail(expr.position, absl::StrCat("bad operand type for unary ", expr.name, ": '", v.TypeName(), "'"));
        if (expr.name == "+") return v.is_float() ? v : Value(v.int_value());
        if (v.is_float()) return Value(-v.float_value());
        if (v.int_value() == INT64_MIN) Fail(expr.position, "integer overflow in unary -");
        return Value(-v.int_value());
      }
      case Expr::Kind::kBinary: {
        const Value left = Eval(*expr.args[0], frame);
        // and/or return an operand, as in Python.
        if (expr.name == "and") return left.Truthy() ? Eval(*expr.args[1], frame) : left;
        if (expr.name == "or") return left.Truthy() ? left : Eval(*expr.args[1], frame);
        return Arithmetic(expr.name, left, Eval(*expr.args[1], frame), expr.position);
      }
      case Expr::Kind::kCompare: {
        Value left = Eval(*expr.args[0], frame);
        for (size_t i = 0; i < expr.ops.size(); ++i) {
          Value right = Eval(*expr.args[i + 1], frame);
          if (!Compare(expr.ops[i], left, right, expr.position)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Kind::kCondition:
        if (Eval(*expr.args[1], frame).Truthy()) return Eval(*expr.args[0], frame);
        return expr.args[2] != nullptr ? Eval(*expr.args[2], frame) : Value::Undefined("the condition was false and there is no else");
    }
    return Value();
  }

  const RenderOptions& options_;
  std::unordered_map<std::string, Value> globals_;
  Frame root_;
  int64_t iterations_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string Interpret(const Body& body, const Dict& context, const RenderOptions& options) {
  return Interpreter(options).Run(body, context);
}

}  // namespace expertd::jinja
