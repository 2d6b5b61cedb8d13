// The CUDA backend's quantizer linear algebra (gram_accumulate, gemm_f32, cholesky_inverse_upper) and GPTQ on it
// against the CPU backend, on fresh random inputs. The GEMMs are fp32 on both sides (no TF32), so results agree to
// fp32 rounding; the fp64 factorization agrees to ~1e-9. Skipped without a usable GPU.
#include <gtest/gtest.h>

#include <cmath>

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

}  // namespace

#endif  // DIFFULEX_HAVE_CUDA

}  // namespace dlx
