// Lexer of the chat-template interpreter: splits a Jinja template into text and tag tokens and tokenizes the
// expressions inside `{{ ... }}` and `{% ... %}`. Whitespace control is applied here, as Jinja's lexer does:
// `{%-`/`{{-`/`{#-` strip the whitespace before a tag, `-%}`/`-}}`/`-#}` the whitespace after it;
// trim_blocks drops the first newline after a block or comment tag, lstrip_blocks the spaces and tabs
// between a line start and a block or comment tag; `{%+`/`+%}` turn those two off for one tag.
// Comments are dropped and `{% raw %}...{% endraw %}` becomes plain text.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace dlx::jinja {

struct LexOptions {
  bool trim_blocks = false;
  bool lstrip_blocks = false;
};

enum class Tok {
  Text,        // template data between tags
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,
  String,  // text holds the decoded value
  Int,
  Float,
  Op,   // operator or punctuation: + - * / // % ** ~ == != < > <= >= ( ) [ ] { } , . : | =
  End,  // end of the template
};

struct Token {
  Tok type;
  std::string text;
  size_t offset;  // byte offset in the (normalized) source, for error messages
};

// Jinja's newline handling: \r\n and \r become \n, and unless keep_trailing_newline one trailing \n is dropped.
std::string normalize_source(std::string_view source, bool keep_trailing_newline);

// Tokenizes a normalized source. Throws dlx::Error naming the problem and its line/column.
std::vector<Token> lex(std::string_view source, const LexOptions& opt);

// "line L, col C (offset O)" for a byte offset of the source.
std::string describe_position(std::string_view source, size_t offset);
// Throws dlx::Error("chat template <position>: <msg>").
[[noreturn]] void fail_at(std::string_view source, size_t offset, const std::string& msg);

}  // namespace dlx::jinja
