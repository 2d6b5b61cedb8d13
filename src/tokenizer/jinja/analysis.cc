#include "tokenizer/jinja/analysis.h"

#include <fmt/format.h>

#include <map>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/lexer.h"

namespace dlx::jinja {
namespace {

// Walks nodes tracking whether Jinja would be in a "soft" frame (if test/branch, inline if), where unknown
// names are only reported when evaluated.
class NameChecker {
 public:
  explicit NameChecker(std::string_view src) : src_(src) {}

  void nodes(const NodeList& list, bool soft) {
    for (const auto& n : list) node(*n, soft);
  }

 private:
  void node(const Node& n, bool soft) {
    switch (n.kind) {
      case NodeKind::If:
        for (const auto& c : n.conds) expr(*c, true);
        for (const auto& b : n.bodies) nodes(b, true);
        return;
      case NodeKind::For:
        expr(*n.expr, soft);
        if (n.filter) expr(*n.filter, false);
        for (const auto& b : n.bodies) nodes(b, false);
        return;
      case NodeKind::Macro:
        for (const auto& d : n.defaults) {
          if (d) expr(*d, false);
        }
        nodes(n.bodies[0], false);
        return;
      case NodeKind::SetBlock:
      case NodeKind::Scope:
        nodes(n.bodies[0], false);
        return;
      default:
        if (n.expr) expr(*n.expr, soft);
    }
  }

  void expr(const Expr& e, bool soft) {
    if (e.kind == ExprKind::Cond) soft = true;
    if (!soft && e.kind == ExprKind::Filter && !is_filter(e.name) && !is_jinja_filter(e.name)) {
      fail_at(src_, e.offset, fmt::format("unknown filter '{}'", e.name));
    }
    if (!soft && e.kind == ExprKind::Test && !is_test(e.name) && !is_jinja_test(e.name)) {
      fail_at(src_, e.offset, fmt::format("unknown test '{}'", e.name));
    }
    for (const auto& x : e.items) {
      if (x) expr(*x, soft);
    }
    for (const auto& kv : e.kwargs) expr(*kv.second, soft);
  }

  std::string_view src_;
};

// Mirrors Jinja's idtracking for the root frame: records, per name, whether it is first loaded or first
// stored. Loop bodies, macro bodies, set-block bodies and {% generation %} bodies are other frames and are
// not visited (a for loop contributes only its iterable); names first seen inside an if branch resolve to
// the render variable, as Jinja's branch merging does.
class RootSymbols {
 public:
  void nodes(const NodeList& list, bool in_branch) {
    for (const auto& n : list) node(*n, in_branch);
  }
  std::vector<std::string> undefined_at_start() const {
    std::vector<std::string> out;
    for (const auto& [name, undefined] : first_) {
      if (undefined) out.push_back(name);
    }
    return out;
  }

 private:
  void load(const std::string& name) { first_.emplace(name, false); }
  void store(const std::string& name, bool in_branch) { first_.emplace(name, !in_branch); }

  void node(const Node& n, bool in_branch) {
    switch (n.kind) {
      case NodeKind::Output:
        expr(*n.expr);
        return;
      case NodeKind::If:
        expr(*n.conds[0]);
        for (size_t i = 1; i < n.conds.size(); ++i) expr(*n.conds[i]);
        for (const auto& b : n.bodies) nodes(b, true);
        return;
      case NodeKind::For:
        expr(*n.expr);
        return;
      case NodeKind::Set:
        expr(*n.expr);
        if (!n.attr.empty()) {
          load(n.targets[0]);
        } else {
          for (const auto& t : n.targets) store(t, in_branch);
        }
        return;
      case NodeKind::SetBlock:
        store(n.targets[0], in_branch);
        return;
      case NodeKind::Macro:
        store(n.text, in_branch);
        return;
      default:
        return;
    }
  }

  void expr(const Expr& e) {
    if (e.kind == ExprKind::Name) load(e.name);
    for (const auto& x : e.items) {
      if (x) expr(*x);
    }
    for (const auto& kv : e.kwargs) expr(*kv.second);
  }

  std::map<std::string, bool> first_;  // name -> first use is an unconditional store
};

}  // namespace

void check_filter_and_test_names(std::string_view source, const NodeList& root) {
  NameChecker(source).nodes(root, false);
}

std::vector<std::string> names_undefined_at_start(const NodeList& root) {
  RootSymbols symbols;
  symbols.nodes(root, false);
  return symbols.undefined_at_start();
}

}  // namespace dlx::jinja
