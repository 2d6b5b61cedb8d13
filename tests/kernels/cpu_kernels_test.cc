// Each CPU kernel against a plain double-precision reference on fresh random inputs.
#include <gtest/gtest.h>

#include <cmath>
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

// Runs one matmul implementation step by step (widen + panel) over the whole weight.
Tensor run_impl(bool avx2, const Tensor& x, const Tensor& w) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  Tensor y = Tensor::zeros(DType::F32, {M, N});
  std::vector<float> panel(size_t(kPanelRows * K));
  for (int64_t n0 = 0; n0 < N; n0 += kPanelRows) {
    int rows = int(std::min<int64_t>(kPanelRows, N - n0));
    if (avx2) {
      matmul_impl::widen_avx2(w.data(), w.dtype(), n0, rows, K, panel.data());
      matmul_impl::panel_avx2(x.data<float>(), M, K, panel.data(), rows, y.data<float>(), N, n0);
    } else {
      matmul_impl::widen_ref(w.data(), w.dtype(), n0, rows, K, panel.data());
      matmul_impl::panel_ref(x.data<float>(), M, K, panel.data(), rows, y.data<float>(), N, n0);
    }
  }
  return y;
}

}  // namespace

TEST(CpuMatmul, BothPathsMatchReference) {
  std::mt19937_64 rng(std::random_device{}());
  struct Case { int64_t M, N, K; DType wt; };
  const Case cases[] = {{1, 7, 5, DType::BF16}, {3, 9, 33, DType::F16}, {2, 4, 64, DType::F32},
                        {5, 13, 100, DType::BF16}, {17, 31, 257, DType::BF16}, {64, 12, 96, DType::F16}};
  for (const Case& c : cases) {
    Tensor x = test::random_tensor(DType::F32, {c.M, c.K}, rng);
    Tensor w = test::random_tensor(c.wt, {c.N, c.K}, rng, 0.1f);
    Tensor ref = ref_matmul(x, w, nullptr);
    EXPECT_LT(test::rel_error(run_impl(false, x, w), ref), 1e-5) << c.M << "x" << c.N << "x" << c.K;
    if (cpu_has_avx2()) {
      EXPECT_LT(test::rel_error(run_impl(true, x, w), ref), 1e-5) << c.M << "x" << c.N << "x" << c.K;
    }
  }
}

TEST(CpuMatmul, ThreadedWithBias) {
  std::mt19937_64 rng(std::random_device{}());
  Tensor x = test::random_tensor(DType::F32, {6, 130}, rng);
  Tensor w = test::random_tensor(DType::BF16, {203, 130}, rng, 0.1f);
  Tensor b = test::random_tensor(DType::BF16, {203}, rng);
  Tensor y = Tensor::zeros(DType::F32, {6, 203});
  cpu_matmul(x, w, &b, y);
  EXPECT_LT(test::rel_error(y, ref_matmul(x, w, &b)), 1e-5);
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
