// UTF-8 helpers for the tokenizer: decoding one code point, validation, the lossy conversion HF applies to
// decoded bytes (each maximal invalid subsequence becomes one U+FFFD, as Rust's String::from_utf8_lossy does),
// and the two character classes added-token matching needs (Unicode White_Space and regex \w).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace dlx::utf8 {

inline constexpr size_t npos = std::string_view::npos;

// Length in bytes of the valid UTF-8 sequence starting at s[i], with its code point in *cp; 0 when the bytes
// there are not a valid sequence (bad lead byte, bad continuation, overlong form, surrogate, > U+10FFFF).
size_t decode(std::string_view s, size_t i, char32_t* cp);

// Appends the UTF-8 encoding of cp (cp must be a Unicode scalar value).
void append(std::string& out, char32_t cp);

// Byte offset of the first invalid UTF-8 byte in s, or npos when s is valid.
size_t find_invalid(std::string_view s);

// s with every maximal invalid subsequence replaced by U+FFFD ("substitution of maximal subparts").
std::string to_valid_lossy(std::string_view s);

// Unicode White_Space property (what Rust's regex \s matches).
bool is_whitespace(char32_t c);

// Rust regex \w: letters, marks, decimal digits, connector punctuation, letter numbers and joiners.
bool is_word_char(char32_t c);

}  // namespace dlx::utf8
