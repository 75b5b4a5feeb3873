#include "jinja/parser.h"

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "jinja/error.h"

namespace expertd::jinja {
namespace {

using Type = Token::Type;

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, int max_depth) : tokens_(tokens), max_depth_(max_depth) {}

  Body ParseTemplate() {
    std::string end;
    Body body = ParseBody({}, &end);
    return body;
  }

 private:
  // Counts nesting on the way down so deep input fails cleanly.
  class DepthGuard {
   public:
    explicit DepthGuard(Parser* parser) : parser_(parser) {
      if (++parser_->depth_ > parser_->max_depth_) {
        parser_->Fail(absl::StrCat("nested deeper than ", parser_->max_depth_, " levels"));
      }
    }
    ~DepthGuard() { --parser_->depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    Parser* parser_;
  };

  const Token& Peek(size_t ahead = 0) const {
    const size_t at = pos_ + ahead;
    return at < tokens_.size() ? tokens_[at] : tokens_.back();
  }
  const Token& Next() {
    const Token& token = Peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    return token;
  }
  Position Here() const { return Position{.line = Peek().line, .column = Peek().column}; }

  [[noreturn]] void Fail(const std::string& message) const {
    throw TemplateError(TemplateError::Kind::kSyntax, Here(), message);
  }

  static std::string Describe(const Token& token) {
    switch (token.type) {
      case Type::kText:
        return "text";
      case Type::kVariableBegin:
        return "'{{'";
      case Type::kVariableEnd:
        return "'}}'";
      case Type::kBlockBegin:
        return "'{%'";
      case Type::kBlockEnd:
        return "'%}'";
      case Type::kString:
        return "a string";
      case Type::kInt:
      case Type::kFloat:
        return "a number";
      case Type::kEnd:
        return "the end of the template";
      default:
        return absl::StrCat("'", token.text, "'");
    }
  }

  bool IsOp(std::string_view op, size_t ahead = 0) const {
    return Peek(ahead).type == Type::kOperator && Peek(ahead).text == op;
  }
  bool IsName(std::string_view name, size_t ahead = 0) const {
    return Peek(ahead).type == Type::kName && Peek(ahead).text == name;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  void ExpectOp(std::string_view op) {
    if (!SkipOp(op)) Fail(absl::StrCat("expected '", std::string(op), "', found ", Describe(Peek())));
  }
  void Expect(Type type, std::string_view what) {
    if (Peek().type != type) Fail(absl::StrCat("expected ", std::string(what), ", found ", Describe(Peek())));
    Next();
  }
  std::string ExpectName() {
    if (Peek().type != Type::kName) Fail(absl::StrCat("expected a name, found ", Describe(Peek())));
    return Next().text;
  }
  void ExpectBlockEnd() { Expect(Type::kBlockEnd, "'%}'"); }

  // Parses nodes until a block tag named in `ends`; consumes '{%' and the
  // tag's name and stores the name in *end. An end of input is an error
  // unless ends is empty (the template's top level).
  Body ParseBody(std::initializer_list<std::string_view> ends, std::string* end) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& token = Peek();
      if (token.type == Type::kEnd) {
        if (ends.size() == 0) return body;
        std::string wanted;
        for (std::string_view e : ends) absl::StrAppend(&wanted, wanted.empty() ? "" : " or ", "{% ", std::string(e), " %}");
        Fail(absl::StrCat("the template ended where ", wanted, " was expected"));
      }
      if (token.type == Type::kText) {
        Node node;
        node.kind = Node::Kind::kText;
        node.position = Here();
        node.text = Next().text;
        body.push_back(std::move(node));
      } else if (token.type == Type::kVariableBegin) {
        Node node;
        node.kind = Node::Kind::kOutput;
        node.position = Here();
        Next();
        node.expr = ParseTuple(/*with_condition=*/true);
        Expect(Type::kVariableEnd, "'}}'");
        body.push_back(std::move(node));
      } else if (token.type == Type::kBlockBegin) {
        if (Peek(1).type == Type::kName) {
          for (std::string_view e : ends) {
            if (Peek(1).text == e) {
              Next();
              *end = Next().text;
              return body;
            }
          }
        }
        body.push_back(ParseStatement());
      } else {
        Fail(absl::StrCat("unexpected ", Describe(token)));
      }
    }
  }

  Node ParseStatement() {
    Next();  // {%
    Node node;
    node.position = Here();
    const std::string keyword = ExpectName();
    std::string end;
    if (keyword == "if") {
      node.kind = Node::Kind::kIf;
      ExprPtr condition = ParseExpression();
      ExpectBlockEnd();
      Body body = ParseBody({"elif", "else", "endif"}, &end);
      node.branches.emplace_back(std::move(condition), std::move(body));
      while (end == "elif") {
        condition = ParseExpression();
        ExpectBlockEnd();
        body = ParseBody({"elif", "else", "endif"}, &end);
        node.branches.emplace_back(std::move(condition), std::move(body));
      }
      if (end == "else") {
        ExpectBlockEnd();
        body = ParseBody({"endif"}, &end);
        node.branches.emplace_back(nullptr, std::move(body));
      }
    } else if (keyword == "for") {
      node.kind = Node::Kind::kFor;
      node.targets = ParseTargets();
      if (!SkipName("in")) Fail(absl::StrCat("expected 'in' in a for loop, found ", Describe(Peek())));
      node.expr = ParseTuple(/*with_condition=*/false);
      if (SkipName("if")) node.filter = ParseExpression();
      if (IsName("recursive")) Fail("recursive for loops are not supported");
      ExpectBlockEnd();
      node.body = ParseBody({"else", "endfor"}, &end);
      if (end == "else") {
        ExpectBlockEnd();
        node.else_body = ParseBody({"endfor"}, &end);
      }
    } else if (keyword == "set") {
      node.targets.push_back(ExpectName());
      if (SkipOp(".")) {
        node.attribute = ExpectName();
      } else {
        while (SkipOp(",")) node.targets.push_back(ExpectName());
      }
      if (SkipOp("=")) {
        node.kind = Node::Kind::kSet;
        node.expr = ParseTuple(/*with_condition=*/true);
      } else {
        if (node.targets.size() != 1 || !node.attribute.empty()) Fail("a block set assigns one plain name");
        node.kind = Node::Kind::kSetBlock;
        ExpectBlockEnd();
        node.body = ParseBody({"endset"}, &end);
      }
    } else if (keyword == "macro") {
      node.kind = Node::Kind::kMacro;
      node.name = ExpectName();
      ExpectOp("(");
      node.parameters = ParseParameters();
      ExpectBlockEnd();
      node.body = ParseBody({"endmacro"}, &end);
    } else if (keyword == "call") {
      node.kind = Node::Kind::kCallBlock;
      if (SkipOp("(")) node.parameters = ParseParameters();
      node.expr = ParseExpression();
      if (node.expr->kind != Expr::Kind::kCall) Fail("{% call %} needs a macro call");
      ExpectBlockEnd();
      node.body = ParseBody({"endcall"}, &end);
    } else if (keyword == "filter") {
      node.kind = Node::Kind::kFilterBlock;
      node.expr = ParseFilters(nullptr);
      ExpectBlockEnd();
      node.body = ParseBody({"endfilter"}, &end);
    } else if (keyword == "break" || keyword == "continue") {
      node.kind = keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
    } else if (keyword == "generation") {
      // Hugging Face's tag marking assistant text for its token mask; the
      // text renders as is.
      node.kind = Node::Kind::kScope;
      ExpectBlockEnd();
      node.body = ParseBody({"endgeneration"}, &end);
    } else {
      --pos_;
      Fail(absl::StrCat("unknown tag '", keyword, "'"));
    }
    // The end tag may repeat the block's name ({% endmacro name %}).
    if (!end.empty() && Peek().type == Type::kName) Next();
    ExpectBlockEnd();
    return node;
  }

  std::vector<std::string> ParseTargets() {
    std::vector<std::string> targets;
    const bool parenthesised = SkipOp("(");
    targets.push_back(ExpectName());
    while (SkipOp(",")) targets.push_back(ExpectName());
    if (parenthesised) ExpectOp(")");
    return targets;
  }

  // After '(': name [= default], ... ')'.
  std::vector<Parameter> ParseParameters() {
    std::vector<Parameter> parameters;
    while (!SkipOp(")")) {
      if (!parameters.empty()) ExpectOp(",");
      if (SkipOp(")")) break;
      Parameter parameter;
      parameter.name = ExpectName();
      if (SkipOp("=")) parameter.default_value = ParseExpression();
      parameters.push_back(std::move(parameter));
    }
    return parameters;
  }

  // Records the height of a finished node and refuses trees too tall to walk
  // (a chain of 10000 '+' parses without recursion but evaluates with it).
  ExprPtr Seal(ExprPtr expr) {
    int height = 0;
    for (const ExprPtr& arg : expr->args) {
      if (arg != nullptr) height = std::max(height, arg->height);
    }
    for (const auto& [name, arg] : expr->kwargs) height = std::max(height, arg->height);
    expr->height = height + 1;
    if (expr->height > max_depth_) Fail(absl::StrCat("expression nested deeper than ", max_depth_, " levels"));
    return expr;
  }

  ExprPtr Make(Expr::Kind kind, Position position) {
    auto expr = std::make_unique<Expr>();
    expr->kind = kind;
    expr->position = position;
    return expr;
  }

  // expression [, expression ...]: a tuple when there is a comma.
  ExprPtr ParseTuple(bool with_condition) {
    const Position position = Here();
    ExprPtr first = with_condition ? ParseExpression() : ParseOr();
    if (!IsOp(",")) return first;
    ExprPtr tuple = Make(Expr::Kind::kTuple, position);
    tuple->args.push_back(std::move(first));
    while (SkipOp(",")) {
      if (Peek().type == Type::kVariableEnd || Peek().type == Type::kBlockEnd || IsOp(")")) break;
      tuple->args.push_back(with_condition ? ParseExpression() : ParseOr());
    }
    return Seal(std::move(tuple));
  }

  ExprPtr ParseExpression() {
    DepthGuard guard(this);
    const Position position = Here();
    ExprPtr expr = ParseOr();
    while (SkipName("if")) {
      ExprPtr condition = Make(Expr::Kind::kCondition, position);
      ExprPtr test = ParseOr();
      ExprPtr otherwise = SkipName("else") ? ParseExpression() : nullptr;
      condition->args.push_back(std::move(expr));
      condition->args.push_back(std::move(test));
      condition->args.push_back(std::move(otherwise));
      expr = Seal(std::move(condition));
    }
    return expr;
  }

  ExprPtr Binary(std::string op, ExprPtr left, ExprPtr right, Position position) {
    ExprPtr expr = Make(Expr::Kind::kBinary, position);
    expr->name = std::move(op);
    expr->args.push_back(std::move(left));
    expr->args.push_back(std::move(right));
    return Seal(std::move(expr));
  }

  ExprPtr ParseOr() {
    const Position position = Here();
    ExprPtr left = ParseAnd();
    while (SkipName("or")) left = Binary("or", std::move(left), ParseAnd(), position);
    return left;
  }

  ExprPtr ParseAnd() {
    const Position position = Here();
    ExprPtr left = ParseNot();
    while (SkipName("and")) left = Binary("and", std::move(left), ParseNot(), position);
    return left;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      const Position position = Here();
      Next();
      ExprPtr expr = Make(Expr::Kind::kUnary, position);
      expr->name = "not";
      expr->args.push_back(ParseNot());
      return Seal(std::move(expr));
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    const Position position = Here();
    ExprPtr first = ParseMath1();
    ExprPtr compare;
    while (true) {
      std::string op;
      if (Peek().type == Type::kOperator &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == "<=" ||
           Peek().text == ">" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "notin";
      } else {
        break;
      }
      if (!compare) {
        compare = Make(Expr::Kind::kCompare, position);
        compare->args.push_back(std::move(first));
      }
      compare->ops.push_back(op);
      compare->args.push_back(ParseMath1());
    }
    return compare ? Seal(std::move(compare)) : std::move(first);
  }

  ExprPtr ParseMath1() {
    const Position position = Here();
    ExprPtr left = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      std::string op = Next().text;
      left = Binary(op, std::move(left), ParseConcat(), position);
    }
    return left;
  }

  ExprPtr ParseConcat() {
    const Position position = Here();
    ExprPtr left = ParseMath2();
    while (SkipOp("~")) left = Binary("~", std::move(left), ParseMath2(), position);
    return left;
  }

  ExprPtr ParseMath2() {
    const Position position = Here();
    ExprPtr left = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      std::string op = Next().text;
      left = Binary(op, std::move(left), ParsePow(), position);
    }
    return left;
  }

  ExprPtr ParsePow() {
    const Position position = Here();
    ExprPtr left = ParseUnary(true);
    while (SkipOp("**")) left = Binary("**", std::move(left), ParseUnary(true), position);
    return left;
  }

  ExprPtr ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    const Position position = Here();
    ExprPtr expr;
    if (IsOp("-") || IsOp("+")) {
      expr = Make(Expr::Kind::kUnary, position);
      expr->name = Next().text;
      expr->args.push_back(ParseUnary(false));
      expr = Seal(std::move(expr));
    } else {
      expr = ParsePrimary();
    }
    expr = ParsePostfix(std::move(expr));
    if (with_filter) expr = ParseFilterExpr(std::move(expr));
    return expr;
  }

  ExprPtr ParsePrimary() {
    const Position position = Here();
    const Token& token = Peek();
    switch (token.type) {
      case Type::kName: {
        const std::string& name = Next().text;
        ExprPtr expr = Make(Expr::Kind::kLiteral, position);
        if (name == "true" || name == "True") {
          expr->value = Value(true);
        } else if (name == "false" || name == "False") {
          expr->value = Value(false);
        } else if (name == "none" || name == "None") {
          expr->value = Value::None();
        } else {
          expr->kind = Expr::Kind::kName;
          expr->name = name;
        }
        return expr;
      }
      case Type::kString: {
        // Adjacent literals join, as in Python.
        std::string text;
        while (Peek().type == Type::kString) text += Next().text;
        ExprPtr expr = Make(Expr::Kind::kLiteral, position);
        expr->value = Value(std::move(text));
        return expr;
      }
      case Type::kInt:
      case Type::kFloat: {
        ExprPtr expr = Make(Expr::Kind::kLiteral, position);
        expr->value = token.type == Type::kInt ? Value(token.int_value) : Value(token.float_value);
        Next();
        return expr;
      }
      case Type::kOperator:
        if (SkipOp("(")) {
          if (SkipOp(")")) return Make(Expr::Kind::kTuple, position);
          ExprPtr expr = ParseTuple(true);
          ExpectOp(")");
          return expr;
        }
        if (SkipOp("[")) {
          ExprPtr list = Make(Expr::Kind::kList, position);
          while (!SkipOp("]")) {
            if (!list->args.empty()) ExpectOp(",");
            if (SkipOp("]")) break;
            list->args.push_back(ParseExpression());
          }
          return Seal(std::move(list));
        }
        if (SkipOp("{")) {
          ExprPtr dict = Make(Expr::Kind::kDict, position);
          while (!SkipOp("}")) {
            if (!dict->args.empty()) ExpectOp(",");
            if (SkipOp("}")) break;
            dict->args.push_back(ParseExpression());
            ExpectOp(":");
            dict->args.push_back(ParseExpression());
          }
          return Seal(std::move(dict));
        }
        break;
      default:
        break;
    }
    Fail(absl::StrCat("expected an expression, found ", Describe(token)));
  }

  ExprPtr ParsePostfix(ExprPtr expr) {
    while (true) {
      const Position position = Here();
      if (SkipOp(".")) {
        if (Peek().type == Type::kInt) {
          ExprPtr index = Make(Expr::Kind::kLiteral, position);
          index->value = Value(Next().int_value);
          ExprPtr subscript = Make(Expr::Kind::kSubscript, position);
          subscript->args.push_back(std::move(expr));
          subscript->args.push_back(std::move(index));
          expr = Seal(std::move(subscript));
        } else {
          ExprPtr attribute = Make(Expr::Kind::kAttribute, position);
          attribute->name = ExpectName();
          attribute->args.push_back(std::move(expr));
          expr = Seal(std::move(attribute));
        }
      } else if (SkipOp("[")) {
        expr = ParseSubscript(std::move(expr), position);
      } else if (IsOp("(")) {
        expr = ParseCall(std::move(expr));
      } else {
        return expr;
      }
    }
  }

  // After '[': an index or a slice [start:stop:step].
  ExprPtr ParseSubscript(ExprPtr object, Position position) {
    ExprPtr parts[3];
    bool slice = false;
    if (!IsOp(":")) parts[0] = ParseExpression();
    if (SkipOp(":")) {
      slice = true;
      if (!IsOp("]") && !IsOp(":")) parts[1] = ParseExpression();
      if (SkipOp(":") && !IsOp("]")) parts[2] = ParseExpression();
    }
    ExpectOp("]");
    ExprPtr expr = Make(slice ? Expr::Kind::kSlice : Expr::Kind::kSubscript, position);
    expr->args.push_back(std::move(object));
    expr->args.push_back(std::move(parts[0]));
    if (slice) {
      expr->args.push_back(std::move(parts[1]));
      expr->args.push_back(std::move(parts[2]));
    }
    return Seal(std::move(expr));
  }

  // '(' args ')': positional first, then name=value.
  void ParseArguments(Expr* call) {
    ExpectOp("(");
    bool first = true;
    while (!SkipOp(")")) {
      if (!first) ExpectOp(",");
      first = false;
      if (SkipOp(")")) break;
      if (Peek().type == Type::kName && IsOp("=", 1)) {
        std::string name = Next().text;
        Next();
        call->kwargs.emplace_back(std::move(name), ParseExpression());
      } else {
        if (!call->kwargs.empty()) Fail("a positional argument follows a keyword argument");
        call->args.push_back(ParseExpression());
      }
    }
  }

  ExprPtr ParseCall(ExprPtr callee) {
    ExprPtr call = Make(Expr::Kind::kCall, Here());
    call->args.push_back(std::move(callee));
    ParseArguments(call.get());
    return Seal(std::move(call));
  }

  // | name[(args)] | ... applied to `input` (null in {% filter %}).
  ExprPtr ParseFilters(ExprPtr input) {
    bool first = input == nullptr;
    while (first || SkipOp("|")) {
      first = false;
      ExprPtr filter = Make(Expr::Kind::kFilter, Here());
      filter->name = ExpectName();
      while (SkipOp(".")) filter->name += "." + ExpectName();
      filter->args.push_back(std::move(input));
      if (IsOp("(")) ParseArguments(filter.get());
      input = Seal(std::move(filter));
    }
    return input;
  }

  ExprPtr ParseFilterExpr(ExprPtr expr) {
    while (true) {
      if (IsOp("|")) {
        expr = ParseFilters(std::move(expr));
      } else if (IsName("is")) {
        const Position position = Here();
        Next();
        ExprPtr test = Make(Expr::Kind::kTest, position);
        test->negated = SkipName("not");
        test->name = ExpectName();
        test->args.push_back(std::move(expr));
        if (IsOp("(")) {
          ParseArguments(test.get());
        } else if ((Peek().type == Type::kName || Peek().type == Type::kString || Peek().type == Type::kInt ||
                    Peek().type == Type::kFloat || IsOp("[") || IsOp("{")) &&
                   !IsName("else") && !IsName("or") && !IsName("and") && !IsName("if") && !IsName("is")) {
          test->args.push_back(ParsePostfix(ParsePrimary()));
        }
        expr = Seal(std::move(test));
      } else if (IsOp("(")) {
        expr = ParseCall(std::move(expr));
      } else {
        return expr;
      }
    }
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int max_depth_;
};

}  // namespace

Body ParseTokens(const std::vector<Token>& tokens, int max_depth) { return Parser(tokens, max_depth).ParseTemplate(); }

}  // namespace expertd::jinja
