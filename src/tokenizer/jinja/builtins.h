// Built-ins of the chat-template interpreter: attribute/item lookup with Jinja's rules, the methods of str and
// dict that templates call (.strip(), .split(), .get(), .items() ...) and global functions (range, namespace,
// raise_exception ...) live in jinja/builtins.cc; filters (`| trim`, `| tojson` ...) and tests (`is defined`,
// `is string` ...) in jinja/filters.cc.
// Semantics follow Jinja2 3.x as transformers configures it (tojson = json.dumps with ensure_ascii=False).
// Errors throw EvalError; the renderer adds the template position.
#pragma once
#include <string_view>

#include "tokenizer/jinja/value.h"

namespace dlx::jinja {

// obj.name: an attribute (a str/dict method) first, then a dict key / namespace attribute; else Undefined.
Value get_attr(const Value& obj, std::string_view name);
// obj[key]: an item first (list/str index, dict key), then an attribute; else Undefined.
Value get_item(const Value& obj, const Value& key);
// obj[start:stop:step] on a list or str; null bounds are omitted ones.
Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step);

// Python iter(): list items, dict keys, str code points; Undefined yields nothing; other types throw.
ValueList iterate(const Value& v);

bool is_filter(std::string_view name);  // implemented here
bool is_test(std::string_view name);
bool is_jinja_filter(std::string_view name);  // one of Jinja's built-in filters, implemented here or not
bool is_jinja_test(std::string_view name);
Value apply_filter(std::string_view name, const Value& v, const CallArgs& args);
bool apply_test(std::string_view name, const Value& v, const CallArgs& args);

// range, namespace, dict, raise_exception, strftime_now; Undefined for any other name.
Value lookup_global(std::string_view name);

}  // namespace dlx::jinja
