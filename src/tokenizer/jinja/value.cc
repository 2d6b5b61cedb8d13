#include "tokenizer/jinja/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>

#include "tokenizer/jinja/str.h"

namespace dlx::jinja {

namespace {
thread_local RenderLimits* current_limits = nullptr;
}  // namespace

RenderLimits::RenderLimits(uint64_t work_budget) : left_(work_budget), outer_(current_limits) {
  current_limits = this;
}

RenderLimits::~RenderLimits() {
  current_limits = outer_;
  for (const std::weak_ptr<ValueMap>& w : namespaces_)
    if (const std::shared_ptr<ValueMap> attrs = w.lock()) attrs->clear();
}

void spend(uint64_t units) {
  RenderLimits* l = current_limits;
  if (!l) return;
  if (units > l->left_) {
    l->left_ = 0;
    throw EvalError(fmt::format("the template exceeded its work budget ({} steps; a runaway loop or recursion?)",
                                kRenderWorkBudget));
  }
  l->left_ -= units;
}

void append_bounded(std::string& out, std::string_view s) {
  if (out.size() + s.size() > kMaxBuiltSize) {
    throw EvalError(fmt::format("string result too large (more than {} bytes)", kMaxBuiltSize));
  }
  spend_bytes(s.size());
  out += s;
}

Value::Value(ValueList l) {
  spend(l.size());
  v_ = ListPtr(new ValueList(std::move(l)), TreeDelete{});
}

Value::Value(ValueMap m) {
  spend(m.size());
  v_ = MapPtr(new ValueMap(std::move(m)), TreeDelete{});
}

bool Value::has_children() const {
  const Kind k = kind();
  return k == Kind::List || k == Kind::Map || k == Kind::Namespace;
}

void Value::take_nested(ValueList& l, std::vector<Value>& out) {
  for (Value& v : l)
    if (v.has_children()) out.push_back(std::move(v));
}

void Value::take_nested(ValueMap& m, std::vector<Value>& out) {
  for (auto& kv : m.items_)
    if (kv.second.has_children()) out.push_back(std::move(kv.second));
}

// Lists and dicts are created non-const (new ValueList / new ValueMap) and only the last reference reaches
// them here, so moving their items out is sound.
void Value::take_children_if_last(std::vector<Value>& out) {
  switch (kind()) {
    case Kind::List:
      if (const ListPtr& p = std::get<ListPtr>(v_); p && p.use_count() == 1) take_nested(const_cast<ValueList&>(*p), out);
      return;
    case Kind::Map:
      if (const MapPtr& p = std::get<MapPtr>(v_); p && p.use_count() == 1) take_nested(const_cast<ValueMap&>(*p), out);
      return;
    case Kind::Namespace:
      if (const NamespacePtr& p = std::get<NamespacePtr>(v_); p && p.use_count() == 1) take_nested(p->attrs, out);
      return;
    default:
      return;
  }
}

// Each value taken out of a dying container gives up its own nested containers the same way when its last
// reference goes, so no destructor runs more than one level deep.
void Value::drain(std::vector<Value>& pending) noexcept {
  while (!pending.empty()) {
    Value v = std::move(pending.back());
    pending.pop_back();
    v.take_children_if_last(pending);
  }
}

void Value::TreeDelete::operator()(const ValueList* p) const noexcept {
  std::vector<Value> pending;
  take_nested(const_cast<ValueList&>(*p), pending);
  delete p;
  drain(pending);
}

void Value::TreeDelete::operator()(const ValueMap* p) const noexcept {
  std::vector<Value> pending;
  take_nested(const_cast<ValueMap&>(*p), pending);
  delete p;
  drain(pending);
}

void Value::TreeDelete::operator()(Namespace* p) const noexcept {
  std::vector<Value> pending;
  take_nested(p->attrs, pending);
  delete p;
  drain(pending);
}

const Value* ValueMap::find(std::string_view key) const {
  for (const auto& [k, v] : items_) {
    if (k == key) return &v;
  }
  return nullptr;
}

void ValueMap::clear() {
  Items old;
  old.swap(items_);
}

void ValueMap::set(const std::string& key, Value v) {
  for (auto& [k, old] : items_) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  items_.emplace_back(key, std::move(v));
}

Value Value::make_namespace(ValueMap attrs) {
  spend(attrs.size());
  NamespacePtr ns(new Namespace{std::move(attrs)}, TreeDelete{});
  if (current_limits) {
    std::vector<std::weak_ptr<ValueMap>>& made = current_limits->namespaces_;
    // Forget the namespaces already gone now and then (at powers of two: amortized constant time).
    if (made.size() >= 64 && (made.size() & (made.size() - 1)) == 0)
      std::erase_if(made, [](const std::weak_ptr<ValueMap>& w) { return w.expired(); });
    made.emplace_back(std::shared_ptr<ValueMap>(ns, &ns->attrs));
  }
  return Value(Storage(std::move(ns)));
}

Value Value::function(std::string name, Function fn) {
  return Value(Storage(std::make_shared<const FunctionObj>(FunctionObj{std::move(name), std::move(fn)})));
}

bool Value::is_number() const {
  const Kind k = kind();
  return k == Kind::Bool || k == Kind::Int || k == Kind::Float;
}

int64_t Value::as_int() const {
  if (kind() == Kind::Bool) return as_bool() ? 1 : 0;
  return std::get<int64_t>(v_);
}

double Value::as_float() const {
  if (kind() == Kind::Float) return std::get<double>(v_);
  return static_cast<double>(as_int());
}

Value Value::call(const CallArgs& args) const {
  if (kind() == Kind::Undefined) fail_undefined();
  if (kind() != Kind::Function) throw EvalError(fmt::format("'{}' object is not callable", type_name()));
  return std::get<FunctionPtr>(v_)->fn(args);
}

const void* Value::identity() const {
  if (kind() == Kind::Namespace) return std::get<NamespacePtr>(v_).get();
  if (kind() == Kind::Function) return std::get<FunctionPtr>(v_).get();
  if (kind() == Kind::List) return std::get<ListPtr>(v_).get();
  if (kind() == Kind::Map) return std::get<MapPtr>(v_).get();
  return nullptr;
}

void Value::fail_undefined() const {
  const std::string& hint = undefined_hint();
  throw EvalError(hint.empty() ? "undefined value" : hint);
}

bool Value::truthy() const {
  switch (kind()) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return as_bool();
    case Kind::Int:
      return as_int() != 0;
    case Kind::Float:
      return as_float() != 0.0;
    case Kind::String:
      return !str().empty();
    case Kind::List:
      return !list().empty();
    case Kind::Map:
      return map().size() != 0;
    case Kind::Namespace:
    case Kind::Function:
      return true;
  }
  return false;
}

std::string Value::to_string() const {
  switch (kind()) {
    case Kind::Undefined:
      return "";
    case Kind::String:
      return str();
    default:
      return repr();
  }
}

std::string Value::repr() const {
  std::string out;
  std::vector<const void*> path;
  repr_into(out, path);
  return out;
}

// `path` holds the containers being printed around this value. A namespace inside itself prints as Python
// prints a dict inside itself, {...}; lists and dicts are immutable, so only namespaces close a cycle.
void Value::repr_into(std::string& out, std::vector<const void*>& path) const {
  switch (kind()) {
    case Kind::Undefined:
      return append_bounded(out, "Undefined");
    case Kind::None:
      return append_bounded(out, "None");
    case Kind::Bool:
      return append_bounded(out, as_bool() ? "True" : "False");
    case Kind::Int:
      return append_bounded(out, std::to_string(as_int()));
    case Kind::Float:
      return append_bounded(out, float_repr(as_float()));
    case Kind::String:
      return append_bounded(out, pystr::repr(str()));
    case Kind::Function:
      return append_bounded(out, fmt::format("<function {}>", function_name()));
    default:
      break;
  }
  if (kind() == Kind::Namespace && std::find(path.begin(), path.end(), identity()) != path.end()) {
    return append_bounded(out, "<Namespace {...}>");
  }
  if (path.size() >= static_cast<size_t>(kMaxValueDepth)) {
    throw EvalError(fmt::format("value nested more than {} levels deep", kMaxValueDepth));
  }
  path.push_back(identity());
  if (kind() == Kind::List) {
    append_bounded(out, tuple_ ? "(" : "[");
    for (size_t i = 0; i < list().size(); ++i) {
      if (i) append_bounded(out, ", ");
      list()[i].repr_into(out, path);
    }
    if (tuple_ && list().size() == 1) append_bounded(out, ",");
    append_bounded(out, tuple_ ? ")" : "]");
  } else {
    const ValueMap& m = kind() == Kind::Map ? map() : ns_attrs();
    append_bounded(out, kind() == Kind::Map ? "{" : "<Namespace {");
    bool first = true;
    for (const auto& [k, v] : m) {
      if (!first) append_bounded(out, ", ");
      append_bounded(out, pystr::repr(k));
      append_bounded(out, ": ");
      v.repr_into(out, path);
      first = false;
    }
    append_bounded(out, kind() == Kind::Map ? "}" : "}>");
  }
  path.pop_back();
}

std::string Value::type_name() const {
  static const char* const names[] = {"Undefined", "NoneType", "bool", "int",       "float",
                                      "str",       "list",     "dict", "Namespace", "function"};
  if (tuple_) return "tuple";
  return names[static_cast<int>(kind())];
}

namespace {

void check_depth(int depth) {
  if (depth > kMaxValueDepth) throw EvalError(fmt::format("value nested more than {} levels deep", kMaxValueDepth));
}

bool equals_at(const Value& a, const Value& b, int depth) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind() == K::Float || b.kind() == K::Float) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::Undefined:
    case K::None:
      return true;
    case K::String:
      return a.str() == b.str();
    case K::List: {
      const ValueList &x = a.list(), &y = b.list();
      if (a.is_tuple() != b.is_tuple() || x.size() != y.size()) return false;
      check_depth(depth + 1);
      for (size_t i = 0; i < x.size(); ++i) {
        if (!equals_at(x[i], y[i], depth + 1)) return false;
      }
      return true;
    }
    case K::Map: {
      if (a.map().size() != b.map().size()) return false;
      check_depth(depth + 1);
      for (const auto& [k, v] : a.map()) {
        const Value* w = b.map().find(k);
        if (!w || !equals_at(v, *w, depth + 1)) return false;
      }
      return true;
    }
    default:
      return a.identity() == b.identity();
  }
}

int compare_at(const Value& a, const Value& b, int depth) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind() == K::Float || b.kind() == K::Float) {
      const double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    const int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.kind() == K::String && b.kind() == K::String) {
    const int c = a.str().compare(b.str());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.kind() == K::List && b.kind() == K::List && a.is_tuple() == b.is_tuple()) {
    const ValueList &x = a.list(), &y = b.list();
    check_depth(depth + 1);
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals_at(x[i], y[i], depth + 1)) return compare_at(x[i], y[i], depth + 1);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
  throw EvalError(fmt::format("cannot order '{}' and '{}'", a.type_name(), b.type_name()));
}

}  // namespace

bool equals(const Value& a, const Value& b) { return equals_at(a, b, 0); }

int compare(const Value& a, const Value& b) { return compare_at(a, b, 0); }

namespace {

[[noreturn]] void unsupported_operands(std::string_view op, const Value& a, const Value& b) {
  throw EvalError(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(), b.type_name()));
}

Value repeat(const Value& seq, int64_t n) {
  if (n <= 0) return seq.is_string() ? Value(std::string()) : seq.is_tuple() ? Value::tuple({}) : Value(ValueList{});
  const size_t unit = seq.is_string() ? seq.str().size() : seq.list().size();
  if (unit != 0 && static_cast<uint64_t>(n) > kMaxBuiltSize / unit) throw EvalError("repetition result too large");
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < n; ++i) append_bounded(out, seq.str());
    return Value(std::move(out));
  }
  ValueList out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.list().begin(), seq.list().end());
  return seq.is_tuple() ? Value::tuple(std::move(out)) : Value(std::move(out));
}

int64_t floor_div(int64_t a, int64_t b) {
  if (a == INT64_MIN && b == -1) throw EvalError("integer overflow in chat template arithmetic");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

Value arith(std::string_view op, const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_undefined()) a.fail_undefined();
  if (b.is_undefined()) b.fail_undefined();
  if (a.is_number() && b.is_number()) {
    const bool ints = a.kind() != K::Float && b.kind() != K::Float;
    if (ints) {
      const int64_t x = a.as_int(), y = b.as_int();
      int64_t r = 0;
      bool overflow = false;
      if (op == "+") overflow = __builtin_add_overflow(x, y, &r);
      if (op == "-") overflow = __builtin_sub_overflow(x, y, &r);
      if (op == "*") overflow = __builtin_mul_overflow(x, y, &r);
      if (op == "+" || op == "-" || op == "*") {
        if (overflow) throw EvalError("integer overflow in chat template arithmetic");
        return Value(r);
      }
      if (op == "//" || op == "%") {
        if (y == 0) throw EvalError("integer division or modulo by zero");
        const int64_t q = floor_div(x, y);
        return op == "//" ? Value(q) : Value(x - q * y);
      }
      if (op == "**" && y >= 0) {
        int64_t acc = 1;
        for (int64_t i = 0; i < y; ++i) {
          if (__builtin_mul_overflow(acc, x, &acc)) throw EvalError("integer overflow in chat template arithmetic");
          if (acc == 0 || acc == 1) break;
        }
        return Value(acc);
      }
    }
    const double x = a.as_float(), y = b.as_float();
    if (op == "+") return Value(x + y);
    if (op == "-") return Value(x - y);
    if (op == "*") return Value(x * y);
    if (op == "/") {
      if (y == 0) throw EvalError("division by zero");
      return Value(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) throw EvalError("float division or modulo by zero");
      const double q = std::floor(x / y);
      return op == "//" ? Value(q) : Value(x - q * y);
    }
    if (op == "**") return Value(std::pow(x, y));
    unsupported_operands(op, a, b);
  }
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (a.str().size() + b.str().size() > kMaxBuiltSize) throw EvalError("string result too large");
      return Value(a.str() + b.str());
    }
    if (a.kind() == K::List && b.kind() == K::List && a.is_tuple() == b.is_tuple()) {
      if (a.list().size() + b.list().size() > kMaxBuiltSize) throw EvalError("list result too large");
      ValueList out = a.list();
      out.insert(out.end(), b.list().begin(), b.list().end());
      return a.is_tuple() ? Value::tuple(std::move(out)) : Value(std::move(out));
    }
  }
  if (op == "*") {
    if ((a.is_string() || a.kind() == K::List) && (b.is_int() || b.kind() == K::Bool)) return repeat(a, b.as_int());
    if ((b.is_string() || b.kind() == K::List) && (a.is_int() || a.kind() == K::Bool)) return repeat(b, a.as_int());
  }
  if (op == "%" && a.is_string()) throw EvalError("unsupported construct: printf-style string formatting with '%'");
  unsupported_operands(op, a, b);
}

bool contains(const Value& container, const Value& item) {
  using K = Value::Kind;
  switch (container.kind()) {
    case K::Undefined:
      return false;
    case K::String:
      if (item.is_undefined()) item.fail_undefined();
      if (!item.is_string()) {
        throw EvalError(fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
      }
      return container.str().find(item.str()) != std::string::npos;
    case K::List:
      for (const Value& v : container.list()) {
        if (equals(v, item)) return true;
      }
      return false;
    case K::Map:
      if (item.kind() == K::Map || (item.kind() == K::List && !item.is_tuple())) {
        throw EvalError(fmt::format("unhashable type: '{}'", item.type_name()));
      }
      return item.is_string() && container.map().find(item.str()) != nullptr;
    default:
      throw EvalError(fmt::format("argument of type '{}' is not iterable", container.type_name()));
  }
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  // Shortest round-trip digits from to_chars in scientific form, laid out as Python's repr does:
  // positional when -4 <= exponent < 16 (with '.0' for whole numbers), else d.ddde+XX.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (sci[0] == '-') sign = "-", sci.erase(0, 1);
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exp = std::stoi(sci.substr(e + 1));
  if (exp < -4 || exp >= 16) {
    std::string mant = digits.substr(0, 1);
    if (digits.size() > 1) mant += "." + digits.substr(1);
    return fmt::format("{}{}e{}{:02d}", sign, mant, exp < 0 ? '-' : '+', std::abs(exp));
  }
  const int n = static_cast<int>(digits.size());
  const int point = exp + 1;  // digits before the decimal point
  if (point <= 0) return sign + "0." + std::string(static_cast<size_t>(-point), '0') + digits;
  if (point >= n) return sign + digits + std::string(static_cast<size_t>(point - n), '0') + ".0";
  return sign + digits.substr(0, static_cast<size_t>(point)) + "." + digits.substr(static_cast<size_t>(point));
}

namespace {

void json_encode(const Value& v, const JsonOptions& opt, int level, std::string& out) {
  using K = Value::Kind;
  auto newline = [&](int lvl) {
    append_bounded(out, "\n");
    for (int i = 0; i < lvl; ++i) append_bounded(out, *opt.indent);
  };
  check_depth(level);
  switch (v.kind()) {
    case K::None:
      append_bounded(out, "null");
      return;
    case K::Bool:
      append_bounded(out, v.as_bool() ? "true" : "false");
      return;
    case K::Int:
      append_bounded(out, std::to_string(v.as_int()));
      return;
    case K::Float: {
      const double d = v.as_float();
      if (std::isnan(d)) {
        append_bounded(out, "NaN");
      } else if (std::isinf(d)) {
        append_bounded(out, d < 0 ? "-Infinity" : "Infinity");
      } else {
        append_bounded(out, float_repr(d));
      }
      return;
    }
    case K::String:
      append_bounded(out, pystr::json_quote(v.str(), opt.ensure_ascii));
      return;
    case K::List: {
      const ValueList& l = v.list();
      if (l.empty()) {
        append_bounded(out, "[]");
        return;
      }
      append_bounded(out, "[");
      for (size_t i = 0; i < l.size(); ++i) {
        if (i) append_bounded(out, opt.item_sep);
        if (opt.indent) newline(level + 1);
        json_encode(l[i], opt, level + 1, out);
      }
      if (opt.indent) newline(level);
      append_bounded(out, "]");
      return;
    }
    case K::Map: {
      if (v.map().size() == 0) {
        append_bounded(out, "{}");
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.map()) items.push_back(&kv);
      if (opt.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      }
      append_bounded(out, "{");
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) append_bounded(out, opt.item_sep);
        if (opt.indent) newline(level + 1);
        append_bounded(out, pystr::json_quote(items[i]->first, opt.ensure_ascii) + opt.key_sep);
        json_encode(items[i]->second, opt, level + 1, out);
      }
      if (opt.indent) newline(level);
      append_bounded(out, "}");
      return;
    }
    default:
      throw EvalError(fmt::format("Object of type {} is not JSON serializable", v.type_name()));
  }
}

}  // namespace

std::string to_json(const Value& v, const JsonOptions& opt) {
  std::string out;
  json_encode(v, opt, 0, out);
  return out;
}

}  // namespace dlx::jinja
