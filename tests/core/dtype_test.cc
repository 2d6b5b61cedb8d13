#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"

namespace dlx {

TEST(DType, Bf16RoundTripAndRounding) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(-2.5f)), -2.5f);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even -> 1.0.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16MatchesExactValuesAndRounding) {
  std::mt19937 rng(1);
  // Every finite f16 bit pattern converts to f32 and back unchanged.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if (((h >> 10) & 0x1f) == 0x1f) continue;
    EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);                     // overflow -> inf
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // halfway -> even
}

TEST(DType, Fp8E4m3) {
  EXPECT_EQ(fp8e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(fp8e4m3_to_f32(0x7e), 448.0f);
  EXPECT_TRUE(std::isnan(fp8e4m3_to_f32(0x7f)));
  EXPECT_EQ(fp8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  for (int c = 0; c < 0x7f; ++c) EXPECT_EQ(f32_to_fp8e4m3(fp8e4m3_to_f32(uint8_t(c))), c);
  EXPECT_EQ(f32_to_fp8e4m3(1000.0f), 0x7e);
}

TEST(DType, Names) {
  DType t;
  EXPECT_TRUE(dtype_from_name("BF16", &t));
  EXPECT_EQ(t, DType::BF16);
  EXPECT_FALSE(dtype_from_name("F64", &t));
  EXPECT_EQ(dtype_size(DType::I64), 8u);
}

}  // namespace dlx

namespace dlx {

// Tensor::stack_rows: the parts' rows in order; parts of another dtype or row shape are refused by name.
TEST(Tensor, StackRows) {
  const float a[] = {1, 2, 3, 4}, b[] = {5, 6};
  Tensor t = Tensor::stack_rows({Tensor::from_data(DType::F32, {2, 2}, a), Tensor::from_data(DType::F32, {1, 2}, b)});
  ASSERT_EQ(t.shape(), (Shape{3, 2}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data<float>()[i], float(i + 1));
  EXPECT_THROW(Tensor::stack_rows({Tensor::zeros(DType::F32, {1, 2}), Tensor::zeros(DType::F32, {1, 3})}), Error);
  EXPECT_THROW(Tensor::stack_rows({Tensor::zeros(DType::F32, {1, 2}), Tensor::zeros(DType::BF16, {1, 2})}), Error);
  EXPECT_THROW(Tensor::stack_rows({}), Error);
}

}  // namespace dlx
