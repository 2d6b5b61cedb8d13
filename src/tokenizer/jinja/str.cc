#include "tokenizer/jinja/str.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <algorithm>

#include "tokenizer/jinja/value.h"  // append_bounded

namespace dlx::jinja::pystr {
namespace {

constexpr int32_t kInvalid = -1;  // an invalid UTF-8 byte, kept as-is

// Decodes the code point at s[pos]; sets len to its byte length. Invalid sequences decode as one kInvalid byte.
int32_t decode(std::string_view s, size_t pos, size_t& len) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  len = 1;
  if (b0 < 0x80) return b0;
  size_t n;
  int32_t cp, min;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2, cp = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3, cp = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return kInvalid;
  }
  if (pos + n > s.size()) return kInvalid;
  for (size_t i = 1; i < n; ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return kInvalid;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return kInvalid;
  len = n;
  return cp;
}

struct CodePoint {
  int32_t cp;  // kInvalid for a raw byte
  std::string_view bytes;
};

std::vector<CodePoint> decode_all(std::string_view s) {
  std::vector<CodePoint> out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    size_t len;
    const int32_t cp = decode(s, pos, len);
    out.push_back({cp, s.substr(pos, len)});
    pos += len;
  }
  return out;
}

void append_cp(std::string& out, int32_t cp) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(cp, buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

// Python's str.isspace(): bidi classes WS/B/S and category Zs.
bool is_space(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_cased(int32_t c) {
  if (c < 0) return false;
  const auto cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// Case-maps every valid code point with f; invalid bytes pass through.
template <typename F>
std::string map_cps(std::string_view s, F f) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  for (const CodePoint& c : decode_all(s)) {
    if (c.cp == kInvalid) {
      out.append(c.bytes);
    } else {
      append_cp(out, f(c.cp, i));
    }
    ++i;
  }
  return out;
}

}  // namespace

std::vector<size_t> codepoint_offsets(std::string_view s) {
  std::vector<size_t> off;
  off.reserve(s.size() + 1);
  for (size_t pos = 0; pos < s.size();) {
    off.push_back(pos);
    size_t len;
    decode(s, pos, len);
    pos += len;
  }
  off.push_back(s.size());
  return off;
}

size_t codepoint_count(std::string_view s) {
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); ++n) {
    size_t len;
    decode(s, pos, len);
    pos += len;
  }
  return n;
}

std::vector<int64_t> slice_positions(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop,
                                     int64_t step) {
  // Clamp as CPython's PySlice_AdjustIndices does.
  auto adjust = [&](std::optional<int64_t> v, int64_t def) -> int64_t {
    if (!v) return def;
    int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < 0) x = step < 0 ? -1 : 0;
    } else if (x >= n) {
      x = step < 0 ? n - 1 : n;
    }
    return x;
  };
  const int64_t lo = adjust(start, step < 0 ? n - 1 : 0);
  const int64_t hi = adjust(stop, step < 0 ? -1 : n);
  std::vector<int64_t> pos;
  if (step > 0) {
    for (int64_t i = lo; i < hi; i += step) pos.push_back(i);
  } else {
    for (int64_t i = lo; i > hi; i += step) pos.push_back(i);
  }
  return pos;
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  const std::vector<CodePoint> cps = decode_all(s);
  std::vector<int32_t> set;
  if (chars) {
    for (const CodePoint& c : decode_all(*chars)) set.push_back(c.cp);
  }
  auto strippable = [&](const CodePoint& c) {
    if (!chars) return is_space(c.cp);
    return c.cp != kInvalid && std::find(set.begin(), set.end(), c.cp) != set.end();
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strippable(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strippable(cps[e - 1])) --e;
  }
  if (b == e) return "";
  const size_t from = static_cast<size_t>(cps[b].bytes.data() - s.data());
  const size_t to = static_cast<size_t>(cps[e - 1].bytes.data() + cps[e - 1].bytes.size() - s.data());
  return std::string(s.substr(from, to - from));
}

std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep) {
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      const size_t hit = s.find(*sep, pos);
      if (hit == std::string_view::npos) break;
      parts.emplace_back(s.substr(pos, hit - pos));
      pos = hit + sep->size();
    }
    parts.emplace_back(s.substr(pos));
    return parts;
  }
  // Whitespace split: runs of whitespace separate; leading/trailing runs produce nothing. After maxsplit
  // splits the rest (leading whitespace removed) is the last part, as in CPython.
  const std::vector<CodePoint> cps = decode_all(s);
  size_t i = 0;
  auto byte_at = [&](size_t k) {
    return k < cps.size() ? static_cast<size_t>(cps[k].bytes.data() - s.data()) : s.size();
  };
  while (true) {
    while (i < cps.size() && is_space(cps[i].cp)) ++i;
    if (i == cps.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
      parts.emplace_back(s.substr(byte_at(i)));
      break;
    }
    const size_t b = i;
    while (i < cps.size() && !is_space(cps[i].cp)) ++i;
    parts.emplace_back(s.substr(byte_at(b), byte_at(i) - byte_at(b)));
  }
  return parts;
}

std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count) {
  std::string out;
  int64_t done = 0;
  if (old.empty()) {
    const std::vector<size_t> off = codepoint_offsets(s);
    for (size_t i = 0; i + 1 < off.size(); ++i) {
      if (count < 0 || done < count) append_bounded(out, repl), ++done;
      append_bounded(out, s.substr(off[i], off[i + 1] - off[i]));
    }
    if (count < 0 || done < count) append_bounded(out, repl);
    return out;
  }
  size_t pos = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(old, pos);
    if (hit == std::string_view::npos) break;
    append_bounded(out, s.substr(pos, hit - pos));
    append_bounded(out, repl);
    pos = hit + old.size();
    ++done;
  }
  append_bounded(out, s.substr(pos));
  return out;
}

bool isspace(std::string_view s) {
  if (s.empty()) return false;
  for (const CodePoint& c : decode_all(s)) {
    if (!is_space(c.cp)) return false;
  }
  return true;
}

std::string upper(std::string_view s) {
  return map_cps(s, [](int32_t c, size_t) { return utf8proc_toupper(c); });
}

std::string lower(std::string_view s) {
  return map_cps(s, [](int32_t c, size_t) { return utf8proc_tolower(c); });
}

std::string capitalize(std::string_view s) {
  return map_cps(s, [](int32_t c, size_t i) { return i == 0 ? utf8proc_totitle(c) : utf8proc_tolower(c); });
}

std::string title(std::string_view s) {
  bool prev_cased = false;
  return map_cps(s, [&](int32_t c, size_t) {
    const int32_t m = prev_cased ? utf8proc_tolower(c) : utf8proc_totitle(c);
    prev_cased = is_cased(c);
    return m;
  });
}

std::string repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (const CodePoint& c : decode_all(s)) {
    const int32_t cp = c.cp;
    if (cp == kInvalid) {
      out.append(c.bytes);
    } else if (cp == '\\' || cp == quote) {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out.append("\\n");
    } else if (cp == '\r') {
      out.append("\\r");
    } else if (cp == '\t') {
      out.append("\\t");
    } else if (cp < 0x20 || cp == 0x7F) {
      out.append(fmt::format("\\x{:02x}", cp));
    } else if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else {
      // str.isprintable() is false for categories C* and Z* (except the ASCII space handled above).
      const auto cat = utf8proc_category(cp);
      const bool printable =
          !(cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CS ||
            cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_ZL ||
            cat == UTF8PROC_CATEGORY_ZP || cat == UTF8PROC_CATEGORY_ZS);
      if (printable) {
        out.append(c.bytes);
      } else if (cp <= 0xFF) {
        out.append(fmt::format("\\x{:02x}", cp));
      } else if (cp <= 0xFFFF) {
        out.append(fmt::format("\\u{:04x}", cp));
      } else {
        out.append(fmt::format("\\U{:08x}", cp));
      }
    }
  }
  out.push_back(quote);
  return out;
}

std::string json_quote(std::string_view s, bool ensure_ascii) {
  std::string out = "\"";
  for (const CodePoint& c : decode_all(s)) {
    const int32_t cp = c.cp;
    switch (cp) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\b':
        out.append("\\b");
        break;
      case '\f':
        out.append("\\f");
        break;
      default:
        if (cp >= 0 && cp < 0x20) {
          out.append(fmt::format("\\u{:04x}", cp));
        } else if (ensure_ascii && cp >= 0x80) {
          if (cp >= 0x10000) {
            const int32_t v = cp - 0x10000;
            out.append(fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)));
          } else {
            out.append(fmt::format("\\u{:04x}", cp));
          }
        } else {
          out.append(c.bytes);
        }
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace dlx::jinja::pystr
