#include "tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "tokenizer/utf8.h"

namespace dlx::byte_level {

namespace {

// Byte -> code point (forward) and code point -> byte (reverse, -1 where not in the alphabet); every code
// point in the alphabet is below 0x144.
struct Tables {
  std::array<char32_t, 256> cp{};
  std::array<std::string, 256> utf8;
  std::array<int16_t, 0x144> byte_of{};

  Tables() {
    byte_of.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      cp[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      utf8::append(utf8[b], cp[b]);
      byte_of[cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

void encode(std::string_view bytes, std::string& out) {
  const Tables& t = tables();
  for (unsigned char b : bytes) out += t.utf8[b];
}

void decode_token(std::string_view token, std::string& out) {
  const Tables& t = tables();
  const size_t start = out.size();
  size_t i = 0;
  while (i < token.size()) {
    char32_t c = 0;
    const size_t n = utf8::decode(token, i, &c);
    if (n == 0 || c >= t.byte_of.size() || t.byte_of[c] < 0) {
      out.resize(start);
      out.append(token);
      return;
    }
    out += static_cast<char>(t.byte_of[c]);
    i += n;
  }
}

std::string_view char_of(unsigned char b) { return tables().utf8[b]; }

}  // namespace dlx::byte_level
