// Syntax tree of a parsed chat template: expressions (Expr) and statements (Node). Every node keeps the byte
// offset of its first token so run-time errors can name the line and column.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace dlx::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  Literal,  // value
  Name,     // name
  List,     // [items...]
  Tuple,    // (items...,)
  Dict,     // {items[0]: items[1], items[2]: items[3], ...}
  Attr,     // items[0].name
  Item,     // items[0][items[1]]
  Slice,    // items[0][items[1]:items[2]:items[3]], omitted parts are null
  Call,     // items[0](items[1..], kwargs)
  Filter,   // items[0] | name(items[1..], kwargs)
  Test,     // items[0] is [not] name(items[1..])
  Unary,    // name ("-", "+", "not") applied to items[0]
  Binary,   // items[0] name items[1], name one of + - * / // % ** ~ and or
  Compare,  // items[0] ops[0] items[1] ops[1] items[2] ... (chained like Python; ops include "in", "not in")
  Cond,     // items[0] if items[1] else items[2] (items[2] null: undefined when false)
};

struct Expr {
  ExprKind kind;
  size_t offset = 0;
  int height = 1;                // the longest chain of expressions from this one down (the parser bounds it)
  Value value;                   // Literal
  std::string name;              // Name, Attr, Filter, Test; the operator of Unary/Binary
  std::vector<std::string> ops;  // Compare
  bool negated = false;          // Test: `is not`
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;  // Call, Filter
};

struct Node;
using NodeList = std::vector<std::unique_ptr<Node>>;

enum class NodeKind {
  Text,      // text
  Output,    // {{ expr }}
  If,        // conds[i] guards bodies[i]; one more body than conds is the else branch
  For,       // for targets in expr [if filter]: bodies[0], else bodies[1] (optional)
  Set,       // set targets = expr, or set targets[0].attr = expr (namespace attribute)
  SetBlock,  // {% set targets[0] %}bodies[0]{% endset %}
  Macro,     // macro name(targets[i] = defaults[i] or null): bodies[0]
  Break,
  Continue,
  Scope,  // bodies[0] rendered in place: {% generation %} (HF's assistant-mask marker)
};

struct Node {
  NodeKind kind;
  size_t offset = 0;
  std::string text;  // Text; Macro name
  ExprPtr expr;      // Output; Set value; For iterable
  ExprPtr filter;    // For: the `if` that filters items
  std::string attr;  // Set: namespace attribute target
  std::vector<std::string> targets;
  std::vector<ExprPtr> conds;     // If
  std::vector<ExprPtr> defaults;  // Macro
  std::vector<NodeList> bodies;
};

}  // namespace dlx::jinja
