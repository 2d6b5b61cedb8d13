#include "tokenizer/jinja/builtins.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <initializer_list>
#include <map>

#include "tokenizer/jinja/call.h"
#include "tokenizer/jinja/str.h"

namespace dlx::jinja {
namespace {

using K = Value::Kind;

// Jinja's sandbox refuses ranges longer than this (MAX_RANGE), and so do we.
constexpr int64_t kMaxRange = 100000;

Value bind(std::string name, Value self, Value (*fn)(const Value&, const CallArgs&)) {
  return Value::function(name, [self = std::move(self), fn](const CallArgs& a) { return fn(self, a); });
}

int64_t codepoint_index(const std::string& s, size_t byte) {
  return static_cast<int64_t>(pystr::codepoint_count(std::string_view(s).substr(0, byte)));
}

// ---- str methods ----

Value str_method(std::string_view name, const Value& self) {
  using Impl = Value (*)(const Value&, const CallArgs&);
  static const std::map<std::string_view, Impl> methods = {
      {"strip",
       [](const Value& s, const CallArgs& a) {
         return Value(pystr::strip(s.str(), Args("strip", a, {"chars"}).opt_str(0), true, true));
       }},
      {"lstrip",
       [](const Value& s, const CallArgs& a) {
         return Value(pystr::strip(s.str(), Args("lstrip", a, {"chars"}).opt_str(0), true, false));
       }},
      {"rstrip",
       [](const Value& s, const CallArgs& a) {
         return Value(pystr::strip(s.str(), Args("rstrip", a, {"chars"}).opt_str(0), false, true));
       }},
      {"startswith",
       [](const Value& s, const CallArgs& a) {
         const Value& p = Args("startswith", a, {"prefix"}).required(0);
         const ValueList options = p.kind() == K::List ? p.list() : ValueList{p};
         for (const Value& o : options) {
           if (!o.is_string()) throw EvalError("startswith first arg must be str or a tuple of str");
           if (s.str().compare(0, o.str().size(), o.str()) == 0) return Value(true);
         }
         return Value(false);
       }},
      {"endswith",
       [](const Value& s, const CallArgs& a) {
         const Value& p = Args("endswith", a, {"suffix"}).required(0);
         const ValueList options = p.kind() == K::List ? p.list() : ValueList{p};
         for (const Value& o : options) {
           if (!o.is_string()) throw EvalError("endswith first arg must be str or a tuple of str");
           const std::string &x = s.str(), &y = o.str();
           if (x.size() >= y.size() && x.compare(x.size() - y.size(), y.size(), y) == 0) return Value(true);
         }
         return Value(false);
       }},
      {"split",
       [](const Value& s, const CallArgs& a) {
         const Args args("split", a, {"sep", "maxsplit"});
         const std::optional<std::string> sep = args.opt_str(0);
         if (sep && sep->empty()) throw EvalError("split(): empty separator");
         ValueList out;
         for (std::string& part : pystr::split(s.str(), sep, args.integer(1, -1))) out.emplace_back(std::move(part));
         return Value(std::move(out));
       }},
      {"replace",
       [](const Value& s, const CallArgs& a) {
         const Args args("replace", a, {"old", "new", "count"});
         return Value(pystr::replace(s.str(), args.str(0), args.str(1), args.integer(2, -1)));
       }},
      {"upper",
       [](const Value& s, const CallArgs& a) {
         no_call_args("upper", a);
         return Value(pystr::upper(s.str()));
       }},
      {"lower",
       [](const Value& s, const CallArgs& a) {
         no_call_args("lower", a);
         return Value(pystr::lower(s.str()));
       }},
      {"title",
       [](const Value& s, const CallArgs& a) {
         no_call_args("title", a);
         return Value(pystr::title(s.str()));
       }},
      {"capitalize",
       [](const Value& s, const CallArgs& a) {
         no_call_args("capitalize", a);
         return Value(pystr::capitalize(s.str()));
       }},
      {"find",
       [](const Value& s, const CallArgs& a) {
         const size_t hit = s.str().find(Args("find", a, {"sub"}).str(0));
         return Value(hit == std::string::npos ? int64_t{-1} : codepoint_index(s.str(), hit));
       }},
      {"count",
       [](const Value& s, const CallArgs& a) {
         const std::string sub = Args("count", a, {"sub"}).str(0);
         if (sub.empty()) return Value(static_cast<int64_t>(pystr::codepoint_count(s.str()) + 1));
         int64_t n = 0;
         for (size_t p = s.str().find(sub); p != std::string::npos; p = s.str().find(sub, p + sub.size())) ++n;
         return Value(n);
       }},
      {"join",
       [](const Value& s, const CallArgs& a) {
         std::string out;
         bool first = true;
         for (const Value& v : iterate(Args("join", a, {"iterable"}).required(0))) {
           if (!v.is_string()) throw EvalError(fmt::format("join(): expected str items, found {}", v.type_name()));
           if (!first) append_bounded(out, s.str());
           append_bounded(out, v.str());
           first = false;
         }
         return Value(std::move(out));
       }},
  };
  const auto it = methods.find(name);
  if (it == methods.end()) return Value::undefined(fmt::format("'str object' has no attribute '{}'", name));
  return bind(std::string(name), self, it->second);
}

// ---- dict methods (the read-only ones; the sandbox forbids mutation) ----

bool is_dict_method(std::string_view name) {
  return name == "get" || name == "items" || name == "keys" || name == "values";
}

Value dict_method(std::string_view name, const Value& self) {
  if (name == "get") {
    return bind("get", self, [](const Value& d, const CallArgs& a) {
      const Args args("get", a, {"key", "default"});
      const Value& key = args.required(0);
      const Value* v = key.is_string() ? d.map().find(key.str()) : nullptr;
      return v ? *v : args.get_or(1, Value::none());
    });
  }
  if (name == "items") {
    return bind("items", self, [](const Value& d, const CallArgs& a) {
      no_call_args("items", a);
      return Value(item_pairs(d.map()));
    });
  }
  if (name == "keys") {
    return bind("keys", self, [](const Value& d, const CallArgs& a) {
      no_call_args("keys", a);
      ValueList out;
      for (const auto& kv : d.map()) out.emplace_back(kv.first);
      return Value(std::move(out));
    });
  }
  return bind("values", self, [](const Value& d, const CallArgs& a) {
    no_call_args("values", a);
    ValueList out;
    for (const auto& kv : d.map()) out.push_back(kv.second);
    return Value(std::move(out));
  });
}

// ---- globals ----

Value range_fn(const CallArgs& a) {
  if (!a.kwargs.empty() || a.args.empty() || a.args.size() > 3) {
    throw EvalError("range() takes 1 to 3 integer arguments");
  }
  std::vector<int64_t> n;
  for (const Value& v : a.args) {
    if (v.is_undefined()) v.fail_undefined();
    if (v.kind() != K::Int && v.kind() != K::Bool) {
      throw EvalError(fmt::format("range() needs integers, got {}", v.type_name()));
    }
    n.push_back(v.as_int());
  }
  const int64_t start = n.size() == 1 ? 0 : n[0];
  const int64_t stop = n.size() == 1 ? n[0] : n[1];
  const int64_t step = n.size() == 3 ? n[2] : 1;
  if (step == 0) throw EvalError("range() arg 3 must not be zero");
  ValueList out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
    if (static_cast<int64_t>(out.size()) >= kMaxRange) {
      throw EvalError(fmt::format("range too big: the sandbox blocks ranges larger than {}", kMaxRange));
    }
    out.emplace_back(i);
    if (__builtin_add_overflow(i, step, &i)) break;  // the next item would be past int64, so past stop
  }
  return Value(std::move(out));
}

// namespace(...) and dict(...): an optional mapping, then keyword arguments.
ValueMap map_from_args(std::string_view fn, const CallArgs& a) {
  ValueMap m;
  if (a.args.size() > 1) throw EvalError(fmt::format("{}() takes at most one positional argument", fn));
  if (a.args.size() == 1) {
    if (a.args[0].kind() != K::Map) throw EvalError(fmt::format("{}(): the positional argument must be a dict", fn));
    for (const auto& [k, v] : a.args[0].map()) m.set(k, v);
  }
  for (const auto& [k, v] : a.kwargs) m.set(k, v);
  return m;
}

Value strftime_now(const CallArgs& a) {
  const std::string format = Args("strftime_now", a, {"format"}).str(0);
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[256];
  const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
  return Value(std::string(buf, n));
}

}  // namespace

ValueList iterate(const Value& v) {
  switch (v.kind()) {
    case K::Undefined:
      return {};
    case K::List:
      return v.list();
    case K::Map: {
      ValueList keys;
      for (const auto& kv : v.map()) keys.emplace_back(kv.first);
      return keys;
    }
    case K::String: {
      const std::vector<size_t> off = pystr::codepoint_offsets(v.str());
      ValueList chars;
      for (size_t i = 0; i + 1 < off.size(); ++i) chars.emplace_back(v.str().substr(off[i], off[i + 1] - off[i]));
      return chars;
    }
    default:
      throw EvalError(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

Value get_attr(const Value& obj, std::string_view name) {
  switch (obj.kind()) {
    case K::Undefined:
      obj.fail_undefined();
    case K::String:
      return str_method(name, obj);
    case K::Map:
      if (is_dict_method(name)) return dict_method(name, obj);
      if (const Value* v = obj.map().find(name)) return *v;
      return Value::undefined(fmt::format("'dict object' has no attribute '{}'", name));
    case K::Namespace:
      if (const Value* v = obj.ns_attrs().find(name)) return *v;
      return Value::undefined(fmt::format("'Namespace' object has no attribute '{}'", name));
    default:
      return Value::undefined(fmt::format("'{}' object has no attribute '{}'", obj.type_name(), name));
  }
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) obj.fail_undefined();
  const bool int_key = key.kind() == K::Int || key.kind() == K::Bool;
  if (int_key && (obj.kind() == K::List || obj.is_string())) {
    const int64_t n = obj.kind() == K::List ? static_cast<int64_t>(obj.list().size())
                                            : static_cast<int64_t>(pystr::codepoint_count(obj.str()));
    int64_t i = key.as_int();
    if (i < 0) i += n;
    if (i < 0 || i >= n) {
      return Value::undefined(fmt::format("'{} object' has no element {}", obj.type_name(), key.as_int()));
    }
    if (obj.kind() == K::List) return obj.list()[static_cast<size_t>(i)];
    const std::vector<size_t> off = pystr::codepoint_offsets(obj.str());
    return Value(
        obj.str().substr(off[static_cast<size_t>(i)], off[static_cast<size_t>(i) + 1] - off[static_cast<size_t>(i)]));
  }
  if (obj.kind() == K::Map && key.is_string()) {
    if (const Value* v = obj.map().find(key.str())) return *v;
  }
  if (key.is_string()) return get_attr(obj, key.str());
  if (key.is_undefined()) key.fail_undefined();
  return Value::undefined(fmt::format("'{}' object has no element {}", obj.type_name(), key.repr()));
}

Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step) {
  if (obj.is_undefined()) obj.fail_undefined();
  auto bound = [](const Value* v) -> std::optional<int64_t> {
    if (!v || v->is_none()) return std::nullopt;
    if (v->kind() != K::Int && v->kind() != K::Bool) throw EvalError("slice indices must be integers or None");
    return v->as_int();
  };
  const std::optional<int64_t> st = bound(step);
  if (st && *st == 0) throw EvalError("slice step cannot be zero");
  if (obj.kind() == K::List) {
    ValueList out;
    for (int64_t i :
         pystr::slice_positions(static_cast<int64_t>(obj.list().size()), bound(start), bound(stop), st.value_or(1))) {
      out.push_back(obj.list()[static_cast<size_t>(i)]);
    }
    return obj.is_tuple() ? Value::tuple(std::move(out)) : Value(std::move(out));
  }
  if (obj.is_string()) {
    const std::vector<size_t> off = pystr::codepoint_offsets(obj.str());
    const auto n = static_cast<int64_t>(off.size() - 1);
    std::string out;
    for (int64_t i : pystr::slice_positions(n, bound(start), bound(stop), st.value_or(1))) {
      const auto k = static_cast<size_t>(i);
      out += obj.str().substr(off[k], off[k + 1] - off[k]);
    }
    return Value(std::move(out));
  }
  if (obj.kind() == K::Map) throw EvalError("unhashable type: 'slice'");
  throw EvalError(fmt::format("'{}' object is not subscriptable", obj.type_name()));
}

Value lookup_global(std::string_view name) {
  if (name == "range") return Value::function("range", range_fn);
  if (name == "namespace") {
    return Value::function("namespace",
                           [](const CallArgs& a) { return Value::make_namespace(map_from_args("namespace", a)); });
  }
  if (name == "dict") return Value::function("dict", [](const CallArgs& a) { return Value(map_from_args("dict", a)); });
  if (name == "raise_exception") {
    return Value::function("raise_exception", [](const CallArgs& a) -> Value {
      throw EvalError("raise_exception: " + Args("raise_exception", a, {"message"}).required(0).to_string());
    });
  }
  if (name == "strftime_now") return Value::function("strftime_now", strftime_now);
  return Value::undefined(fmt::format("'{}' is undefined", name));
}

}  // namespace dlx::jinja
