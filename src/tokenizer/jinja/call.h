// Helpers shared by the built-in functions, methods, filters and tests: binding a call's arguments to a
// Python-like parameter list, with messages that name the function and the parameter.
#pragma once
#include <fmt/format.h>

#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace dlx::jinja {

// Binds a call's positional and keyword arguments to a Python-like parameter list.
class Args {
 public:
  Args(std::string_view fn, const CallArgs& call, std::initializer_list<std::string_view> params)
      : fn_(fn), params_(params), slots_(params.size(), nullptr) {
    if (call.args.size() > params_.size()) {
      throw EvalError(fmt::format("{}() takes at most {} argument(s), {} given", fn, params_.size(), call.args.size()));
    }
    for (size_t i = 0; i < call.args.size(); ++i) slots_[i] = &call.args[i];
    for (const auto& [key, v] : call.kwargs) {
      const auto it = std::find(params_.begin(), params_.end(), key);
      if (it == params_.end()) throw EvalError(fmt::format("{}() got an unexpected keyword argument '{}'", fn, key));
      const size_t i = static_cast<size_t>(it - params_.begin());
      if (slots_[i]) throw EvalError(fmt::format("{}() got multiple values for argument '{}'", fn, key));
      slots_[i] = &v;
    }
  }
  // The argument, or nullptr when omitted or passed as None.
  const Value* get(size_t i) const { return slots_[i] && !slots_[i]->is_none() ? slots_[i] : nullptr; }
  Value get_or(size_t i, Value def) const { return slots_[i] ? *slots_[i] : def; }
  const Value& required(size_t i) const {
    if (!slots_[i]) throw EvalError(fmt::format("{}() missing required argument '{}'", fn_, params_[i]));
    return *slots_[i];
  }
  std::string str(size_t i) const { return expect_str(required(i), params_[i]); }
  std::optional<std::string> opt_str(size_t i) const {
    const Value* v = get(i);
    if (!v) return std::nullopt;
    return expect_str(*v, params_[i]);
  }
  int64_t integer(size_t i, int64_t def) const {
    const Value* v = get(i);
    if (!v) return def;
    if (v->is_undefined()) v->fail_undefined();
    if (v->kind() != Value::Kind::Int && v->kind() != Value::Kind::Bool) {
      throw EvalError(fmt::format("{}(): argument '{}' must be an integer, not {}", fn_, params_[i], v->type_name()));
    }
    return v->as_int();
  }

 private:
  std::string expect_str(const Value& v, std::string_view param) const {
    if (v.is_undefined()) v.fail_undefined();
    if (!v.is_string()) {
      throw EvalError(fmt::format("{}(): argument '{}' must be a string, not {}", fn_, param, v.type_name()));
    }
    return v.str();
  }

  std::string_view fn_;
  std::vector<std::string_view> params_;
  std::vector<const Value*> slots_;
};

inline void no_call_args(std::string_view fn, const CallArgs& a) {
  if (!a.args.empty() || !a.kwargs.empty()) throw EvalError(fmt::format("{}() takes no arguments", fn));
}

// dict.items(): (key, value) tuples in insertion order.
inline ValueList item_pairs(const ValueMap& m) {
  ValueList out;
  for (const auto& [k, v] : m) out.push_back(Value::tuple({Value(k), v}));
  return out;
}

}  // namespace dlx::jinja
