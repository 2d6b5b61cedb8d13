// The checkpoint layouts (src/formats/<format>.h): known answers from docs/QUANTIZED_CHECKPOINTS.md written out by hand, and
// round trips codes -> pack -> unpack for every variant, plus the conversion into the canonical PackedWeight.
#include <gtest/gtest.h>

#include "core/error.h"
#include "formats/awq.h"
#include "formats/diffulex_int8.h"
#include "formats/gptq.h"
#include "formats/packed_convert.h"
#include "quant_test_util.h"

namespace dlx {

namespace {

void expect_same_codes(const QuantCodes& a, const QuantCodes& b) {
  EXPECT_EQ(a.bits, b.bits);
  EXPECT_EQ(a.n, b.n);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.group_size, b.group_size);
  EXPECT_EQ(a.q, b.q);
  EXPECT_EQ(a.zero, b.zero);
  EXPECT_EQ(a.scale, b.scale);
  // g_idx may be dropped when it is the sequential k / group_size (e.g. one group): compare the groups.
  for (int64_t k = 0; k < a.k && k < b.k; ++k) EXPECT_EQ(a.group_of(k), b.group_of(k)) << "k " << k;
}

}  // namespace

TEST(QuantLayout, GptqKnownWords) {
  // One output column, K = 8, codes 0..7: word = sum q_k << 4k. Symmetric v1 zeros store 7.
  QuantCodes c;
  c.bits = 4;
  c.n = 8;
  c.k = 8;
  c.group_size = 8;
  c.q.assign(64, 0);
  for (int k = 0; k < 8; ++k) c.q[size_t(0 * 8 + k)] = uint8_t(k);  // column n = 0
  for (int k = 0; k < 8; ++k) c.q[size_t(3 * 8 + k)] = uint8_t(15 - k);
  c.zero.assign(8, 8);
  c.scale.assign(8, 0.5f);
  GptqTensors t = pack_gptq(c, /*v1=*/true);
  ASSERT_EQ(t.qweight.shape(), (Shape{1, 8}));
  EXPECT_EQ(t.qweight.data<uint32_t>()[0], 0x76543210u);
  EXPECT_EQ(t.qweight.data<uint32_t>()[3], 0x89ABCDEFu);
  ASSERT_EQ(t.qzeros.shape(), (Shape{1, 1}));
  EXPECT_EQ(t.qzeros.data<uint32_t>()[0], 0x77777777u);
  EXPECT_EQ(gptq::code(t.qweight.data(), 8, 4, 5, 0), 5u);
  EXPECT_EQ(gptq::zero(t.qzeros.data(), 8, 4, 0, 6, true), 8u);
  EXPECT_EQ(gptq::zero(t.qzeros.data(), 8, 4, 0, 6, false), 7u);
  EXPECT_EQ(t.scales.dtype(), DType::F16);
  // 8-bit: 4 values per word; v2 keeps the zero as is.
  c.bits = 8;
  c.n = 4;
  c.k = 4;
  c.group_size = 4;
  c.q = {1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255};
  c.zero = {128, 128, 128, 7};
  c.scale.assign(4, 1.0f);
  t = pack_gptq(c, /*v1=*/false);
  EXPECT_EQ(t.qweight.data<uint32_t>()[0], 0x04030201u);
  EXPECT_EQ(t.qweight.data<uint32_t>()[3], 0xFF000000u);
  EXPECT_EQ(t.qzeros.data<uint32_t>()[0], 0x07808080u);
}

TEST(QuantLayout, GptqRoundTrips) {
  std::mt19937_64 rng(11);
  for (int bits : {4, 8})
    for (bool v1 : {true, false})
      for (bool act : {false, true})
        for (int64_t gs : {32, 64, 128}) {
          QuantCodes c = test::random_codes(bits, 24, 128, gs, false, act, rng);
          GptqTensors t = pack_gptq(c, v1);
          EXPECT_EQ(t.qweight.shape(), (Shape{128 * bits / 32, 24}));
          EXPECT_EQ(t.qzeros.shape(), (Shape{128 / gs, 24 * bits / 32}));
          expect_same_codes(unpack_gptq(t, bits, gs, v1), c);
        }
}

TEST(QuantLayout, GptqV1RejectsZeroZero) {
  std::mt19937_64 rng(1);
  QuantCodes c = test::random_codes(4, 8, 32, 32, false, false, rng);
  c.zero[3] = 0;
  EXPECT_THROW(pack_gptq(c, true), Error);
  EXPECT_NO_THROW(pack_gptq(c, false));
}

TEST(QuantLayout, AwqKnownWords) {
  // Columns 0..7 of input row 0 hold codes 0..7: nibble j holds column [0,2,4,6,1,3,5,7][j].
  QuantCodes c;
  c.bits = 4;
  c.n = 8;
  c.k = 1;
  c.group_size = 1;
  for (int n = 0; n < 8; ++n) c.q.push_back(uint8_t(n));
  c.zero = {0, 1, 2, 3, 4, 5, 6, 7};
  c.scale.assign(8, 1.0f);
  AwqTensors t = pack_awq(c);
  ASSERT_EQ(t.qweight.shape(), (Shape{1, 1}));
  EXPECT_EQ(t.qweight.data<uint32_t>()[0], 0x75316420u);
  EXPECT_EQ(t.qzeros.data<uint32_t>()[0], 0x75316420u);
  for (int n = 0; n < 8; ++n) EXPECT_EQ(awq::code(t.qweight.data(), 8, 0, n), uint32_t(n));
}

TEST(QuantLayout, AwqRoundTripsAndRejects) {
  std::mt19937_64 rng(12);
  for (int64_t gs : {32, 64, 128}) {
    QuantCodes c = test::random_codes(4, 40, 128, gs, false, false, rng);
    AwqTensors t = pack_awq(c);
    EXPECT_EQ(t.qweight.shape(), (Shape{128, 5}));
    expect_same_codes(unpack_awq(t, gs), c);
  }
  QuantCodes odd = test::random_codes(4, 12, 64, 32, false, false, rng);
  EXPECT_THROW(pack_awq(odd), Error);  // N % 8
  QuantCodes act = test::random_codes(4, 16, 64, 32, false, true, rng);
  EXPECT_THROW(pack_awq(act), Error);  // AWQ has no g_idx
}

TEST(QuantLayout, DiffulexInt8Nibbles) {
  DiffulexInt8Codes c;
  c.n = 2;
  c.k = 3;  // odd: the last byte's high nibble is padding
  c.group_size = 2;
  c.q = {-8, 7, 0, 1, -1, 3};
  c.zero = {2, -3, 4};
  c.scale = {0.5f};
  DiffulexInt8Tensors t = pack_diffulex_int8(c);
  ASSERT_EQ(t.qweight.shape(), (Shape{2, 2}));
  EXPECT_EQ(t.qweight.dtype(), DType::I8);
  // Row 0: k0 = -8 -> 0, k1 = 7 -> 15, k2 = 0 -> 8, padding 0 -> 8.
  EXPECT_EQ(t.qweight.data<uint8_t>()[0], 0xF0);
  EXPECT_EQ(t.qweight.data<uint8_t>()[1], 0x88);
  EXPECT_EQ(dlx_int8::value(t.qweight.data(), 3, 1, 1), -1);
  EXPECT_EQ(dlx_int8::value(t.qweight.data(), 3, 1, 2), 3);
  EXPECT_EQ(dlx_int8::value(t.qzeros.data(), 3, 0, 1), -3);
  EXPECT_EQ(t.scales.shape(), (Shape{1}));
}

// The converter into the canonical layout, from GPTQ tensors through the format's own accessors: the packed
// weight's dequantization equals the codes' weight, for plain and act-order g_idx.
TEST(QuantLayout, PackedWeightFromGptqMatchesCodes) {
  std::mt19937_64 rng(13);
  for (int bits : {4, 8})
    for (bool act : {false, true}) {
      QuantCodes c = test::random_codes(bits, 19, 256, 64, false, act, rng);
      GptqTensors t = pack_gptq(c, true);
      std::vector<int32_t> perm;
      if (act) {
        perm.resize(256);
        std::iota(perm.begin(), perm.end(), 0);
        std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return c.g_idx[a] < c.g_idx[b]; });
      }
      PackedWeight w = build_packed_weight(
          bits, 19, 256, 64, perm, [&](int64_t k, int64_t n) { return gptq::code(t.qweight.data(), 19, bits, k, n); },
          [&](int64_t g, int64_t n) { return load_as_f32(t.scales.data(), DType::F16, size_t(g * 19 + n)); },
          [&](int64_t g, int64_t n) { return gptq::zero(t.qzeros.data(), 19, bits, g, n, true); });
      EXPECT_EQ(w.qweight.shape(), (Shape{19, 256 * bits / 32}));
      EXPECT_EQ(w.perm.defined(), act);
      EXPECT_LE(test::rel_error(dequantize_packed(w), test::codes_weight(c)), 1e-6);
    }
}

}  // namespace dlx
