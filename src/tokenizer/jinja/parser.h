// Parser of the chat-template interpreter: tokens -> syntax tree, with Jinja2's grammar and operator
// precedence (loosest first): `x if c else y`, or, and, not, comparisons/in, + -, ~, * / // %, **, unary - +,
// then postfix (.attr, [item], [a:b:c], call) and filters/tests (`| f`, `is t`), which bind tighter than
// any binary operator (`'a' + x | trim` trims x only).
// Statements: if/elif/else, for (with loop filter and else), set (name, tuple, ns.attr, block), macro,
// break/continue, generation. Unknown tags are syntax errors, reported with their line; unknown filters and
// tests are checked after parsing (jinja/analysis.h).
#pragma once
#include <string_view>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/lexer.h"

namespace dlx::jinja {

// `source` is the normalized text the tokens came from (for error positions). Throws dlx::Error.
NodeList parse(std::string_view source, const std::vector<Token>& tokens);

}  // namespace dlx::jinja
