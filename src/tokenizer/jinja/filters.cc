// Jinja's filters and tests, as transformers' environment has them (tojson is json.dumps with
// ensure_ascii=False). Each takes the value and the call's arguments; errors throw EvalError.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/call.h"
#include "tokenizer/jinja/str.h"

namespace dlx::jinja {
namespace {

using K = Value::Kind;

int64_t length_of(const Value& v) {
  switch (v.kind()) {
    case K::Undefined:
      return 0;
    case K::String:
      return static_cast<int64_t>(pystr::codepoint_count(v.str()));
    case K::List:
      return static_cast<int64_t>(v.list().size());
    case K::Map:
      return static_cast<int64_t>(v.map().size());
    default:
      throw EvalError(fmt::format("object of type '{}' has no len()", v.type_name()));
  }
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// Jinja's title filter: each run between [-\s({[<] separators gets an upper first letter, the rest lower.
std::string title_filter(const std::string& s) {
  const std::vector<size_t> off = pystr::codepoint_offsets(s);
  std::string out;
  bool word_start = true;
  for (size_t i = 0; i + 1 < off.size(); ++i) {
    const std::string_view cp = std::string_view(s).substr(off[i], off[i + 1] - off[i]);
    const bool sep = cp == "-" || cp == "(" || cp == "{" || cp == "[" || cp == "<" || pystr::isspace(cp);
    out += sep ? std::string(cp) : (word_start ? pystr::upper(cp) : pystr::lower(cp));
    word_start = sep;
  }
  return out;
}

// Looks up a dotted attribute path ("a.b") the way Jinja's selectattr/map/join(attribute=) do.
Value attribute_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool is_index =
        !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = is_index ? get_item(cur, Value(static_cast<int64_t>(std::stoll(part)))) : get_item(cur, Value(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

CallArgs tail_args(const CallArgs& a, size_t from) {
  CallArgs rest;
  if (a.args.size() > from) rest.args.assign(a.args.begin() + static_cast<std::ptrdiff_t>(from), a.args.end());
  rest.kwargs = a.kwargs;
  return rest;
}

// select/reject/selectattr/rejectattr: keep the items whose (attribute) value passes the named test
// (truthiness when no test is named) == keep.
Value select_items(const Value& seq, const CallArgs& a, bool by_attr, bool keep) {
  size_t next = 0;
  std::string attr;
  if (by_attr) {
    if (a.args.empty() || !a.args[0].is_string()) throw EvalError("selectattr/rejectattr need an attribute name");
    attr = a.args[0].str();
    next = 1;
  }
  std::optional<std::string> test;
  if (a.args.size() > next) {
    if (!a.args[next].is_string()) throw EvalError("select/reject: the test name must be a string");
    test = a.args[next].str();
    if (!is_test(*test)) throw EvalError(fmt::format("unknown test '{}'", *test));
  }
  const CallArgs test_args = tail_args(a, next + 1);
  ValueList out;
  if (!seq.truthy()) return Value(std::move(out));  // Jinja skips falsy input (None, 0, '') without iterating
  for (const Value& item : iterate(seq)) {
    const Value probe = by_attr ? attribute_path(item, attr) : item;
    const bool pass = test ? apply_test(*test, probe, test_args) : probe.truthy();
    if (pass == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

Value map_items(const Value& seq, const CallArgs& a) {
  ValueList out;
  if (!seq.truthy()) return Value(std::move(out));  // as select: falsy input maps to nothing
  for (const auto& [key, v] : a.kwargs) {
    if (key != "attribute" && key != "default") throw EvalError(fmt::format("map(): unexpected keyword '{}'", key));
  }
  const auto attr = std::find_if(a.kwargs.begin(), a.kwargs.end(), [](auto& kv) { return kv.first == "attribute"; });
  if (attr != a.kwargs.end()) {
    if (!attr->second.is_string()) throw EvalError("map(): attribute must be a string");
    const auto def = std::find_if(a.kwargs.begin(), a.kwargs.end(), [](auto& kv) { return kv.first == "default"; });
    for (const Value& item : iterate(seq)) {
      Value v = attribute_path(item, attr->second.str());
      out.push_back(v.is_undefined() && def != a.kwargs.end() ? def->second : v);
    }
    return Value(std::move(out));
  }
  if (a.args.empty() || !a.args[0].is_string()) throw EvalError("map() needs a filter name or attribute=");
  const std::string filter = a.args[0].str();
  if (!is_filter(filter)) throw EvalError(fmt::format("unknown filter '{}'", filter));
  CallArgs rest;
  rest.args.assign(a.args.begin() + 1, a.args.end());
  for (const Value& item : iterate(seq)) out.push_back(apply_filter(filter, item, rest));
  return Value(std::move(out));
}

Value reverse_of(const Value& v) {
  if (v.is_string()) {
    const std::vector<size_t> off = pystr::codepoint_offsets(v.str());
    std::string out;
    for (size_t i = off.size() - 1; i > 0; --i) out += v.str().substr(off[i - 1], off[i] - off[i - 1]);
    return Value(std::move(out));
  }
  ValueList items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value(std::move(items));
}

Value to_int(const Value& v, const Args& args) {
  if (v.is_undefined()) v.fail_undefined();  // Undefined.__int__ raises, unlike other bad input
  const Value def = args.get_or(0, Value(int64_t{0}));
  if (v.kind() == K::Int || v.kind() == K::Bool) return Value(v.as_int());
  if (v.kind() == K::Float) {
    const double d = v.as_float();
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return def;
    return Value(static_cast<int64_t>(d));
  }
  if (!v.is_string()) return def;
  const std::string s = pystr::strip(v.str(), std::nullopt, true, true);
  const int64_t base = args.integer(1, 10);
  if (!s.empty()) {
    errno = 0;
    char* end = nullptr;
    const long long n = std::strtoll(s.c_str(), &end, static_cast<int>(base));
    if (errno == 0 && end == s.c_str() + s.size()) return Value(static_cast<int64_t>(n));
    const double d = std::strtod(s.c_str(), &end);  // Jinja falls back to int(float(s))
    if (end == s.c_str() + s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18) return Value(static_cast<int64_t>(d));
  }
  return def;
}

Value to_float(const Value& v, const Args& args) {
  if (v.is_undefined()) v.fail_undefined();
  const Value def = args.get_or(0, Value(0.0));
  if (v.is_number()) return Value(v.as_float());
  if (!v.is_string()) return def;
  const std::string s = pystr::strip(v.str(), std::nullopt, true, true);
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size() ? Value(d) : def;
}

Value tojson(const Value& v, const CallArgs& a) {
  // transformers' signature: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
  const Args args("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions opt;
  opt.ensure_ascii = args.get_or(0, Value(false)).truthy();
  if (const Value* indent = args.get(1)) {
    if (indent->is_string()) {
      opt.indent = indent->str();
    } else {
      const int64_t n = args.integer(1, 0);
      if (n > 1024) throw EvalError(fmt::format("tojson(): indent {} is too large (at most 1024)", n));
      opt.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, n)), ' ');
    }
    opt.item_sep = ",";
  }
  if (const Value* sep = args.get(2)) {
    if (sep->kind() != K::List || sep->list().size() != 2 || !sep->list()[0].is_string() ||
        !sep->list()[1].is_string()) {
      throw EvalError("tojson(): separators must be a pair of strings");
    }
    opt.item_sep = sep->list()[0].str();
    opt.key_sep = sep->list()[1].str();
  }
  opt.sort_keys = args.get_or(3, Value(false)).truthy();
  return Value(to_json(v, opt));
}

using FilterFn = Value (*)(const Value&, const CallArgs&);

const std::map<std::string_view, FilterFn>& filters() {
  static const std::map<std::string_view, FilterFn> table = {
      {"trim",
       [](const Value& v, const CallArgs& a) {
         return Value(pystr::strip(v.to_string(), Args("trim", a, {"chars"}).opt_str(0), true, true));
       }},
      {"length",
       [](const Value& v, const CallArgs& a) {
         no_call_args("length", a);
         return Value(length_of(v));
       }},
      {"count",
       [](const Value& v, const CallArgs& a) {
         no_call_args("count", a);
         return Value(length_of(v));
       }},
      {"string",
       [](const Value& v, const CallArgs& a) {
         no_call_args("string", a);
         return Value(v.to_string());
       }},
      {"tojson", tojson},
      {"upper",
       [](const Value& v, const CallArgs& a) {
         no_call_args("upper", a);
         return Value(pystr::upper(v.to_string()));
       }},
      {"lower",
       [](const Value& v, const CallArgs& a) {
         no_call_args("lower", a);
         return Value(pystr::lower(v.to_string()));
       }},
      {"capitalize",
       [](const Value& v, const CallArgs& a) {
         no_call_args("capitalize", a);
         return Value(pystr::capitalize(v.to_string()));
       }},
      {"title",
       [](const Value& v, const CallArgs& a) {
         no_call_args("title", a);
         return Value(title_filter(v.to_string()));
       }},
      {"first",
       [](const Value& v, const CallArgs& a) {
         no_call_args("first", a);
         const ValueList items = iterate(v);
         return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
       }},
      {"last",
       [](const Value& v, const CallArgs& a) {
         no_call_args("last", a);
         const ValueList items = iterate(v);
         return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
       }},
      {"join",
       [](const Value& v, const CallArgs& a) {
         const Args args("join", a, {"d", "attribute"});
         const std::string sep = args.get_or(0, Value("")).to_string();
         const std::optional<std::string> attr = args.opt_str(1);
         std::string out;
         bool first = true;
         for (const Value& item : iterate(v)) {
           if (!first) append_bounded(out, sep);
           append_bounded(out, (attr ? attribute_path(item, *attr) : item).to_string());
           first = false;
         }
         return Value(std::move(out));
       }},
      {"default",
       [](const Value& v, const CallArgs& a) {
         const Args args("default", a, {"default_value", "boolean"});
         const bool use_default = v.is_undefined() || (args.get_or(1, Value(false)).truthy() && !v.truthy());
         return use_default ? args.get_or(0, Value("")) : v;
       }},
      {"list",
       [](const Value& v, const CallArgs& a) {
         no_call_args("list", a);
         return Value(iterate(v));
       }},
      {"reverse",
       [](const Value& v, const CallArgs& a) {
         no_call_args("reverse", a);
         return reverse_of(v);
       }},
      {"items",
       [](const Value& v, const CallArgs& a) {
         no_call_args("items", a);
         if (v.is_undefined()) return Value(ValueList{});
         if (v.kind() != K::Map) throw EvalError("items(): can only get item pairs from a mapping");
         return Value(item_pairs(v.map()));
       }},
      {"replace",
       [](const Value& v, const CallArgs& a) {
         const Args args("replace", a, {"old", "new", "count"});
         return Value(pystr::replace(v.to_string(), args.get_or(0, Value("")).to_string(),
                                     args.get_or(1, Value("")).to_string(), args.integer(2, -1)));
       }},
      {"int",
       [](const Value& v, const CallArgs& a) {
         return to_int(v, Args("int", a, {"default", "base"}));
       }},
      {"float", [](const Value& v, const CallArgs& a) { return to_float(v, Args("float", a, {"default"})); }},
      {"abs",
       [](const Value& v, const CallArgs& a) {
         no_call_args("abs", a);
         if (v.kind() == K::Float) return Value(std::fabs(v.as_float()));
         if (!v.is_number()) throw EvalError(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
         if (v.as_int() == INT64_MIN) throw EvalError("integer overflow in abs()");
         return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
       }},
      {"safe",
       [](const Value& v, const CallArgs& a) {
         no_call_args("safe", a);
         return v;
       }},
      {"escape",
       [](const Value& v, const CallArgs& a) {
         no_call_args("escape", a);
         return Value(html_escape(v.to_string()));
       }},
      {"selectattr", [](const Value& v, const CallArgs& a) { return select_items(v, a, true, true); }},
      {"rejectattr", [](const Value& v, const CallArgs& a) { return select_items(v, a, true, false); }},
      {"select", [](const Value& v, const CallArgs& a) { return select_items(v, a, false, true); }},
      {"reject", [](const Value& v, const CallArgs& a) { return select_items(v, a, false, false); }},
      {"map", map_items},
  };
  return table;
}

std::string_view filter_alias(std::string_view name) {
  if (name == "d") return "default";
  if (name == "e") return "escape";
  return name;
}

// ---- tests ----

using TestFn = bool (*)(const Value&, const CallArgs&);

const Value& one_arg(std::string_view test, const CallArgs& a) {
  if (a.args.size() != 1 || !a.kwargs.empty()) throw EvalError(fmt::format("test '{}' takes one argument", test));
  return a.args[0];
}

bool no_args(std::string_view test, const CallArgs& a) {
  if (!a.args.empty() || !a.kwargs.empty()) throw EvalError(fmt::format("test '{}' takes no arguments", test));
  return true;
}

const std::map<std::string_view, TestFn>& tests() {
  static const std::map<std::string_view, TestFn> table = {
      {"defined", [](const Value& v, const CallArgs& a) { return no_args("defined", a) && !v.is_undefined(); }},
      {"undefined", [](const Value& v, const CallArgs& a) { return no_args("undefined", a) && v.is_undefined(); }},
      {"none", [](const Value& v, const CallArgs& a) { return no_args("none", a) && v.is_none(); }},
      {"string", [](const Value& v, const CallArgs& a) { return no_args("string", a) && v.is_string(); }},
      {"number", [](const Value& v, const CallArgs& a) { return no_args("number", a) && v.is_number(); }},
      {"integer", [](const Value& v, const CallArgs& a) { return no_args("integer", a) && v.kind() == K::Int; }},
      {"float", [](const Value& v, const CallArgs& a) { return no_args("float", a) && v.kind() == K::Float; }},
      {"boolean", [](const Value& v, const CallArgs& a) { return no_args("boolean", a) && v.kind() == K::Bool; }},
      {"true",
       [](const Value& v, const CallArgs& a) { return no_args("true", a) && v.kind() == K::Bool && v.as_bool(); }},
      {"false",
       [](const Value& v, const CallArgs& a) { return no_args("false", a) && v.kind() == K::Bool && !v.as_bool(); }},
      {"mapping", [](const Value& v, const CallArgs& a) { return no_args("mapping", a) && v.kind() == K::Map; }},
      // Jinja's Undefined is iterable and has len(), so it passes these two.
      {"iterable",
       [](const Value& v, const CallArgs& a) {
         return no_args("iterable", a) &&
                (v.kind() == K::List || v.kind() == K::Map || v.is_string() || v.is_undefined());
       }},
      {"sequence",
       [](const Value& v, const CallArgs& a) {
         return no_args("sequence", a) &&
                (v.kind() == K::List || v.kind() == K::Map || v.is_string() || v.is_undefined());
       }},
      {"callable", [](const Value& v, const CallArgs& a) { return no_args("callable", a) && v.kind() == K::Function; }},
      // value % 2 == 1 and friends, with Python's % (so 2.5 is neither odd nor even).
      {"odd", [](const Value& v,
                 const CallArgs& a) { return no_args("odd", a) && equals(arith("%", v, Value(2)), Value(1)); }},
      {"even", [](const Value& v,
                  const CallArgs& a) { return no_args("even", a) && equals(arith("%", v, Value(2)), Value(0)); }},
      {"divisibleby",
       [](const Value& v, const CallArgs& a) { return equals(arith("%", v, one_arg("divisibleby", a)), Value(0)); }},
      {"eq", [](const Value& v, const CallArgs& a) { return equals(v, one_arg("eq", a)); }},
      {"ne", [](const Value& v, const CallArgs& a) { return !equals(v, one_arg("ne", a)); }},
      {"lt", [](const Value& v, const CallArgs& a) { return compare(v, one_arg("lt", a)) < 0; }},
      {"le", [](const Value& v, const CallArgs& a) { return compare(v, one_arg("le", a)) <= 0; }},
      {"gt", [](const Value& v, const CallArgs& a) { return compare(v, one_arg("gt", a)) > 0; }},
      {"ge", [](const Value& v, const CallArgs& a) { return compare(v, one_arg("ge", a)) >= 0; }},
      {"in", [](const Value& v, const CallArgs& a) { return contains(one_arg("in", a), v); }},
      {"sameas",
       [](const Value& v, const CallArgs& a) {
         const Value& o = one_arg("sameas", a);
         if (v.kind() != o.kind()) return false;
         if (v.identity() || o.identity()) return v.identity() == o.identity();
         return !v.is_undefined() && equals(v, o);
       }},
      // str(value).islower() / .isupper(): some cased character, and all of them in that case.
      {"lower",
       [](const Value& v, const CallArgs& a) {
         const std::string s = v.to_string();
         return no_args("lower", a) && pystr::lower(s) == s && pystr::upper(s) != s;
       }},
      {"upper",
       [](const Value& v, const CallArgs& a) {
         const std::string s = v.to_string();
         return no_args("upper", a) && pystr::upper(s) == s && pystr::lower(s) != s;
       }},
      {"filter",
       [](const Value& v, const CallArgs& a) { return no_args("filter", a) && v.is_string() && is_filter(v.str()); }},
      {"test",
       [](const Value& v, const CallArgs& a) { return no_args("test", a) && v.is_string() && is_test(v.str()); }},
  };
  return table;
}

std::string_view test_alias(std::string_view name) {
  static const std::map<std::string_view, std::string_view> aliases = {
      {"==", "eq"}, {"equalto", "eq"}, {"!=", "ne"},          {"<", "lt"},  {"lessthan", "lt"},
      {"<=", "le"}, {">", "gt"},       {"greaterthan", "gt"}, {">=", "ge"},
  };
  const auto it = aliases.find(name);
  return it == aliases.end() ? name : it->second;
}

}  // namespace

bool is_filter(std::string_view name) { return filters().count(filter_alias(name)) != 0; }

bool is_test(std::string_view name) { return tests().count(test_alias(name)) != 0; }

bool is_jinja_filter(std::string_view name) {
  static const char* const names[] = {"abs",    "attr",       "batch",       "capitalize", "center",   "count",
                                      "d",      "default",    "dictsort",    "e",          "escape",   "filesizeformat",
                                      "first",  "float",      "forceescape", "format",     "groupby",  "indent",
                                      "int",    "items",      "join",        "last",       "length",   "list",
                                      "lower",  "map",        "max",         "min",        "pprint",   "random",
                                      "reject", "rejectattr", "replace",     "reverse",    "round",    "safe",
                                      "select", "selectattr", "slice",       "sort",       "string",   "striptags",
                                      "sum",    "title",      "tojson",      "trim",       "truncate", "unique",
                                      "upper",  "urlencode",  "urlize",      "wordcount",  "wordwrap", "xmlattr"};
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

bool is_jinja_test(std::string_view name) {
  static const char* const names[] = {
      "boolean",  "callable", "defined",  "divisibleby", "eq",          "equalto", "escaped", "even",
      "false",    "filter",   "float",    "ge",          "greaterthan", "gt",      "in",      "integer",
      "iterable", "le",       "lessthan", "lower",       "lt",          "mapping", "ne",      "none",
      "number",   "odd",      "sameas",   "sequence",    "string",      "test",    "true",    "undefined",
      "upper",    "==",       "!=",       "<",           "<=",          ">",       ">="};
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

Value apply_filter(std::string_view name, const Value& v, const CallArgs& args) {
  const auto it = filters().find(filter_alias(name));
  if (it == filters().end()) {
    throw EvalError(fmt::format("{} filter '{}'", is_jinja_filter(name) ? "unsupported" : "unknown", name));
  }
  return it->second(v, args);
}

bool apply_test(std::string_view name, const Value& v, const CallArgs& args) {
  const auto it = tests().find(test_alias(name));
  if (it == tests().end()) {
    throw EvalError(fmt::format("{} test '{}'", is_jinja_test(name) ? "unsupported" : "unknown", name));
  }
  return it->second(v, args);
}

}  // namespace dlx::jinja
