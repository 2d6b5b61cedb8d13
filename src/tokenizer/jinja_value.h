// Value: the dynamic type of the chat-template interpreter. It models the Python objects a Jinja2 template
// sees when transformers renders it: None, bool, int, float, str, list, dict, plus Jinja's Undefined,
// namespace() objects and callables (bound str/dict methods, macros, globals such as range()).
// Lists and dicts are immutable and shared (HF renders in an ImmutableSandboxedEnvironment); a namespace is
// shared and mutable, which is how `{% set ns.x = ... %}` escapes a loop scope.
//
// Operations that Python would reject (1 + 'a', len(5), ...) throw EvalError, which carries no position;
// the renderer rethrows it as dlx::Error with the template line and column.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace dlx::jinja {

struct EvalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Value;
using ValueList = std::vector<Value>;

// Insertion-ordered string-keyed map: Python dicts keep insertion order and tojson output depends on it.
// Chat-template maps are small (a message's fields, a namespace's attributes), so lookup is linear.
class ValueMap {
 public:
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);  // replaces the value of an existing key, else appends
  size_t size() const;
  using Items = std::vector<std::pair<std::string, Value>>;
  Items::const_iterator begin() const;
  Items::const_iterator end() const;

 private:
  Items items_;
};

// Arguments of a call: f(a, b, key=c).
struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
};
using Function = std::function<Value(const CallArgs&)>;

class Value {
 public:
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Map, Namespace, Function };

  Value() : v_(Undefined{}) {}  // Undefined
  Value(bool b) : v_(b) {}
  Value(int v) : v_(static_cast<int64_t>(v)) {}
  Value(int64_t v) : v_(v) {}
  Value(double v) : v_(v) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(ValueList l) : v_(std::make_shared<const ValueList>(std::move(l))) {}
  // A tuple is a list that prints as (a, b) and equals only tuples: what (a, b) and dict.items() make.
  static Value tuple(ValueList l) {
    Value v(std::move(l));
    v.tuple_ = true;
    return v;
  }
  Value(ValueMap m) : v_(std::make_shared<const ValueMap>(std::move(m))) {}

  // `hint` names what was missing, for the message when the undefined value is misused ("'x' is undefined").
  static Value undefined(std::string hint) { return Value(Undefined{std::move(hint)}); }
  static Value none() { return Value(None{}); }
  static Value make_namespace(ValueMap attrs);
  static Value function(std::string name, Function fn);

  Kind kind() const { return static_cast<Kind>(v_.index()); }
  bool is_undefined() const { return kind() == Kind::Undefined; }
  bool is_none() const { return kind() == Kind::None; }
  bool is_string() const { return kind() == Kind::String; }
  bool is_int() const { return kind() == Kind::Int; }  // not bool
  bool is_number() const;                              // bool, int or float, as Python arithmetic sees them
  bool is_tuple() const { return tuple_; }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const;   // bool or int
  double as_float() const;  // bool, int or float
  const std::string& str() const { return std::get<std::string>(v_); }
  const ValueList& list() const { return *std::get<ListPtr>(v_); }
  const ValueMap& map() const { return *std::get<MapPtr>(v_); }
  ValueMap& ns_attrs() const { return std::get<NamespacePtr>(v_)->attrs; }
  const std::string& function_name() const { return std::get<FunctionPtr>(v_)->name; }
  Value call(const CallArgs& args) const;  // throws EvalError if not callable
  const std::string& undefined_hint() const { return std::get<Undefined>(v_).hint; }
  // Identity of shared objects (namespace, function) for `is sameas` and ==.
  const void* identity() const;

  bool truthy() const;                       // Python bool(); Undefined is false
  std::string to_string() const;             // Python str(); Undefined renders as ""
  std::string repr() const;                  // Python repr()
  std::string type_name() const;             // Python type name for messages: 'int', 'str', 'dict', 'NoneType' ...
  [[noreturn]] void fail_undefined() const;  // throws "'x' is undefined"

 private:
  struct Undefined {
    std::string hint;
  };
  struct None {};
  struct Namespace {
    ValueMap attrs;
  };
  struct FunctionObj {
    std::string name;
    Function fn;
  };
  using ListPtr = std::shared_ptr<const ValueList>;
  using MapPtr = std::shared_ptr<const ValueMap>;
  using NamespacePtr = std::shared_ptr<Namespace>;
  using FunctionPtr = std::shared_ptr<const FunctionObj>;
  // The order of the alternatives is the order of Kind.
  using Storage =
      std::variant<Undefined, None, bool, int64_t, double, std::string, ListPtr, MapPtr, NamespacePtr, FunctionPtr>;

  explicit Value(Storage v) : v_(std::move(v)) {}
  Storage v_;
  bool tuple_ = false;
};

inline size_t ValueMap::size() const { return items_.size(); }
inline ValueMap::Items::const_iterator ValueMap::begin() const { return items_.begin(); }
inline ValueMap::Items::const_iterator ValueMap::end() const { return items_.end(); }

// Python ==, with numbers compared by value (True == 1 == 1.0) and lists/dicts compared deeply.
bool equals(const Value& a, const Value& b);
// Python ordering for <, <=, >, >=: numbers, strings (by code point), lists lexicographically.
// Returns <0, 0 or >0; throws EvalError for unorderable types.
int compare(const Value& a, const Value& b);
// Python binary arithmetic for + - * / // % **: numbers (bool counts as int, int64 overflow is an error),
// str + str, list + list, str/list * int. Anything else, Undefined included, throws EvalError.
Value arith(std::string_view op, const Value& a, const Value& b);
// Python `item in container` for str (substring), list (==), dict (key); Undefined contains nothing.
bool contains(const Value& container, const Value& item);
// Python repr() of a float (shortest round-trip digits, '1.0', '1e+16').
std::string float_repr(double d);

struct JsonOptions {
  std::optional<std::string> indent;  // nullopt: one line; else newline + indent per level
  bool sort_keys = false;
  std::string item_sep = ", ";  // json.dumps defaults: (', ', ': '), or (',', ': ') with an indent
  std::string key_sep = ": ";
  bool ensure_ascii = false;  // escape non-ASCII as \uXXXX (surrogate pairs above the BMP)
};
// json.dumps(v, ensure_ascii=False, ...) as transformers' tojson filter calls it.
std::string to_json(const Value& v, const JsonOptions& opt);

}  // namespace dlx::jinja
