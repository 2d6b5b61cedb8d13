// Python `str` semantics on UTF-8 byte strings, for the chat-template interpreter: templates index, slice,
// strip, split and case-map strings the way Python does, i.e. by code point, with Unicode whitespace.
// Invalid UTF-8 bytes count as one code point each and are passed through unchanged, so no input can make
// these functions fail or lose bytes.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dlx::jinja::pystr {

// Byte offsets where each code point starts, followed by s.size(): code point i is [off[i], off[i+1]).
std::vector<size_t> codepoint_offsets(std::string_view s);
size_t codepoint_count(std::string_view s);

// Python's slice.indices(): the positions that seq[start:stop:step] selects in a sequence of length n.
// step must not be 0.
std::vector<int64_t> slice_positions(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop,
                                     int64_t step);

// str.strip/lstrip/rstrip: `chars` == nullopt strips Unicode whitespace, else any code point in chars.
std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);
// str.split(sep, maxsplit): sep == nullopt splits on whitespace runs and drops empty parts. maxsplit < 0 means all.
// An empty sep is the caller's error (Python raises ValueError).
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);
// str.replace(old, new, count); count < 0 replaces all. An empty `old` inserts `repl` between code points.
// The result is bounded as every built string is (append_bounded, jinja/value.h).
std::string replace(std::string_view s, std::string_view old, std::string_view repl, int64_t count);

bool isspace(std::string_view s);  // str.isspace(): non-empty and all Unicode whitespace

std::string upper(std::string_view s);
std::string lower(std::string_view s);
std::string capitalize(std::string_view s);  // first code point upper-cased, the rest lower-cased
std::string title(std::string_view s);       // str.title(): a cased letter after an uncased one goes upper

std::string repr(std::string_view s);  // Python repr() of a str: 'it' or "it's", with escapes
// json.dumps(s, ensure_ascii=...): escapes quotes, backslashes and control characters; with ensure_ascii
// also every non-ASCII code point.
std::string json_quote(std::string_view s, bool ensure_ascii);

}  // namespace dlx::jinja::pystr
