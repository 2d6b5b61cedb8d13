#include "tokenizer/jinja/parser.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <initializer_list>

#include "tokenizer/jinja/analysis.h"

namespace dlx::jinja {
namespace {

// Nesting limit for expressions and blocks: deeper input is an error, not a stack overflow.
constexpr int kMaxDepth = 200;

class Parser {
 public:
  Parser(std::string_view src, const std::vector<Token>& toks) : src_(src), toks_(toks) {}

  NodeList parse_template() {
    std::string end_tag;
    NodeList body = parse_body({}, end_tag, "", 0);
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  void advance() {
    if (pos_ + 1 < toks_.size()) ++pos_;
  }
  bool at_op(std::string_view op) const { return cur().type == Tok::Op && cur().text == op; }
  bool at_name(std::string_view name) const { return cur().type == Tok::Name && cur().text == name; }
  bool skip_op(std::string_view op) {
    if (!at_op(op)) return false;
    advance();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!at_name(name)) return false;
    advance();
    return true;
  }
  [[noreturn]] void fail(const std::string& msg) const { fail_at(src_, cur().offset, msg); }
  std::string describe(const Token& t) const {
    switch (t.type) {
      case Tok::End:
        return "end of template";
      case Tok::Text:
        return "template text";
      case Tok::String:
        return "string literal";
      default:
        return "'" + t.text + "'";
    }
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail(fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail(fmt::format("expected a name, got {}", describe(cur())));
    std::string n = cur().text;
    advance();
    return n;
  }
  void expect_block_end(std::string_view tag) {
    if (cur().type != Tok::BlockEnd) {
      fail(fmt::format("expected end of '{}' tag ('%}}'), got {}", tag, describe(cur())));
    }
    advance();
  }

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxDepth) p.fail("template nested too deeply");
    }
    ~DepthGuard() { --p.depth_; }
  };

  // Keeps parent.height (the longest chain of expressions below it, itself included) within kMaxDepth.
  // Left-associative chains (1+1+..., x|f|f..., a.b.c...) deepen the tree without deepening the parser's own
  // recursion, and every walk of the tree (evaluation, analysis, destruction) recurses once per level.
  void grow(Expr& parent, const Expr& child) {
    parent.height = std::max(parent.height, child.height + 1);
    if (parent.height > kMaxDepth) fail(fmt::format("expression nested too deeply (more than {} levels)", kMaxDepth));
  }
  void add_child(Expr& parent, ExprPtr child) {
    if (child) grow(parent, *child);
    parent.items.push_back(std::move(child));
  }

  // ---- statements ----

  // Parses nodes until a `{% tag %}` with tag in end_tags (consumed up to and including the tag name, which is
  // stored in found). `opener`/`opener_offset` name the enclosing block for the "unclosed" message.
  NodeList parse_body(std::initializer_list<std::string_view> end_tags, std::string& found, std::string_view opener,
                      size_t opener_offset) {
    DepthGuard guard(*this);
    NodeList body;
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case Tok::End:
          if (end_tags.size() != 0) {
            fail_at(src_, opener_offset,
                    fmt::format("unclosed '{{% {} %}}' block (missing '{{% {} %}}')", opener, *(end_tags.end() - 1)));
          }
          return body;
        case Tok::Text: {
          auto n = make_node(NodeKind::Text, t.offset);
          n->text = t.text;
          body.push_back(std::move(n));
          advance();
          break;
        }
        case Tok::VarBegin: {
          auto n = make_node(NodeKind::Output, t.offset);
          advance();
          n->expr = parse_tuple(true);
          if (cur().type != Tok::VarEnd) fail(fmt::format("expected '}}}}', got {}", describe(cur())));
          advance();
          body.push_back(std::move(n));
          break;
        }
        case Tok::BlockBegin: {
          advance();
          if (cur().type != Tok::Name) fail(fmt::format("expected a tag name, got {}", describe(cur())));
          for (std::string_view e : end_tags) {
            if (cur().text == e) {
              found = cur().text;
              advance();
              return body;
            }
          }
          body.push_back(parse_statement(t.offset));
          break;
        }
        default:
          fail(fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  std::unique_ptr<Node> make_node(NodeKind k, size_t offset) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    n->offset = offset;
    return n;
  }

  std::unique_ptr<Node> parse_statement(size_t offset) {
    const std::string tag = cur().text;
    if (tag == "if") return parse_if(offset);
    if (tag == "for") return parse_for(offset);
    if (tag == "set") return parse_set(offset);
    if (tag == "macro") return parse_macro(offset);
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) fail(fmt::format("'{}' outside of a loop", tag));
      advance();
      expect_block_end(tag);
      return make_node(tag == "break" ? NodeKind::Break : NodeKind::Continue, offset);
    }
    if (tag == "generation") {
      advance();
      expect_block_end(tag);
      auto n = make_node(NodeKind::Scope, offset);
      std::string found;
      n->bodies.push_back(parse_body({"endgeneration"}, found, "generation", offset));
      expect_block_end("endgeneration");
      return n;
    }
    static const char* const unsupported[] = {"block",  "extends", "include",    "import", "from", "call",
                                              "filter", "with",    "autoescape", "do",     "trans"};
    for (const char* u : unsupported) {
      if (tag == u) fail(fmt::format("unsupported tag '{}'", tag));
    }
    if (tag.rfind("end", 0) == 0 || tag == "elif" || tag == "else") fail(fmt::format("unexpected '{}' tag", tag));
    fail(fmt::format("unknown tag '{}'", tag));
  }

  std::unique_ptr<Node> parse_if(size_t offset) {
    advance();  // 'if'
    auto n = make_node(NodeKind::If, offset);
    n->conds.push_back(parse_tuple(false));  // as Jinja: no inline if here
    expect_block_end("if");
    while (true) {
      std::string found;
      n->bodies.push_back(parse_body({"elif", "else", "endif"}, found, "if", offset));
      if (found == "elif") {
        n->conds.push_back(parse_tuple(false));  // as Jinja: no inline if here
        expect_block_end("elif");
      } else if (found == "else") {
        expect_block_end("else");
        n->bodies.push_back(parse_body({"endif"}, found, "if", offset));
        expect_block_end("endif");
        return n;
      } else {
        expect_block_end("endif");
        return n;
      }
    }
  }

  std::unique_ptr<Node> parse_for(size_t offset) {
    advance();  // 'for'
    auto n = make_node(NodeKind::For, offset);
    n->targets = parse_target_names();
    if (!skip_name("in")) fail(fmt::format("expected 'in' in for loop, got {}", describe(cur())));
    n->expr = parse_tuple(false);
    if (skip_name("if")) n->filter = parse_expression();
    if (at_name("recursive")) fail("unsupported construct 'recursive' for loop");
    expect_block_end("for");
    ++loop_depth_;
    std::string found;
    n->bodies.push_back(parse_body({"else", "endfor"}, found, "for", offset));
    --loop_depth_;
    if (found == "else") {
      expect_block_end("else");
      n->bodies.push_back(parse_body({"endfor"}, found, "for", offset));
    }
    expect_block_end("endfor");
    return n;
  }

  // `a` or `a, b` or `(a, b)`: assignment targets of for/set.
  std::vector<std::string> parse_target_names() {
    const bool paren = skip_op("(");
    std::vector<std::string> names{expect_name()};
    while (skip_op(",")) {
      if (paren && at_op(")")) break;
      names.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return names;
  }

  std::unique_ptr<Node> parse_set(size_t offset) {
    advance();  // 'set'
    auto n = make_node(NodeKind::Set, offset);
    if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == ".") {
      n->targets.push_back(expect_name());
      advance();  // '.'
      n->attr = expect_name();
    } else {
      n->targets = parse_target_names();
    }
    if (skip_op("=")) {
      n->expr = parse_tuple(true);
      expect_block_end("set");
      return n;
    }
    if (cur().type == Tok::BlockEnd && n->attr.empty() && n->targets.size() == 1) {
      advance();
      n->kind = NodeKind::SetBlock;
      std::string found;
      n->bodies.push_back(parse_body({"endset"}, found, "set", offset));
      expect_block_end("endset");
      return n;
    }
    if (at_op("|")) fail("unsupported construct: filtered block set");
    fail(fmt::format("expected '=' in set, got {}", describe(cur())));
  }

  std::unique_ptr<Node> parse_macro(size_t offset) {
    advance();  // 'macro'
    auto n = make_node(NodeKind::Macro, offset);
    n->text = expect_name();
    expect_op("(");
    while (!at_op(")")) {
      if (!n->targets.empty()) expect_op(",");
      if (at_op(")")) break;
      n->targets.push_back(expect_name());
      n->defaults.push_back(skip_op("=") ? parse_expression() : nullptr);
    }
    expect_op(")");
    expect_block_end("macro");
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    std::string found;
    n->bodies.push_back(parse_body({"endmacro"}, found, "macro", offset));
    loop_depth_ = saved_loops;
    expect_block_end("endmacro");
    return n;
  }

  // ---- expressions ----

  ExprPtr make_expr(ExprKind k, size_t offset) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->offset = offset;
    return e;
  }

  bool at_tuple_end() const {
    return cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || at_op(")") || cur().type == Tok::End;
  }

  // Comma-separated expressions; more than one (or a trailing comma) makes a tuple.
  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens = false) {
    const size_t offset = cur().offset;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) {
        if (!skip_op(",")) break;
        is_tuple = true;
      }
      if (at_tuple_end()) break;
      items.push_back(with_condexpr ? parse_expression() : parse_or());
      if (!at_op(",")) break;
    }
    if (!is_tuple) {
      if (items.empty()) {
        if (explicit_parens) return make_expr(ExprKind::Tuple, offset);  // ()
        fail(fmt::format("expected an expression, got {}", describe(cur())));
      }
      return std::move(items[0]);
    }
    auto e = make_expr(ExprKind::Tuple, offset);
    for (ExprPtr& item : items) add_child(*e, std::move(item));
    return e;
  }

  ExprPtr parse_expression() {
    DepthGuard guard(*this);
    const size_t offset = cur().offset;
    ExprPtr expr = parse_or();
    while (skip_name("if")) {
      auto cond = make_expr(ExprKind::Cond, offset);
      add_child(*cond, std::move(expr));
      add_child(*cond, parse_or());
      add_child(*cond, skip_name("else") ? parse_expression() : nullptr);
      expr = std::move(cond);
    }
    return expr;
  }

  ExprPtr binary(std::string op, ExprPtr a, ExprPtr b) {
    auto e = make_expr(ExprKind::Binary, a->offset);
    e->name = std::move(op);
    add_child(*e, std::move(a));
    add_child(*e, std::move(b));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (skip_name("or")) e = binary("or", std::move(e), parse_and());
    return e;
  }

  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (skip_name("and")) e = binary("and", std::move(e), parse_not());
    return e;
  }

  ExprPtr parse_not() {
    if (at_name("not")) {
      DepthGuard guard(*this);
      auto e = make_expr(ExprKind::Unary, cur().offset);
      advance();
      e->name = "not";
      add_child(*e, parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (at_name("in")) {
        op = "in";
        advance();
      } else if (at_name("not") && peek().type == Tok::Name && peek().text == "in") {
        op = "not in";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make_expr(ExprKind::Compare, first->offset);
        add_child(*cmp, std::move(first));
      }
      cmp->ops.push_back(op);
      add_child(*cmp, parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (at_op("+") || at_op("-")) {
      std::string op = cur().text;
      advance();
      e = binary(op, std::move(e), parse_concat());
    }
    return e;
  }

  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (skip_op("~")) e = binary("~", std::move(e), parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      std::string op = cur().text;
      advance();
      e = binary(op, std::move(e), parse_pow());
    }
    return e;
  }

  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (skip_op("**")) e = binary("**", std::move(e), parse_unary(true));
    return e;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    ExprPtr e;
    if (at_op("-") || at_op("+")) {
      e = make_expr(ExprKind::Unary, cur().offset);
      e->name = cur().text;
      advance();
      add_child(*e, parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr literal(Value v, size_t offset) {
    auto e = make_expr(ExprKind::Literal, offset);
    e->value = std::move(v);
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    const size_t offset = t.offset;
    switch (t.type) {
      case Tok::Name: {
        advance();
        if (t.text == "true" || t.text == "True") return literal(Value(true), offset);
        if (t.text == "false" || t.text == "False") return literal(Value(false), offset);
        if (t.text == "none" || t.text == "None") return literal(Value::none(), offset);
        auto e = make_expr(ExprKind::Name, offset);
        e->name = t.text;
        return e;
      }
      case Tok::String: {
        std::string s;
        while (cur().type == Tok::String) {  // adjacent literals concatenate, as in Python
          s += cur().text;
          advance();
        }
        return literal(Value(std::move(s)), offset);
      }
      case Tok::Int: {
        errno = 0;
        const long long v = std::strtoll(t.text.c_str(), nullptr, 10);
        if (errno == ERANGE) fail(fmt::format("integer literal {} out of range", t.text));
        advance();
        return literal(Value(static_cast<int64_t>(v)), offset);
      }
      case Tok::Float: {
        const double v = std::strtod(t.text.c_str(), nullptr);
        advance();
        return literal(Value(v), offset);
      }
      case Tok::Op:
        if (t.text == "(") {
          advance();
          ExprPtr e = parse_tuple(true, true);
          expect_op(")");
          return e;
        }
        if (t.text == "[") return parse_list();
        if (t.text == "{") return parse_dict();
        break;
      default:
        break;
    }
    fail(fmt::format("unexpected {} in expression", describe(t)));
  }

  ExprPtr parse_list() {
    auto e = make_expr(ExprKind::List, cur().offset);
    expect_op("[");
    while (!at_op("]")) {
      if (!e->items.empty()) expect_op(",");
      if (at_op("]")) break;
      add_child(*e, parse_expression());
    }
    expect_op("]");
    return e;
  }

  ExprPtr parse_dict() {
    auto e = make_expr(ExprKind::Dict, cur().offset);
    expect_op("{");
    while (!at_op("}")) {
      if (!e->items.empty()) expect_op(",");
      if (at_op("}")) break;
      add_child(*e, parse_expression());
      expect_op(":");
      add_child(*e, parse_expression());
    }
    expect_op("}");
    return e;
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (at_op(".")) {
        advance();
        if (cur().type == Tok::Int) {  // x.0 is x[0]
          auto item = make_expr(ExprKind::Item, e->offset);
          add_child(*item, std::move(e));
          add_child(*item,
                    literal(Value(static_cast<int64_t>(std::strtoll(cur().text.c_str(), nullptr, 10))), cur().offset));
          advance();
          e = std::move(item);
          continue;
        }
        auto attr = make_expr(ExprKind::Attr, e->offset);
        attr->name = expect_name();
        add_child(*attr, std::move(e));
        e = std::move(attr);
      } else if (at_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (at_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    expect_op("[");
    const size_t offset = obj->offset;
    ExprPtr start;
    if (!at_op(":")) {
      start = parse_expression();
      if (skip_op("]")) {
        auto item = make_expr(ExprKind::Item, offset);
        add_child(*item, std::move(obj));
        add_child(*item, std::move(start));
        return item;
      }
    }
    auto slice = make_expr(ExprKind::Slice, offset);
    add_child(*slice, std::move(obj));
    add_child(*slice, std::move(start));
    expect_op(":");
    add_child(*slice, at_op("]") || at_op(":") ? nullptr : parse_expression());
    ExprPtr step;
    if (skip_op(":") && !at_op("]")) step = parse_expression();
    add_child(*slice, std::move(step));
    expect_op("]");
    return slice;
  }

  // Arguments of a call, filter or test: positional then keyword (name=value).
  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!at_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (at_op(")")) break;
      if (at_op("*") || at_op("**")) fail("unsupported construct: *args / **kwargs in a call");
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        std::string key = expect_name();
        advance();  // '='
        ExprPtr value = parse_expression();
        grow(e, *value);
        e.kwargs.emplace_back(std::move(key), std::move(value));
      } else {
        if (!e.kwargs.empty()) fail("positional argument after keyword argument");
        add_child(e, parse_expression());
      }
    }
    expect_op(")");
  }

  // Filter and test names may be dotted (`x | a.b`), as in Jinja.
  std::string parse_dotted_name() {
    std::string name = expect_name();
    while (skip_op(".")) name += "." + expect_name();
    return name;
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto call = make_expr(ExprKind::Call, callee->offset);
    add_child(*call, std::move(callee));
    parse_call_args(*call);
    return call;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (at_op("|")) {
        advance();
        const size_t offset = cur().offset;
        auto f = make_expr(ExprKind::Filter, offset);
        f->name = parse_dotted_name();
        add_child(*f, std::move(e));
        if (at_op("(")) parse_call_args(*f);
        e = std::move(f);
      } else if (at_name("is")) {
        advance();
        auto t = make_expr(ExprKind::Test, cur().offset);
        t->negated = skip_name("not");
        t->offset = cur().offset;
        t->name = parse_dotted_name();
        add_child(*t, std::move(e));
        if (at_op("(")) {
          parse_call_args(*t);
        } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                    cur().type == Tok::Float || at_op("[") || at_op("{")) &&
                   !at_name("else") && !at_name("or") && !at_name("and")) {
          // `x is sameas none`, `x is divisibleby 3`: one argument without parentheses, as Jinja allows.
          if (at_name("is")) fail("cannot chain tests with 'is'");
          add_child(*t, parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (at_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  std::string_view src_;
  const std::vector<Token>& toks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

NodeList parse(std::string_view source, const std::vector<Token>& tokens) {
  NodeList root = Parser(source, tokens).parse_template();
  check_filter_and_test_names(source, root);
  return root;
}

}  // namespace dlx::jinja
