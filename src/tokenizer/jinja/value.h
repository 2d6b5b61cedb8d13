// Value: the dynamic type of the chat-template interpreter. It models the Python objects a Jinja2 template
// sees when transformers renders it: None, bool, int, float, str, list, dict, plus Jinja's Undefined,
// namespace() objects and callables (bound str/dict methods, macros, globals such as range()).
// Lists and dicts are immutable and shared (HF renders in an ImmutableSandboxedEnvironment); a namespace is
// shared and mutable, which is how `{% set ns.x = ... %}` escapes a loop scope.
//
// Operations that Python would reject (1 + 'a', len(5), ...) throw EvalError, which carries no position;
// the renderer rethrows it as dlx::Error with the template line and column.
//
// Templates are untrusted input, so values are bounded: a render runs under RenderLimits (a work budget that
// every built string, copied string and list spends from, see spend()); printing, serializing and comparing
// refuse values nested deeper than kMaxValueDepth; nested lists, dicts and namespaces are destroyed without
// recursion (a chain made by `{% set ns.a = [ns.a] %}` in a loop may be arbitrarily deep); and the namespaces
// a render made are emptied when it ends, which frees those that hold themselves.
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
class ValueMap;
using ValueList = std::vector<Value>;

// Largest string or list an operation may build: far beyond any prompt, small enough to never exhaust memory.
constexpr size_t kMaxBuiltSize = size_t{1} << 26;
// Deepest list/dict/namespace nesting that repr, tojson and comparisons walk (they recurse per level).
constexpr int kMaxValueDepth = 256;
// Work units: one per statement or expression evaluated, one per kBytesPerWorkUnit bytes of string built or
// copied, one per list or dict item built. A render may spend kRenderWorkBudget of them: the real templates spend a
// few thousand per conversation (the prompt text itself is bounded by the model's context before rendering), and a
// runaway template stops within about a second even under the sanitizers (2^24 took 20-90 s there: fuzzing found
// the seed macro and loop templates timing out). So a template also builds at most 64 MB of strings in all.
constexpr uint64_t kBytesPerWorkUnit = 64;
constexpr uint64_t kRenderWorkBudget = uint64_t{1} << 20;

// The limits of one render, in force on this thread while the object lives.
class RenderLimits {
 public:
  explicit RenderLimits(uint64_t work_budget = kRenderWorkBudget);
  ~RenderLimits();
  RenderLimits(const RenderLimits&) = delete;
  RenderLimits& operator=(const RenderLimits&) = delete;

 private:
  friend void spend(uint64_t units);
  friend class Value;
  uint64_t left_;
  std::vector<std::weak_ptr<ValueMap>> namespaces_;  // attributes of the namespaces made meanwhile
  RenderLimits* outer_;
};
// Spends work units of the render in force on this thread (none: free); EvalError when its budget is spent.
void spend(uint64_t units);
inline void spend_bytes(size_t bytes) {
  if (bytes >= kBytesPerWorkUnit) spend(bytes / kBytesPerWorkUnit);
}
// out += s, refused (EvalError) past kMaxBuiltSize; spends the bytes.
void append_bounded(std::string& out, std::string_view s);

// Insertion-ordered string-keyed map: Python dicts keep insertion order and tojson output depends on it.
// Chat-template maps are small (a message's fields, a namespace's attributes), so lookup is linear.
class ValueMap {
 public:
  const Value* find(std::string_view key) const;
  void clear();
  void set(const std::string& key, Value v);  // replaces the value of an existing key, else appends
  size_t size() const;
  using Items = std::vector<std::pair<std::string, Value>>;
  Items::const_iterator begin() const;
  Items::const_iterator end() const;

 private:
  friend class Value;
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
  Value(std::string s) : v_(std::move(s)) { spend_bytes(str().size()); }
  Value(const char* s) : v_(std::string(s)) {}
  Value(ValueList l);
  // Copying a string copies its bytes, so it spends them (moves are free).
  Value(const Value& o) : v_(o.v_), tuple_(o.tuple_) {
    if (is_string()) spend_bytes(str().size());
  }
  Value& operator=(const Value& o) {
    if (this != &o) {
      v_ = o.v_;
      tuple_ = o.tuple_;
      if (is_string()) spend_bytes(str().size());
    }
    return *this;
  }
  Value(Value&&) noexcept = default;
  Value& operator=(Value&&) noexcept = default;
  ~Value() = default;
  // A tuple is a list that prints as (a, b) and equals only tuples: what (a, b) and dict.items() make.
  static Value tuple(ValueList l) {
    Value v(std::move(l));
    v.tuple_ = true;
    return v;
  }
  Value(ValueMap m);

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
  friend class RenderLimits;
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
  // Deleter of the shared lists, dicts and namespaces: moves nested ones out before deleting and destroys
  // them from a worklist, so destruction never recurses more than one level.
  struct TreeDelete {
    void operator()(const ValueList* p) const noexcept;
    void operator()(const ValueMap* p) const noexcept;
    void operator()(Namespace* p) const noexcept;
  };
  bool has_children() const;
  static void take_nested(ValueList& l, std::vector<Value>& out);
  static void take_nested(ValueMap& m, std::vector<Value>& out);
  // When this is the last reference to a list/dict/namespace, moves its nested containers into `out`.
  void take_children_if_last(std::vector<Value>& out);
  static void drain(std::vector<Value>& pending) noexcept;
  void repr_into(std::string& out, std::vector<const void*>& path) const;
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
