#include "tokenizer/jinja/lexer.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace dlx::jinja {
namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }
int hex_value(char h) {
  if (is_digit(h)) return h - '0';
  if (h >= 'a' && h <= 'f') return h - 'a' + 10;
  if (h >= 'A' && h <= 'F') return h - 'A' + 10;
  return -1;
}

std::string_view rstrip_ws(std::string_view s) {
  while (!s.empty() && is_ws(s.back())) s.remove_suffix(1);
  return s;
}

// Decodes the body of a string literal the way Python's "unicode-escape" codec does (which is what Jinja uses):
// \n \t \r \\ \' \" \a \b \f \v, octal \ooo, \xhh, \uhhhh, \Uhhhhhhhh; an unknown escape keeps its backslash.
std::string unescape(std::string_view src, std::string_view body, size_t offset) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out.push_back(body[i]);
      continue;
    }
    const char c = body[++i];
    switch (c) {
      case 'n':
        out.push_back('\n');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case '\\':
        out.push_back('\\');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '"':
        out.push_back('"');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case '\n':
        break;  // backslash-newline continues the line
      case 'x':
      case 'u':
      case 'U': {
        const size_t width = c == 'x' ? 2 : (c == 'u' ? 4 : 8);
        if (i + width >= body.size()) fail_at(src, offset, fmt::format("truncated \\{} escape in string literal", c));
        uint32_t cp = 0;
        for (size_t k = 1; k <= width; ++k) {
          const int d = hex_value(body[i + k]);
          if (d < 0) fail_at(src, offset, fmt::format("truncated \\{} escape in string literal", c));
          cp = cp * 16 + static_cast<uint32_t>(d);
        }
        if (cp > 0x10FFFF) fail_at(src, offset, "\\U escape out of range in string literal");
        utf8proc_uint8_t buf[4];
        const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
        out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
        i += width;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          uint32_t cp = 0;
          size_t k = 0;
          while (k < 3 && i + k < body.size() && body[i + k] >= '0' && body[i + k] <= '7') {
            cp = cp * 8 + static_cast<uint32_t>(body[i + k] - '0');
            ++k;
          }
          utf8proc_uint8_t buf[4];
          const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
          out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
          i += k - 1;
        } else {
          out.push_back('\\');
          out.push_back(c);
        }
    }
  }
  return out;
}

class Lexer {
 public:
  Lexer(std::string_view src, const LexOptions& opt) : src_(src), opt_(opt) {}

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;  // the text that starts at pos begins a line
    while (pos < src_.size()) {
      const size_t start = find_tag(pos);
      if (start == std::string_view::npos) {
        emit(Tok::Text, std::string(src_.substr(pos)), pos);
        break;
      }
      const char kind = src_[start + 1];  // '{', '%' or '#'
      char mod = start + 2 < src_.size() ? src_[start + 2] : '\0';
      if (mod != '-' && mod != '+') mod = '\0';
      std::string_view text = src_.substr(pos, start - pos);
      text = strip_before_tag(text, kind, mod, line_starting);
      if (!text.empty()) emit(Tok::Text, std::string(text), pos);

      size_t p = start + 2 + (mod ? 1 : 0);
      if (kind == '#') {
        p = skip_comment(start, p);
      } else if (kind == '%' && is_raw_begin(p)) {
        p = lex_raw(start, p);
      } else {
        p = lex_tag(start, p, kind);
      }
      line_starting = p > 0 && src_[p - 1] == '\n';
      pos = p;
    }
    emit(Tok::End, "", src_.size());
    return std::move(tokens_);
  }

 private:
  void emit(Tok t, std::string text, size_t offset) { tokens_.push_back({t, std::move(text), offset}); }

  // Next "{{", "{%" or "{#" at or after pos.
  size_t find_tag(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string_view::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string_view::npos;
  }

  // Whitespace control on the text before a tag: '-' strips all trailing whitespace; otherwise lstrip_blocks
  // removes the indentation of a block/comment tag that is alone at the start of its line.
  std::string_view strip_before_tag(std::string_view text, char kind, char mod, bool line_starting) const {
    if (mod == '-') return rstrip_ws(text);
    if (mod == '+' || !opt_.lstrip_blocks || kind == '{') return text;
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting) return text;
    const std::string_view tail = text.substr(l_pos);
    if (!tail.empty() && std::all_of(tail.begin(), tail.end(), is_ws)) return text.substr(0, l_pos);
    return text;
  }

  // Position after a tag end that started at `close` (the index of '%}' / '#}'), with its modifier `mod`.
  size_t after_block_end(size_t close, char mod) const {
    size_t p = close + 2;
    if (mod == '-') {
      while (p < src_.size() && is_ws(src_[p])) ++p;
    } else if (mod != '+' && opt_.trim_blocks && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    return p;
  }

  size_t skip_comment(size_t start, size_t p) {
    const size_t close = src_.find("#}", p);
    if (close == std::string_view::npos) fail_at(src_, start, "unterminated comment '{#'");
    const char mod = close > p && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : '\0';
    return after_block_end(close, mod);
  }

  // `{% raw %}` (p points after "{%" and its modifier).
  bool is_raw_begin(size_t p) const {
    while (p < src_.size() && is_ws(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < src_.size() && is_ws(src_[p])) ++p;
    return src_.compare(p, 2, "%}") == 0 || src_.compare(p, 3, "-%}") == 0;
  }

  size_t lex_raw(size_t start, size_t p) {
    // The opening tag: "-%}" swallows the following whitespace; trim_blocks does not apply (as in Jinja).
    p = src_.find("%}", p);
    const bool strip_after = src_[p - 1] == '-';
    p += 2;
    if (strip_after) {
      while (p < src_.size() && is_ws(src_[p])) ++p;
    }
    const bool line_starting = p > 0 && src_[p - 1] == '\n';
    for (size_t i = src_.find("{%", p); i != std::string_view::npos; i = src_.find("{%", i + 1)) {
      size_t q = i + 2;
      char mod = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) mod = src_[q++];
      while (q < src_.size() && is_ws(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < src_.size() && is_ws(src_[q])) ++q;
      char end_mod = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) end_mod = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) continue;
      const std::string_view body = strip_before_tag(src_.substr(p, i - p), '%', mod, line_starting);
      if (!body.empty()) emit(Tok::Text, std::string(body), p);
      return after_block_end(q, end_mod);
    }
    fail_at(src_, start, "missing '{% endraw %}' for '{% raw %}'");
  }

  // Expression tokens of a `{{ }}` or `{% %}` tag up to its end marker (only at bracket depth 0, so a dict
  // literal's "}}" does not close the tag).
  size_t lex_tag(size_t start, size_t p, char kind) {
    const bool is_var = kind == '{';
    emit(is_var ? Tok::VarBegin : Tok::BlockBegin, is_var ? "{{" : "{%", start);
    std::vector<char> brackets;
    while (true) {
      while (p < src_.size() && is_ws(src_[p])) ++p;
      if (p >= src_.size()) {
        fail_at(src_, start,
                fmt::format("unterminated tag '{}' (missing '{}')", is_var ? "{{" : "{%", is_var ? "}}" : "%}"));
      }
      if (brackets.empty()) {
        const char* close = is_var ? "}}" : "%}";
        if (src_.compare(p, 2, close) == 0) {
          emit(is_var ? Tok::VarEnd : Tok::BlockEnd, close, p);
          return is_var ? p + 2 : after_block_end(p, '\0');
        }
        if ((src_[p] == '-' || (!is_var && src_[p] == '+')) && src_.compare(p + 1, 2, close) == 0) {
          emit(is_var ? Tok::VarEnd : Tok::BlockEnd, close, p);
          return after_block_end(p + 1, src_[p]);
        }
      }
      p = lex_expr_token(p, brackets);
    }
  }

  size_t lex_expr_token(size_t p, std::vector<char>& brackets) {
    const char c = src_[p];
    if (is_name_start(c)) {
      size_t q = p;
      while (q < src_.size() && is_name_char(src_[q])) ++q;
      emit(Tok::Name, std::string(src_.substr(p, q - p)), p);
      return q;
    }
    if (is_digit(c)) return lex_number(p);
    if (c == '\'' || c == '"') {
      size_t q = p + 1;
      while (q < src_.size() && src_[q] != c) q += src_[q] == '\\' ? 2 : 1;
      if (q >= src_.size()) fail_at(src_, p, "unterminated string literal");
      emit(Tok::String, unescape(src_, src_.substr(p + 1, q - p - 1), p), p);
      return q + 1;
    }
    static const char* const two_char_ops[] = {"//", "**", "==", "!=", "<=", ">="};
    for (const char* op : two_char_ops) {
      if (src_.compare(p, 2, op) == 0) {
        emit(Tok::Op, op, p);
        return p + 2;
      }
    }
    if (std::strchr("+-*/%~<>()[]{},.:|=", c) == nullptr) {
      fail_at(src_, p, fmt::format("unexpected character '{}' in expression", c));
    }
    if (c == '(' || c == '[' || c == '{') {
      brackets.push_back(c == '(' ? ')' : (c == '[' ? ']' : '}'));
    } else if (c == ')' || c == ']' || c == '}') {
      if (brackets.empty()) fail_at(src_, p, fmt::format("unexpected '{}'", c));
      if (brackets.back() != c) fail_at(src_, p, fmt::format("unexpected '{}', expected '{}'", c, brackets.back()));
      brackets.pop_back();
    }
    emit(Tok::Op, std::string(1, c), p);
    return p + 1;
  }

  // Integers and floats: digits with optional '_' separators, a fraction, an exponent. "x.0.1" stays an
  // attribute chain: a number right after '.' takes no fraction (Jinja's float rule has the same look-behind).
  size_t lex_number(size_t p) {
    auto digits = [&](size_t q) {
      while (q < src_.size() &&
             (is_digit(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() && is_digit(src_[q + 1])))) {
        ++q;
      }
      return q;
    };
    size_t q = digits(p);
    bool is_float = false;
    const bool after_dot = p > 0 && src_[p - 1] == '.';
    if (!after_dot && q + 1 < src_.size() && src_[q] == '.' && is_digit(src_[q + 1])) {
      q = digits(q + 1);
      is_float = true;
    }
    if (!after_dot && q < src_.size() && (src_[q] == 'e' || src_[q] == 'E')) {
      size_t r = q + 1;
      if (r < src_.size() && (src_[r] == '+' || src_[r] == '-')) ++r;
      if (r < src_.size() && is_digit(src_[r])) {
        q = digits(r);
        is_float = true;
      }
    }
    std::string text(src_.substr(p, q - p));
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    emit(is_float ? Tok::Float : Tok::Int, std::move(text), p);
    return q;
  }

  std::string_view src_;
  LexOptions opt_;
  std::vector<Token> tokens_;
};

}  // namespace

std::string normalize_source(std::string_view source, bool keep_trailing_newline) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!keep_trailing_newline && !out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::vector<Token> lex(std::string_view source, const LexOptions& opt) { return Lexer(source, opt).run(); }

std::string describe_position(std::string_view source, size_t offset) {
  offset = std::min(offset, source.size());
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < offset; ++i) {
    if (source[i] == '\n') ++line, line_start = i + 1;
  }
  const size_t col = offset - line_start + 1;
  return fmt::format("line {}, col {} (offset {})", line, col, offset);
}

void fail_at(std::string_view source, size_t offset, const std::string& msg) {
  throw Error(fmt::format("chat template {}: {}", describe_position(source, offset), msg));
}

}  // namespace dlx::jinja
