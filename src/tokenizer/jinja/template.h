// A parsed Jinja2 template (the subset chat templates use) and its renderer.
//
//   Template t(source, {.trim_blocks = true, .lstrip_blocks = true});   // syntax errors throw here
//   std::string text = t.render(vars);                                   // run-time errors throw here
//
// Scoping follows Jinja: each for-loop iteration and each macro call gets its own scope, so a `set` inside
// them is not seen outside; `if` blocks share their enclosing scope; a namespace() object is shared, so
// `{% set ns.x = ... %}` is how a loop passes values out. Undefined names render as "" and are falsy;
// using them in arithmetic or looking up an attribute of them is an error, as in Jinja.
// Every error is a dlx::Error naming the construct and its line/column in the template.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

namespace dlx::jinja {

struct TemplateOptions {
  bool trim_blocks = false;            // drop the first newline after a block tag
  bool lstrip_blocks = false;          // drop spaces/tabs before a block tag at the start of a line
  bool keep_trailing_newline = false;  // Jinja's default drops one trailing newline of the source
};

class Template {
 public:
  explicit Template(std::string_view source, const TemplateOptions& opt = {});
  // Renders with the given top-level variables. Globals (range, namespace, dict, raise_exception,
  // strftime_now) are visible unless a variable of the same name shadows them.
  std::string render(const ValueMap& vars) const;

 private:
  std::string source_;  // normalized; error positions refer to it
  NodeList root_;
  std::vector<std::string> undefined_at_start_;  // see names_undefined_at_start()
};

}  // namespace dlx::jinja
