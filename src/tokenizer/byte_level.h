// GPT-2's byte-level alphabet: a reversible map from the 256 byte values to 256 printable code points, so
// any byte string becomes a string of "visible" characters that BPE can work on. Printable bytes ('!'..'~',
// U+00A1..U+00AC, U+00AE..U+00FF) map to themselves; the other 68 bytes (controls, space, 0x7F..0xA0, 0xAD)
// map in increasing order to U+0100, U+0101, ... (so ' ' becomes 'Ġ' U+0120 and '\n' becomes 'Ċ' U+010A).
#pragma once
#include <string>
#include <string_view>

namespace dlx::byte_level {

// Appends the byte-level characters (as UTF-8) of every byte of `bytes` to `out`.
void encode(std::string_view bytes, std::string& out);

// Appends the bytes a token string stands for. When every character of `token` is in the byte-level
// alphabet the bytes are those characters' bytes; otherwise (an added token such as "a b") the token's own
// UTF-8 bytes are appended unchanged. This is what HF's ByteLevel decoder does per token.
void decode_token(std::string_view token, std::string& out);

// The byte-level character for byte b, as UTF-8.
std::string_view char_of(unsigned char b);

}  // namespace dlx::byte_level
