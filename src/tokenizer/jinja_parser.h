// Parser of the chat-template interpreter: tokens -> syntax tree, with Jinja2's grammar and operator
// precedence (loosest first): `x if c else y`, or, and, not, comparisons/in, + -, ~, * / // %, **, unary - +,
// then postfix (.attr, [item], [a:b:c], call) and filters/tests (`| f`, `is t`), which bind tighter than
// any binary operator (`'a' + x | trim` trims x only).
// Statements: if/elif/else, for (with loop filter and else), set (name, tuple, ns.attr, block), macro,
// break/continue, generation. Unknown tags, filters and tests are syntax errors, reported with their line.
#pragma once
#include <string_view>
#include <vector>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_lexer.h"

namespace dlx::jinja {

// `source` is the normalized text the tokens came from (for error positions). Throws dlx::Error.
NodeList parse(std::string_view source, const std::vector<Token>& tokens);

// Jinja resolves names statically per frame: a name whose first use at the template's top level is an
// unconditional `set` (not inside an if) starts out undefined, hiding a render variable of the same name from
// everything that runs before the set, loops and macros included. These are those names.
std::vector<std::string> names_undefined_at_start(const NodeList& root);

}  // namespace dlx::jinja
