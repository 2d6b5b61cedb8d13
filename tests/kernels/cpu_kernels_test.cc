// Each CPU kernel against a plain double-precision reference on fresh random inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"
#include "test_util.h"

namespace dlx {

namespace {

Tensor ref_matmul(const Tensor& x, const Tensor& w, const Tensor* bias) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  Tensor y = Tensor::zeros(DType::F32, {M, N});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? load_as_f32(bias->data(), bias->dtype(), size_t(n)) : 0.0;
      for (int64_t k = 0; k < K; ++k)
        s += double(x.data<float>()[m * K + k]) * load_as_f32(w.data(), w.dtype(), size_t(n * K + k));
      y.data<float>()[m * N + n] = float(s);
    }
  return y;
}

}  // namespace

TEST(CpuMatmul, ThreadedWithBias) {
  std::mt19937_64 rng(std::random_device{}());
  Tensor x = test::random_tensor(DType::F32, {6, 130}, rng);
  Tensor w = test::random_tensor(DType::BF16, {203, 130}, rng, 0.1f);
  Tensor b = test::random_tensor(DType::BF16, {203}, rng);
  Tensor y = Tensor::zeros(DType::F32, {6, 203});
  cpu_matmul(x, w, &b, y);
  EXPECT_LT(test::rel_error(y, ref_matmul(x, w, &b)), 1e-5);
}

// cpu_matmul through both paths (kernels/cpu/matmul.h), one and two threads, against a double-precision reference.
// M crosses the AVX2 engine's tiles (4, 2 and 1 rows of x) and its 32-row chunks of x; N = 103 is no multiple of
// its 6-row weight blocks nor of its 96-row chunks; K = 531 is two 256-column slices and 19 more (a tail past the
// last multiple of 8), K = 77 one short slice, K = 5 only a tail. y starts as NaN, so an output left unwritten
// fails.
TEST(CpuMatmul, BothPathsMatchReference) {
  std::mt19937_64 rng(std::random_device{}());
  const int saved = num_threads();
  const std::vector<int64_t> ms = {1, 2, 3, 4, 5, 7, 8, 13, 16, 17, 31, 33, 40, 100, 257, 300};
  struct Shape { int64_t n, k; };
  int case_no = 0;
  for (const Shape s : {Shape{103, 531}, Shape{50, 77}, Shape{9, 5}})
    for (const DType t : {DType::BF16, DType::F16, DType::F32})
      for (const int64_t M : ms) {
        const bool with_bias = ++case_no % 2 == 0;
        Tensor x = test::random_tensor(DType::F32, {M, s.k}, rng);
        Tensor w = test::random_tensor(t, {s.n, s.k}, rng, 0.1f);
        Tensor b = test::random_tensor(t, {s.n}, rng);
        Tensor ref = ref_matmul(x, w, with_bias ? &b : nullptr);
        std::vector<MatmulPath> paths = {MatmulPath::Portable};
        if (cpu_has_avx2()) paths.push_back(MatmulPath::Avx2);
        for (const MatmulPath path : paths)
          for (const int threads : {1, 2}) {
            set_num_threads(threads);
            Tensor y = Tensor::zeros(DType::F32, {M, s.n});
            std::fill(y.data<float>(), y.data<float>() + y.numel(), NAN);
            cpu_matmul(x, w, with_bias ? &b : nullptr, y, path);
            EXPECT_LT(test::rel_error(y, ref), 1e-5)
                << "M " << M << " N " << s.n << " K " << s.k << " " << dtype_name(t) << " path " << int(path)
                << " threads " << threads << (with_bias ? " bias" : "");
          }
      }
  set_num_threads(saved);
}

// A row of y does not depend on the other rows of x (matmul.h): each row alone, and runs of a few rows, give the
// bits of the whole product, on each path.
TEST(CpuMatmul, RowsDoNotDependOnTheOtherRows) {
  std::mt19937_64 rng(std::random_device{}());
  const int64_t M = 41, N = 29, K = 531;
  Tensor x = test::random_tensor(DType::F32, {M, K}, rng);
  Tensor w = test::random_tensor(DType::BF16, {N, K}, rng, 0.1f);
  std::vector<MatmulPath> paths = {MatmulPath::Portable};
  if (cpu_has_avx2()) paths.push_back(MatmulPath::Avx2);
  for (const MatmulPath path : paths) {
    Tensor all = Tensor::zeros(DType::F32, {M, N});
    cpu_matmul(x, w, nullptr, all, path);
    for (const int64_t rows : {int64_t(1), int64_t(3), int64_t(5), int64_t(33)})
      for (int64_t m0 = 0; m0 + rows <= M; m0 += 7) {
        Tensor xs = Tensor::from_data(DType::F32, {rows, K}, x.data<float>() + m0 * K);
        Tensor ys = Tensor::zeros(DType::F32, {rows, N});
        cpu_matmul(xs, w, nullptr, ys, path);
        EXPECT_EQ(std::memcmp(ys.data(), all.data<float>() + m0 * N, ys.nbytes()), 0)
            << "rows [" << m0 << ", " << m0 + rows << ") path " << int(path);
      }
  }
}

TEST(CpuOps, RmsNorm) {
  std::mt19937_64 rng(std::random_device{}());
  Tensor x = test::random_tensor(DType::F32, {5, 48}, rng, 3.0f);
  Tensor w = test::random_tensor(DType::BF16, {48}, rng);
  Tensor out = Tensor::zeros(DType::F32, {5, 48}), ref = Tensor::zeros(DType::F32, {5, 48});
  cpu::rmsnorm(x, w, 1e-6f, out);
  for (int t = 0; t < 5; ++t) {
    double ss = 0;
    for (int h = 0; h < 48; ++h) ss += double(x.data<float>()[t * 48 + h]) * x.data<float>()[t * 48 + h];
    double inv = 1.0 / std::sqrt(ss / 48 + 1e-6);
    for (int h = 0; h < 48; ++h)
      ref.data<float>()[t * 48 + h] = float(bf16_to_f32(w.data<uint16_t>()[h]) * x.data<float>()[t * 48 + h] * inv);
  }
  EXPECT_LT(test::rel_error(out, ref), 1e-6);
}

TEST(CpuOps, RopeRotateHalf) {
  std::mt19937_64 rng(std::random_device{}());
  const int64_t T = 6, heads = 3, D = 8;
  Tensor x = test::random_tensor(DType::F32, {T, heads, D}, rng);
  Tensor ref = Tensor::from_data(DType::F32, x.shape(), x.data());
  Tensor pos = Tensor::zeros(DType::I64, {T});
  for (int t = 0; t < T; ++t) pos.data<int64_t>()[t] = 5 * t + 1;
  const double theta = 10000.0;
  cpu::rope(x, pos, theta);
  float* r = ref.data<float>();
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < D / 2; ++i) {
        double ang = double(pos.data<int64_t>()[t]) / std::pow(theta, 2.0 * i / D);
        float* v = r + (t * heads + h) * D;
        double a = v[i], b = v[i + D / 2];
        v[i] = float(a * std::cos(ang) - b * std::sin(ang));
        v[i + D / 2] = float(b * std::cos(ang) + a * std::sin(ang));
      }
  EXPECT_LT(test::rel_error(x, ref), 1e-5);
}

TEST(CpuOps, AttentionBidirectionalGqaWithKeyMask) {
  std::mt19937_64 rng(std::random_device{}());
  const int64_t B = 2, L = 5, Hq = 4, Hkv = 2, D = 8;
  Tensor q = test::random_tensor(DType::F32, {B, L, Hq, D}, rng);
  Tensor k = test::random_tensor(DType::F32, {B, L, Hkv, D}, rng);
  Tensor v = test::random_tensor(DType::F32, {B, L, Hkv, D}, rng);
  Tensor mask = Tensor::zeros(DType::U8, {B, L});
  for (int j = 0; j < L; ++j) mask.data<uint8_t>()[j] = 1, mask.data<uint8_t>()[L + j] = j < 3;
  Tensor out = Tensor::zeros(DType::F32, {B, L, Hq, D}), ref = Tensor::zeros(DType::F32, {B, L, Hq, D});
  cpu::attention(q, k, v, &mask, out);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hq; ++h)
      for (int i = 0; i < L; ++i) {
        int kh = h / (Hq / Hkv);
        std::vector<double> p(L, 0.0);
        double mx = -1e300, den = 0;
        for (int j = 0; j < L; ++j) {
          if (!mask.data<uint8_t>()[b * L + j]) continue;
          double s = 0;
          for (int d = 0; d < D; ++d) s += double(q.data<float>()[((b * L + i) * Hq + h) * D + d]) * k.data<float>()[((b * L + j) * Hkv + kh) * D + d];
          p[j] = s / std::sqrt(double(D));
          mx = std::max(mx, p[j]);
        }
        for (int j = 0; j < L; ++j) p[j] = mask.data<uint8_t>()[b * L + j] ? std::exp(p[j] - mx) : 0.0, den += p[j];
        for (int d = 0; d < D; ++d) {
          double s = 0;
          for (int j = 0; j < L; ++j) s += p[j] * v.data<float>()[((b * L + j) * Hkv + kh) * D + d];
          ref.data<float>()[((b * L + i) * Hq + h) * D + d] = float(s / den);
        }
      }
  EXPECT_LT(test::rel_error(out, ref), 1e-5);
}

TEST(CpuOps, SiluMulAndAdd) {
  std::mt19937_64 rng(std::random_device{}());
  Tensor g = test::random_tensor(DType::F32, {3, 11}, rng), u = test::random_tensor(DType::F32, {3, 11}, rng);
  Tensor out = Tensor::zeros(DType::F32, {3, 11});
  cpu::silu_mul(g, u, out);
  for (int i = 0; i < 33; ++i) {
    double a = g.data<float>()[i];
    EXPECT_NEAR(out.data<float>()[i], a / (1 + std::exp(-a)) * u.data<float>()[i], 1e-5);
  }
  Tensor acc = Tensor::from_data(DType::F32, {3, 11}, g.data());
  cpu::add(acc, u);
  for (int i = 0; i < 33; ++i) EXPECT_FLOAT_EQ(acc.data<float>()[i], g.data<float>()[i] + u.data<float>()[i]);
}

TEST(ThreadPool, CoversRangeOnceAndPropagatesErrors) {
  std::vector<int> hits(1000, 0);
  parallel_for(1000, 7, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) hits[size_t(i)]++;
  });
  for (int h : hits) EXPECT_EQ(h, 1);
  EXPECT_THROW(parallel_for(100, 1, [](int64_t a, int64_t) {
                 if (a > 50) throw std::runtime_error("boom");
               }),
               std::runtime_error);
}

}  // namespace dlx
