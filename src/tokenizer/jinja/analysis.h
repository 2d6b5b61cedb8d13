// Static checks over a parsed template that mirror what Jinja's compiler does before rendering:
// which filter/test names must exist up front, and which top-level names start out undefined.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja/ast.h"

namespace dlx::jinja {

// Throws dlx::Error for an unknown filter or test name, except where Jinja only reports it when it runs:
// inside an `if` (its tests and branches) or an inline `x if c else y`, up to the next for loop, macro or
// set block. Filters and tests that Jinja has but this interpreter lacks are always left to run time, so a
// branch that is not taken (say, the tools branch of a template) does not stop the rest from rendering.
void check_filter_and_test_names(std::string_view source, const NodeList& root);

// Jinja resolves names statically per frame: a name whose first use at the template's top level is an
// unconditional `set` (not inside an if) starts out undefined, hiding a render variable of the same name from
// everything that runs before the set, loops and macros included. These are those names.
std::vector<std::string> names_undefined_at_start(const NodeList& root);

}  // namespace dlx::jinja
