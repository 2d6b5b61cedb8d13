// The CUDA backend's quantizer linear algebra (gram_accumulate, gemm_f32, cholesky_inverse_upper) and GPTQ on it
// against the CPU backend, on fresh random inputs. The GEMMs are fp32 on both sides (no TF32), so results agree to
// fp32 rounding; the fp64 factorization agrees to ~1e-9. Skipped without a usable GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/backend.h"
#include "quant/methods/gptq.h"
#include "quant/methods/hessian.h"
#include "quant/methods/rtn.h"
#include "test_util.h"
#include "cuda_test_util.h"

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA

namespace {

using CudaQuantLinalg = test::CudaTest;

double max_abs_diff(const float* a, const float* b, int64_t n, double* scale) {
  double d = 0, s = 0;
  for (int64_t i = 0; i < n; ++i) d = std::max(d, double(std::fabs(a[i] - b[i]))), s = std::max(s, double(std::fabs(b[i])));
  *scale = s;
  return d;
}

TEST_F(CudaQuantLinalg, GramAndGemmMatchTheCpu) {
  SCOPED_TRACE(trace());
  const int64_t t = 300, k = 96;
  Tensor x = rand_bf16_f32({t, k});
  HessianAccumulator hc(cpu_, k), hg(*gpu_, k);
  hc.add(x);
  hg.add(gpu_->from_host_f32(x));  // a bf16 activation on the GPU
  const std::vector<double> a = hc.finish(), b = hg.finish();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-5 * (1.0 + std::fabs(a[i])));

  const int64_t m = 70, n = 50, kk = 40, ld = 80;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor A = test::random_tensor(DType::F32, {ld, ld}, rng_), B = test::random_tensor(DType::F32, {ld, ld}, rng_);
      Tensor C = test::random_tensor(DType::F32, {ld, ld}, rng_);
      Tensor Cc = Tensor::from_data(DType::F32, {ld, ld}, C.data());
      Tensor dA = gpu_->upload(A), dB = gpu_->upload(B), dC = gpu_->upload(C);
      cpu_.gemm_f32(ta, tb, m, n, kk, -0.5f, A.data<float>(), ld, B.data<float>(), ld, 2.0f, Cc.data<float>(), ld);
      gpu_->gemm_f32(ta, tb, m, n, kk, -0.5f, dA.data<float>(), ld, dB.data<float>(), ld, 2.0f, dC.data<float>(), ld);
      Tensor g = gpu_->to_host_f32(dC);
      double scale = 0;  // set by max_abs_diff, so that call comes first (argument order is unspecified)
      const double diff = max_abs_diff(g.data<float>(), Cc.data<float>(), ld * ld, &scale);
      EXPECT_LT(diff, 1e-5 * scale) << ta << tb;
    }
}

TEST_F(CudaQuantLinalg, CholeskyInverseAndGptqMatchTheCpu) {
  SCOPED_TRACE(trace());
  const int64_t n = 40, k = 256, t = 600, gs = 64;
  Tensor x = rand_bf16_f32({t, k});
  HessianAccumulator acc(cpu_, k);
  acc.add(x);
  std::vector<double> h = acc.finish();
  for (int64_t i = 0; i < k; ++i) h[size_t(i * k + i)] += 0.01;
  std::vector<double> uc = h, ug = h;
  ASSERT_TRUE(cpu_.cholesky_inverse_upper(uc.data(), k));
  ASSERT_TRUE(gpu_->cholesky_inverse_upper(ug.data(), k));
  double d = 0, s = 0;
  for (size_t i = 0; i < uc.size(); ++i) d = std::max(d, std::fabs(uc[i] - ug[i])), s = std::max(s, std::fabs(uc[i]));
  EXPECT_LT(d, 1e-9 * s);
  std::vector<double> bad = {1, 2, 2, 1};
  EXPECT_FALSE(gpu_->cholesky_inverse_upper(bad.data(), 2));

  Tensor w = test::random_tensor(DType::F32, {n, k}, rng_, 0.05f);
  for (bool act : {false, true}) {
    GptqOptions o;
    o.scheme.group_size = gs;
    o.act_order = act;
    GptqResult c = gptq_quantize(cpu_, w.data<float>(), n, k, h, o), g = gptq_quantize(*gpu_, w.data<float>(), n, k, h, o);
    int64_t same = 0;
    for (size_t i = 0; i < c.codes.q.size(); ++i) same += c.codes.q[i] == g.codes.q[i];
    EXPECT_GE(double(same), 0.99 * double(c.codes.q.size()));
    Tensor dc = codes_to_dense(c.codes), dg = codes_to_dense(g.codes);
    const double ec = rel_output_error(cpu_, h, dc.data<float>(), w.data<float>(), n, k);
    const double eg = rel_output_error(*gpu_, h, dg.data<float>(), w.data<float>(), n, k);
    EXPECT_NEAR(eg, ec, 1e-3 * ec) << "act_order=" << act;
  }
}

// gram_accumulate over several row panels (DenseLinalg::kGramPanel = 2048 rows each; 2600 = one whole panel and a
// partial one), twice into the same sums, against the CPU's syrk.
TEST_F(CudaQuantLinalg, GramOverSeveralPanelsMatchesTheCpu) {
  SCOPED_TRACE(trace());
  const int64_t t = 48, k = 2600;
  Tensor x1 = rand_bf16_f32({t, k}), x2 = rand_bf16_f32({t / 2, k});
  HessianAccumulator hc(cpu_, k), hg(*gpu_, k);
  hc.add(x1), hc.add(x2);
  hg.add(gpu_->from_host_f32(x1)), hg.add(gpu_->from_host_f32(x2));
  const std::vector<double> a = hc.finish(), b = hg.finish();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / (1.0 + std::fabs(a[i])));
  EXPECT_LT(worst, 1e-5);
}

// The error report's and AWQ's device ops against the CPU backend (which tests/quant/quant_linalg_test.cc checks
// against plain loops): zero, symmetric_scaled, dot_f64, column_abs_sum on bf16 and F32 activations, and the
// report itself (OutputError from the sums) on both.
TEST_F(CudaQuantLinalg, ReportOpsMatchTheCpu) {
  SCOPED_TRACE(trace());
  for (int64_t k : {1, 31, 33, 200}) {
    Tensor up = test::random_tensor(DType::F32, {k, k}, rng_);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < i; ++j) up.data<float>()[i * k + j] = std::nanf("");  // never read
    Tensor oc = cpu_.empty(DType::F32, {k, k}), og = gpu_->empty(DType::F32, {k, k});
    cpu_.symmetric_scaled(up, 0.125 / 3.0, oc);
    gpu_->symmetric_scaled(gpu_->upload(up), 0.125 / 3.0, og);
    const Tensor g = gpu_->to_host_f32(og);
    ASSERT_EQ(std::memcmp(g.data(), oc.data(), size_t(k * k) * 4), 0) << "k = " << k;
    gpu_->zero(og);
    const Tensor z = gpu_->to_host_f32(og);
    for (int64_t i = 0; i < k * k; ++i) ASSERT_EQ(z.data<float>()[i], 0.0f) << "k = " << k;
  }
  for (int64_t n : {1, 255, 257, 1000003}) {
    Tensor a = test::random_tensor(DType::F32, {n}, rng_), b = test::random_tensor(DType::F32, {n}, rng_);
    const double c = cpu_.dot_f64(a, b), g = gpu_->dot_f64(gpu_->upload(a), gpu_->upload(b));
    double mag = 0;
    for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(a.data<float>()[i]) * double(b.data<float>()[i]));
    EXPECT_NEAR(g, c, 1e-13 * mag) << "n = " << n;
  }
  {
    // Running fp64 sums continued chunk by chunk: the same values in the same order give the same doubles.
    const int64_t k = 333;
    std::vector<double> sc(size_t(k), 0.0), sb(size_t(k), 0.0), sf(size_t(k), 0.0);
    for (int64_t t : {1, 300, 77}) {
      Tensor x = rand_bf16_f32({t, k}, 2.0f);
      cpu_.column_abs_sum(x, sc);
      gpu_->column_abs_sum(gpu_->from_host_f32(x), sb);  // bf16 activation
      gpu_->column_abs_sum(gpu_->upload(x), sf);         // F32
      ASSERT_EQ(std::memcmp(sb.data(), sc.data(), size_t(k) * 8), 0) << "t = " << t;
      ASSERT_EQ(std::memcmp(sf.data(), sc.data(), size_t(k) * 8), 0) << "t = " << t;
    }
    std::vector<double> short_sum(5, 0.0);
    EXPECT_THROW(gpu_->column_abs_sum(gpu_->upload(rand_bf16_f32({3, k})), short_sum), Error);
  }
  {
    // scale_columns: the GPU's bf16 output is the CPU's fp32 product rounded to bf16 (the host path it replaced).
    const int64_t t = 70, k = 300;
    Tensor x = rand_bf16_f32({t, k}, 3.0f), mul = test::random_tensor(DType::F32, {k}, rng_);
    Tensor oc = cpu_.empty(DType::F32, {t, k}), og = gpu_->empty(DType::BF16, {t, k});
    cpu_.scale_columns(x, mul, oc);
    gpu_->scale_columns(gpu_->from_host_f32(x), gpu_->upload(mul), og);
    const Tensor g = gpu_->to_host_f32(og);
    for (int64_t i = 0; i < t * k; ++i)
      ASSERT_EQ(g.data<float>()[i], bf16_to_f32(f32_to_bf16(oc.data<float>()[i]))) << i;
  }
  {
    // fake_quant: bit for bit the CPU's (which equals the host's fake_quant_scaled), every grid, with and without
    // scales, the weight-error form; zero, constant and non-negative groups; a group wider than a thread block.
    const int64_t n = 21, k = 384;
    Tensor w = test::random_tensor(DType::F32, {n, k}, rng_, 0.05f);
    for (int64_t c = 0; c < 128; ++c) w.data<float>()[c] = 0.0f, w.data<float>()[k + c] = -0.02f;
    for (int64_t c = 128; c < 256; ++c) w.data<float>()[2 * k + c] = std::fabs(w.data<float>()[2 * k + c]);
    Tensor s = test::random_tensor(DType::F32, {k}, rng_, 0.5f);
    for (int64_t c = 0; c < k; ++c) s.data<float>()[c] = 1.0f + std::fabs(s.data<float>()[c]);
    const Tensor wd = gpu_->upload(w), sd = gpu_->upload(s);
    for (int bits : {4, 8})
      for (int64_t gs : {128, 384})
        for (int mode = 0; mode < 4; ++mode)
          for (int variant = 0; variant < 3; ++variant) {
            const FakeQuantGrid g{bits, gs, mode == 0, mode != 2, mode == 3 ? 1 : 0};
            const bool scaled = variant != 1, minus_w = variant == 2;
            Tensor oc = cpu_.empty(DType::F32, {n, k}), og = gpu_->empty(DType::F32, {n, k});
            cpu_.fake_quant(w, scaled ? s : Tensor(), g, minus_w, oc);
            gpu_->fake_quant(wd, scaled ? sd : Tensor(), g, minus_w, og);
            const Tensor got = gpu_->to_host_f32(og);
            ASSERT_EQ(std::memcmp(got.data(), oc.data(), size_t(n * k) * 4), 0)
                << "bits " << bits << " group " << gs << " mode " << mode << " variant " << variant;
          }
    Tensor big = test::random_tensor(DType::F32, {2, 128}, rng_);
    big.data<float>()[7] = 1e6f;
    Tensor ob = gpu_->empty(DType::F32, {2, 128});
    EXPECT_THROW(gpu_->fake_quant(gpu_->upload(big), Tensor(), FakeQuantGrid{4, 128, true, true, 0}, false, ob), Error);
  }
  const int64_t t = 200, k = 96, n = 40;
  Tensor x = rand_bf16_f32({t, k});
  HessianAccumulator hc(cpu_, k), hg(*gpu_, k);
  hc.add(x);
  hg.add(gpu_->from_host_f32(x));
  Tensor w = test::random_tensor(DType::F32, {n, k}, rng_), w2 = test::random_tensor(DType::F32, {n, k}, rng_);
  const OutputError ec(hc), eg(hg);
  const double rc = ec.rel(w2.data<float>(), w.data<float>(), n), rg = eg.rel(w2.data<float>(), w.data<float>(), n);
  EXPECT_NEAR(rg, rc, 1e-5 * rc);
  EXPECT_NEAR(eg.norm(w.data<float>(), n), ec.norm(w.data<float>(), n), 1e-5 * ec.norm(w.data<float>(), n));
}

}  // namespace

#endif  // DIFFULEX_HAVE_CUDA

}  // namespace dlx
