// core/byte_size.h: the one parser of byte sizes (--kv-budget, --max-shard-size). Binary for a bare letter and
// the *iB units, decimal for KB/MB/GB/TB, case-insensitive; the inputs both old parsers took still parse alike.
#include "core/byte_size.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

using dlx::parse_byte_size;

namespace {

std::string error_of(const std::string& text) {
  try {
    parse_byte_size(text, "budget");
  } catch (const dlx::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ByteSize, Units) {
  EXPECT_EQ(parse_byte_size("1000", "x"), 1000);
  EXPECT_EQ(parse_byte_size("7B", "x"), 7);
  EXPECT_EQ(parse_byte_size("1K", "x"), 1024);
  EXPECT_EQ(parse_byte_size("1k", "x"), 1024);
  EXPECT_EQ(parse_byte_size("2KiB", "x"), 2048);
  EXPECT_EQ(parse_byte_size("2KB", "x"), 2000);
  EXPECT_EQ(parse_byte_size("512M", "x"), 512LL << 20);
  EXPECT_EQ(parse_byte_size("512MiB", "x"), 512LL << 20);
  EXPECT_EQ(parse_byte_size("500MB", "x"), 500'000'000);
  EXPECT_EQ(parse_byte_size("500mb", "x"), 500'000'000);
  EXPECT_EQ(parse_byte_size("8G", "x"), 8LL << 30);
  EXPECT_EQ(parse_byte_size("4GiB", "x"), 4LL << 30);
  EXPECT_EQ(parse_byte_size("5GB", "x"), 5'000'000'000);
  EXPECT_EQ(parse_byte_size("2T", "x"), 2LL << 40);
  EXPECT_EQ(parse_byte_size("2TB", "x"), 2'000'000'000'000);
}

TEST(ByteSize, FractionsAndExponents) {
  EXPECT_EQ(parse_byte_size("1.5G", "x"), 3LL << 29);
  EXPECT_EQ(parse_byte_size("0.5KB", "x"), 500);
  EXPECT_EQ(parse_byte_size("1e9", "x"), 1'000'000'000);
  EXPECT_EQ(parse_byte_size("1.7", "x"), 1);  // rounded down
}

TEST(ByteSize, ErrorsNameWhatAndText) {
  for (const char* bad : {"", "G", "abc", "-5", "0", "0.5", "5X", "5 GB", "5GBs", "inf", "nan", "1e30"}) {
    const std::string e = error_of(bad);
    EXPECT_NE(e.find("budget: '" + std::string(bad) + "'"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_NE(error_of("5X").find("unknown unit"), std::string::npos);
  EXPECT_NE(error_of("0").find("at least one byte"), std::string::npos);
}
