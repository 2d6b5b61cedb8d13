#include "core/byte_size.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <string>
#include <utility>

#include "core/error.h"

namespace dlx {

int64_t parse_byte_size(std::string_view text, std::string_view what) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  check(ec == std::errc() && end != text.data() && std::isfinite(v),
        "{}: '{}' is not a size (a number with an optional unit, e.g. 512M, 4GiB, 5GB)", what, text);
  std::string unit;
  for (const char* p = end; p != text.data() + text.size(); ++p)
    unit += char(std::toupper(static_cast<unsigned char>(*p)));
  static const std::array<std::pair<const char*, double>, 13> kUnits = {{
      {"", 1},           {"B", 1},
      {"K", 0x1p10},     {"KIB", 0x1p10},  {"KB", 1e3},
      {"M", 0x1p20},     {"MIB", 0x1p20},  {"MB", 1e6},
      {"G", 0x1p30},     {"GIB", 0x1p30},  {"GB", 1e9},
      {"T", 0x1p40},     {"TIB", 0x1p40},
  }};
  double mul = unit == "TB" ? 1e12 : 0;
  for (const auto& [name, m] : kUnits)
    if (unit == name) mul = m;
  check(mul > 0, "{}: '{}' has an unknown unit (B, K/KiB, M/MiB, G/GiB, T/TiB = powers of 1024; KB, MB, GB, TB = "
        "powers of 1000)", what, text);
  const double bytes = v * mul;
  check(bytes >= 1, "{}: '{}' must be at least one byte", what, text);
  check(bytes < 0x1p63, "{}: '{}' is too large", what, text);
  return int64_t(bytes);
}

}  // namespace dlx
