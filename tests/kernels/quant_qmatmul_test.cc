// The CPU low-bit matmul (kernels/cpu/qmatmul.h), portable and AVX2 paths, against a plain
// dequantize-then-matmul reference in double precision, over many shapes, bit widths, group sizes and
// act-order permutations, with fresh random inputs for each case.
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/packed_convert.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/qmatmul.h"
#include "quant_test_util.h"

namespace dlx {

namespace {

struct Case {
  int bits;
  int64_t n, k, group_size;  // group_size == k: one group
  bool perm, bias;
};

// A random PackedWeight built through the same converter the loaders use.
PackedWeight random_packed(const Case& c, std::mt19937_64& rng) {
  std::vector<int32_t> perm;
  if (c.perm) {
    perm.resize(size_t(c.k));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
  }
  QuantCodes q = test::random_codes(c.bits, c.n, c.k, c.group_size, false, false, rng);
  return build_packed_weight(
      c.bits, c.n, c.k, c.group_size, perm, [&](int64_t k, int64_t n) { return q.q[size_t(n * c.k + k)]; },
      [&](int64_t g, int64_t n) { return q.scale[size_t(g * c.n + n)]; },
      [&](int64_t g, int64_t n) { return q.zero[size_t(g * c.n + n)]; });
}

double run_case(const Case& c, int64_t M, QMatmulPath path, std::mt19937_64& rng) {
  PackedWeight w = random_packed(c, rng);
  Tensor x = test::random_tensor(DType::F32, {M, c.k}, rng);
  Tensor bias = c.bias ? test::random_tensor(DType::F16, {c.n}, rng) : Tensor();
  Tensor y = Tensor::zeros(DType::F32, {M, c.n});
  cpu_qmatmul(x, w, c.bias ? &bias : nullptr, y, path);
  Tensor ref = test::reference_matmul(x, dequantize_packed(w), c.bias ? &bias : nullptr);
  return test::rel_error(y, ref);
}

void sweep(QMatmulPath path) {
  std::mt19937_64 rng(17);
  const std::vector<Case> cases = {
      {4, 37, 256, 32, false, false},  {4, 64, 256, 64, true, true},    {4, 13, 384, 128, false, true},
      {4, 9, 384, 384, true, false},   {4, 1, 128, 128, false, false},  {4, 71, 512, 128, true, true},
      {8, 33, 256, 64, false, true},   {8, 5, 192, 32, true, false},    {8, 17, 256, 256, false, false},
      {8, 64, 384, 128, true, true},   {4, 3, 64, 32, false, false},    {4, 130, 256, 64, false, true},
  };
  // Both sides of each strategy boundary (qmatmul.cc): fused up to 12 rows, then panel tiles of 16 / 8 rows with
  // a fused remainder of 1 to 4 rows past 16 (17, 20, 26, 36), a second 256-row chunk of x (270).
  const std::vector<int64_t> ms = {1, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 16, 17, 20, 26, 33, 36, 70, 270};
  double worst = 0;
  for (const Case& c : cases)
    for (int64_t M : ms) {
      double err = run_case(c, M, path, rng);
      worst = std::max(worst, err);
      EXPECT_LE(err, 1e-5) << "bits " << c.bits << " N " << c.n << " K " << c.k << " group " << c.group_size
                           << " perm " << c.perm << " M " << M;
    }
  ::testing::Test::RecordProperty("worst_rel_error", std::to_string(worst));
}

}  // namespace

TEST(QuantQmatmul, PortableMatchesReference) { sweep(QMatmulPath::Portable); }

TEST(QuantQmatmul, Avx2MatchesReference) {
  if (!cpu_has_avx2()) GTEST_SKIP() << "no AVX2/FMA on this CPU";
  sweep(QMatmulPath::Avx2);
}

TEST(QuantQmatmul, SingleThreadMatchesReference) {
  const int saved = num_threads();
  set_num_threads(1);
  std::mt19937_64 rng(5);
  for (QMatmulPath p : {QMatmulPath::Portable, QMatmulPath::Auto})
    for (int64_t M : {1, 6}) EXPECT_LE(run_case({4, 45, 256, 64, true, true}, M, p, rng), 1e-5);
  set_num_threads(saved);
}

// Group sizes the AVX2 path does not take (the Diffulex int8 layout can need group size 1 or 4) run portably.
TEST(QuantQmatmul, SmallGroupsRunPortably) {
  std::mt19937_64 rng(9);
  for (int64_t gs : {1, 4, 12})
    for (int64_t M : {1, 3, 9}) {
      Case c{8, 11, 48, gs, false, true};
      EXPECT_LE(run_case(c, M, QMatmulPath::Auto, rng), 1e-5) << "group " << gs << " M " << M;
    }
  PackedWeight w = random_packed({8, 4, 48, 4, false, false}, rng);
  Tensor x = Tensor::zeros(DType::F32, {1, 48}), y = Tensor::zeros(DType::F32, {1, 4});
  EXPECT_THROW(cpu_qmatmul(x, w, nullptr, y, QMatmulPath::Avx2), Error);
}

TEST(QuantQmatmul, RejectsMismatchedShapes) {
  std::mt19937_64 rng(3);
  PackedWeight w = random_packed({4, 8, 64, 32, false, false}, rng);
  Tensor x = Tensor::zeros(DType::F32, {2, 32}), y = Tensor::zeros(DType::F32, {2, 8});
  EXPECT_THROW(cpu_qmatmul(x, w, nullptr, y), Error);
  Tensor x2 = Tensor::zeros(DType::F32, {2, 64}), y2 = Tensor::zeros(DType::F32, {3, 8});
  EXPECT_THROW(cpu_qmatmul(x2, w, nullptr, y2), Error);
}

}  // namespace dlx
