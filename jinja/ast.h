#ifndef EXPERTD_JINJA_AST_H_
#define EXPERTD_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jinja/value.h"

namespace expertd::jinja {

// Where a node starts in the template, for error messages.
struct Position {
  int line = 1;
  int column = 1;
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// An expression. One struct for every kind keeps the tree walk a single
// switch; which fields a kind uses is listed beside it.
struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,  // name
    kList,  // args: items
    kTuple,  // args: items (a tuple is a list to templates)
    kDict,  // args: keys and values interleaved
    kAttribute,  // args[0].name
    kSubscript,  // args[0][args[1]]
    kSlice,  // args[0][args[1]:args[2]:args[3]], absent parts null
    kCall,  // args[0](args[1..], kwargs)
    kFilter,  // name(args[0], args[1..], kwargs)
    kTest,  // args[0] is [not] name(args[1..]); negated
    kUnary,  // op args[0]: "-", "+", "not"
    kBinary,  // args[0] op args[1]: + - * / // % ** ~ and or
    kCompare,  // args[0] ops[0] args[1] ops[1] args[2] ...: == != < <= > >= in notin
    kCondition,  // args[0] if args[1] else args[2] (args[2] null: undefined)
  };
  Kind kind = Kind::kLiteral;
  Position position;
  int height = 1;  // levels of the subtree; the parser bounds it, so walking it cannot exhaust the stack
  Value value;
  std::string name;  // kName, kAttribute, kFilter, kTest; the operator of kUnary and kBinary
  std::vector<std::string> ops;  // kCompare
  bool negated = false;  // kTest
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;  // kCall, kFilter, kTest
};

struct Node;
using Body = std::vector<Node>;

// A macro's parameter: its name and default (null: required).
struct Parameter {
  std::string name;
  ExprPtr default_value;
};

// A statement or a run of output.
struct Node {
  enum class Kind {
    kText,  // text
    kOutput,  // {{ expr }}
    kIf,  // branches: (condition, body)...; a null condition is else
    kFor,  // for targets in expr [if filter]: body [else: else_body]
    kSet,  // set targets = expr; or set target.attribute = expr
    kSetBlock,  // set targets[0]: body rendered to a string
    kMacro,  // macro name(parameters): body
    kCallBlock,  // call(parameters) expr: body is the caller()
    kFilterBlock,  // filter expr: body, expr a kFilter on a null argument
    kBreak,
    kContinue,
    kScope,  // body (generation blocks: rendered as is)
  };
  Kind kind = Kind::kText;
  Position position;
  std::string text;
  ExprPtr expr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  std::vector<std::string> targets;
  std::string attribute;  // kSet on a namespace: set targets[0].attribute
  ExprPtr filter;  // kFor's if clause
  std::string name;  // kMacro
  std::vector<Parameter> parameters;  // kMacro, kCallBlock
  Body body;
  Body else_body;
};

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_AST_H_
