#include "tokenizer/jinja/template.h"

#include <fmt/format.h>

#include "tokenizer/jinja/analysis.h"
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/lexer.h"
#include "tokenizer/jinja/parser.h"

namespace dlx::jinja {
namespace {

constexpr int kMaxCallDepth = 100;  // macro recursion
// Statements and expressions being evaluated, one inside the other (macro calls included): each level is a
// few stack frames, so this bounds the stack a render uses on any thread.
constexpr int kMaxEvalDepth = 500;

// Variables of one scope; lookups fall back to the parent (enclosing block, then the render's variables).
struct Scope {
  std::shared_ptr<Scope> parent;
  ValueMap vars;
};
using ScopePtr = std::shared_ptr<Scope>;

ScopePtr child_of(const ScopePtr& parent) {
  auto s = std::make_shared<Scope>();
  s->parent = parent;
  return s;
}

class Renderer {
 public:
  explicit Renderer(std::string_view source) : src_(source) {}

  ~Renderer() {
    // A macro holds its defining scope, which holds the macro: break those cycles.
    for (const ScopePtr& s : macro_scopes_) s->vars = ValueMap();
  }

  std::string run(const NodeList& root, const ValueMap& vars, const std::vector<std::string>& undefined_at_start) {
    auto top = std::make_shared<Scope>();
    for (const auto& [k, v] : vars) top->vars.set(k, v);
    for (const std::string& name : undefined_at_start) {
      top->vars.set(name, Value::undefined(fmt::format("'{}' is undefined", name)));
    }
    std::string out;
    exec_list(root, top, out);
    return out;
  }

 private:
  enum class Flow { Normal, Break, Continue };

  Flow exec_list(const NodeList& nodes, const ScopePtr& scope, std::string& out) {
    for (const auto& n : nodes) {
      const Flow f = exec(*n, scope, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  // One level of statement or expression evaluation: spends a work unit, counts the nesting.
  struct Step {
    Renderer& r;
    explicit Step(Renderer& renderer) : r(renderer) {
      spend(1);
      if (r.depth_ >= kMaxEvalDepth) {
        throw EvalError(fmt::format("template evaluation nested more than {} levels deep", kMaxEvalDepth));
      }
      ++r.depth_;
    }
    ~Step() { --r.depth_; }
    Step(const Step&) = delete;
    Step& operator=(const Step&) = delete;
  };

  Flow exec(const Node& n, const ScopePtr& scope, std::string& out) {
    try {
      const Step step(*this);
      switch (n.kind) {
        case NodeKind::Text:
          append_bounded(out, n.text);
          return Flow::Normal;
        case NodeKind::Output:
          append_bounded(out, eval(*n.expr, scope).to_string());
          return Flow::Normal;
        case NodeKind::If:
          for (size_t i = 0; i < n.conds.size(); ++i) {
            if (eval(*n.conds[i], scope).truthy()) return exec_list(n.bodies[i], scope, out);
          }
          if (n.bodies.size() > n.conds.size()) return exec_list(n.bodies.back(), scope, out);
          return Flow::Normal;
        case NodeKind::For:
          exec_for(n, scope, out);
          return Flow::Normal;
        case NodeKind::Set:
          exec_set(n, scope);
          return Flow::Normal;
        case NodeKind::SetBlock: {
          std::string captured;
          exec_list(n.bodies[0], scope, captured);
          scope->vars.set(n.targets[0], Value(std::move(captured)));
          return Flow::Normal;
        }
        case NodeKind::Macro:
          define_macro(n, scope);
          return Flow::Normal;
        case NodeKind::Break:
          return Flow::Break;
        case NodeKind::Continue:
          return Flow::Continue;
        case NodeKind::Scope:
          return exec_list(n.bodies[0], scope, out);
      }
    } catch (const EvalError& e) {
      fail_at(src_, n.offset, e.what());
    }
    return Flow::Normal;
  }


  // Binds loop/set targets: one name takes the value, several unpack a list of the same length.
  static void bind_targets(Scope& s, const std::vector<std::string>& targets, const Value& v) {
    if (targets.size() == 1) {
      s.vars.set(targets[0], v);
      return;
    }
    if (v.kind() != Value::Kind::List) {
      throw EvalError(fmt::format("cannot unpack non-sequence '{}' into {} names", v.type_name(), targets.size()));
    }
    if (v.list().size() != targets.size()) {
      throw EvalError(fmt::format("cannot unpack {} values into {} names", v.list().size(), targets.size()));
    }
    for (size_t i = 0; i < targets.size(); ++i) s.vars.set(targets[i], v.list()[i]);
  }

  // Jinja's `loop` variable for item i of items.
  static Value loop_object(const ValueList& items, size_t i) {
    const auto n = static_cast<int64_t>(items.size());
    const auto k = static_cast<int64_t>(i);
    ValueMap loop;
    loop.set("index0", Value(k));
    loop.set("index", Value(k + 1));
    loop.set("revindex0", Value(n - k - 1));
    loop.set("revindex", Value(n - k));
    loop.set("first", Value(k == 0));
    loop.set("last", Value(k == n - 1));
    loop.set("length", Value(n));
    loop.set("depth0", Value(0));
    loop.set("depth", Value(1));
    if (k > 0) loop.set("previtem", items[i - 1]);
    if (k + 1 < n) loop.set("nextitem", items[i + 1]);
    loop.set("cycle", Value::function("cycle", [i](const CallArgs& a) {
               if (a.args.empty()) throw EvalError("loop.cycle() needs at least one argument");
               return a.args[i % a.args.size()];
             }));
    return Value(std::move(loop));
  }

  void exec_for(const Node& n, const ScopePtr& scope, std::string& out) {
    ValueList items = iterate(eval(*n.expr, scope));
    if (n.filter) {
      ValueList kept;
      for (Value& item : items) {
        const ScopePtr s = child_of(scope);
        bind_targets(*s, n.targets, item);
        if (eval(*n.filter, s).truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (n.bodies.size() > 1) exec_list(n.bodies[1], child_of(scope), out);
      return;
    }
    for (size_t i = 0; i < items.size(); ++i) {
      const ScopePtr s = child_of(scope);  // a fresh scope per iteration: sets don't carry over
      bind_targets(*s, n.targets, items[i]);
      s->vars.set("loop", loop_object(items, i));
      if (exec_list(n.bodies[0], s, out) == Flow::Break) break;
    }
  }

  void exec_set(const Node& n, const ScopePtr& scope) {
    Value v = eval(*n.expr, scope);
    if (n.attr.empty()) {
      bind_targets(*scope, n.targets, v);
      return;
    }
    const Value ns = lookup(scope, n.targets[0]);
    if (ns.kind() != Value::Kind::Namespace) {
      throw EvalError(
          fmt::format("cannot assign attribute '{}' on '{}': it is not a namespace()", n.attr, n.targets[0]));
    }
    ns.ns_attrs().set(n.attr, std::move(v));
  }

  void define_macro(const Node& m, const ScopePtr& scope) {
    macro_scopes_.push_back(scope);
    scope->vars.set(m.text, Value::function(m.text, [this, node = &m, def = scope](const CallArgs& a) {
                      return call_macro(*node, def, a);
                    }));
  }

  Value call_macro(const Node& m, const ScopePtr& def, const CallArgs& a) {
    if (call_depth_ >= kMaxCallDepth) throw EvalError("maximum macro recursion depth exceeded");
    if (a.args.size() > m.targets.size()) {
      throw EvalError(fmt::format("macro '{}' takes not more than {} argument(s)", m.text, m.targets.size()));
    }
    const ScopePtr s = child_of(def);
    std::vector<bool> given(m.targets.size(), false);
    for (size_t i = 0; i < a.args.size(); ++i) {
      s->vars.set(m.targets[i], a.args[i]);
      given[i] = true;
    }
    for (const auto& [key, v] : a.kwargs) {
      const auto it = std::find(m.targets.begin(), m.targets.end(), key);
      if (it == m.targets.end()) throw EvalError(fmt::format("macro '{}' takes no keyword argument '{}'", m.text, key));
      const auto i = static_cast<size_t>(it - m.targets.begin());
      if (given[i]) throw EvalError(fmt::format("macro '{}' got multiple values for argument '{}'", m.text, key));
      s->vars.set(key, v);
      given[i] = true;
    }
    for (size_t i = 0; i < m.targets.size(); ++i) {
      if (given[i]) continue;
      s->vars.set(m.targets[i], m.defaults[i]
                                    ? eval(*m.defaults[i], s)
                                    : Value::undefined(fmt::format("parameter '{}' was not provided", m.targets[i])));
    }
    ++call_depth_;
    std::string out;
    try {
      exec_list(m.bodies[0], s, out);
    } catch (...) {
      --call_depth_;
      throw;
    }
    --call_depth_;
    return Value(std::move(out));
  }

  static Value lookup(const ScopePtr& scope, const std::string& name) {
    for (const Scope* s = scope.get(); s; s = s->parent.get()) {
      if (const Value* v = s->vars.find(name)) return *v;
    }
    return lookup_global(name);
  }

  // Evaluates e; an EvalError from it becomes a dlx::Error at e's position (the innermost failing expression).
  Value eval(const Expr& e, const ScopePtr& scope) {
    try {
      const Step step(*this);
      return eval_inner(e, scope);
    } catch (const EvalError& err) {
      fail_at(src_, e.offset, err.what());
    }
  }

  CallArgs eval_args(const Expr& e, size_t first, const ScopePtr& scope) {
    CallArgs a;
    for (size_t i = first; i < e.items.size(); ++i) a.args.push_back(eval(*e.items[i], scope));
    for (const auto& [key, x] : e.kwargs) a.kwargs.emplace_back(key, eval(*x, scope));
    return a;
  }

  Value eval_inner(const Expr& e, const ScopePtr& scope) {
    switch (e.kind) {
      case ExprKind::Literal:
        return e.value;
      case ExprKind::Name:
        return lookup(scope, e.name);
      case ExprKind::List:
      case ExprKind::Tuple: {
        ValueList items;
        for (const auto& x : e.items) items.push_back(eval(*x, scope));
        return e.kind == ExprKind::Tuple ? Value::tuple(std::move(items)) : Value(std::move(items));
      }
      case ExprKind::Dict: {
        ValueMap m;
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          const Value key = eval(*e.items[i], scope);
          if (!key.is_string()) throw EvalError(fmt::format("dict keys must be strings, got {}", key.type_name()));
          m.set(key.str(), eval(*e.items[i + 1], scope));
        }
        return Value(std::move(m));
      }
      case ExprKind::Attr:
        return get_attr(eval(*e.items[0], scope), e.name);
      case ExprKind::Item: {
        const Value obj = eval(*e.items[0], scope);
        return get_item(obj, eval(*e.items[1], scope));
      }
      case ExprKind::Slice: {
        const Value obj = eval(*e.items[0], scope);
        Value bounds[3];
        const Value* ptr[3] = {nullptr, nullptr, nullptr};
        for (int i = 0; i < 3; ++i) {
          if (e.items[static_cast<size_t>(i) + 1]) {
            bounds[i] = eval(*e.items[static_cast<size_t>(i) + 1], scope);
            ptr[i] = &bounds[i];
          }
        }
        return get_slice(obj, ptr[0], ptr[1], ptr[2]);
      }
      case ExprKind::Call: {
        const Value callee = eval(*e.items[0], scope);
        return callee.call(eval_args(e, 1, scope));
      }
      case ExprKind::Filter: {
        const Value v = eval(*e.items[0], scope);
        return apply_filter(e.name, v, eval_args(e, 1, scope));
      }
      case ExprKind::Test: {
        const Value v = eval(*e.items[0], scope);
        return Value(apply_test(e.name, v, eval_args(e, 1, scope)) != e.negated);
      }
      case ExprKind::Unary:
        return eval_unary(e, scope);
      case ExprKind::Binary:
        return eval_binary(e, scope);
      case ExprKind::Compare:
        return eval_compare(e, scope);
      case ExprKind::Cond:
        if (eval(*e.items[1], scope).truthy()) return eval(*e.items[0], scope);
        if (e.items[2]) return eval(*e.items[2], scope);
        return Value::undefined("the inline if-expression evaluated to false and has no else section");
    }
    throw EvalError("unknown expression");
  }

  Value eval_unary(const Expr& e, const ScopePtr& scope) {
    const Value v = eval(*e.items[0], scope);
    if (e.name == "not") return Value(!v.truthy());
    if (v.is_undefined()) v.fail_undefined();
    if (!v.is_number()) throw EvalError(fmt::format("bad operand type for unary {}: '{}'", e.name, v.type_name()));
    if (v.kind() == Value::Kind::Float) return Value(e.name == "-" ? -v.as_float() : v.as_float());
    if (e.name == "+") return Value(v.as_int());
    if (v.as_int() == INT64_MIN) throw EvalError("integer overflow in chat template arithmetic");
    return Value(-v.as_int());
  }

  Value eval_binary(const Expr& e, const ScopePtr& scope) {
    Value a = eval(*e.items[0], scope);
    if (e.name == "and") return a.truthy() ? eval(*e.items[1], scope) : a;
    if (e.name == "or") return a.truthy() ? a : eval(*e.items[1], scope);
    const Value b = eval(*e.items[1], scope);
    if (e.name == "~") {
      std::string s = a.to_string();
      append_bounded(s, b.to_string());
      return Value(std::move(s));
    }
    return arith(e.name, a, b);
  }

  Value eval_compare(const Expr& e, const ScopePtr& scope) {
    Value left = eval(*e.items[0], scope);
    for (size_t i = 0; i < e.ops.size(); ++i) {
      Value right = eval(*e.items[i + 1], scope);
      const std::string& op = e.ops[i];
      bool ok;
      if (op == "==") {
        ok = equals(left, right);
      } else if (op == "!=") {
        ok = !equals(left, right);
      } else if (op == "in") {
        ok = contains(right, left);
      } else if (op == "not in") {
        ok = !contains(right, left);
      } else {
        const int c = compare(left, right);
        ok = op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0;
      }
      if (!ok) return Value(false);
      left = std::move(right);
    }
    return Value(true);
  }

  RenderLimits limits_;  // first: it empties the render's namespaces after everything else is gone
  std::string_view src_;
  std::vector<ScopePtr> macro_scopes_;
  int call_depth_ = 0;
  int depth_ = 0;
};

}  // namespace

Template::Template(std::string_view source, const TemplateOptions& opt)
    : source_(normalize_source(source, opt.keep_trailing_newline)) {
  const std::vector<Token> tokens = lex(source_, LexOptions{opt.trim_blocks, opt.lstrip_blocks});
  root_ = parse(source_, tokens);
  undefined_at_start_ = names_undefined_at_start(root_);
}

std::string Template::render(const ValueMap& vars) const {
  return Renderer(source_).run(root_, vars, undefined_at_start_);
}

}  // namespace dlx::jinja
