// The quantizer's blocked linear algebra (backend gram_accumulate / gemm_f32 / cholesky_inverse_upper, blocked
// GPTQ) against plain unblocked references written here: X^T X and GEMMs as loops, GPTQ's Hinv as Cholesky,
// triangular inverse, L^-T L^-1 and Cholesky again, and GPTQ column by column with immediate updates (Frantar et
// al., Algorithm 1 without lazy batches). Fresh random inputs each time; small sizes so that it runs in seconds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/backend.h"
#include "quant/methods/gptq.h"
#include "quant/methods/hessian.h"
#include "quant/methods/rtn.h"
#include "test_util.h"

namespace dlx {
namespace {

Backend& cpu() {
  static std::unique_ptr<Backend> be = make_backend("cpu");
  return *be;
}

// Lower Cholesky factor in place (plain Crout), false when not positive definite.
bool ref_cholesky(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[size_t(j * n + j)];
    for (int64_t p = 0; p < j; ++p) d -= a[size_t(j * n + p)] * a[size_t(j * n + p)];
    if (!(d > 0.0)) return false;
    const double l = std::sqrt(d);
    a[size_t(j * n + j)] = l;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[size_t(i * n + j)];
      for (int64_t p = 0; p < j; ++p) s -= a[size_t(i * n + p)] * a[size_t(j * n + p)];
      a[size_t(i * n + j)] = s / l;
    }
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) a[size_t(i * n + j)] = 0.0;
  return true;
}

// GPTQ's Hinv the way AutoGPTQ computes it: U = upper Cholesky factor of H^{-1}.
bool ref_hinv_upper(const std::vector<double>& h, int64_t n, std::vector<double>& u) {
  std::vector<double> l = h;
  if (!ref_cholesky(l, n)) return false;
  std::vector<double> li(size_t(n * n), 0.0);  // L^{-1}, lower
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = j; i < n; ++i) {
      double s = i == j ? 1.0 : 0.0;
      for (int64_t p = j; p < i; ++p) s -= l[size_t(i * n + p)] * li[size_t(p * n + j)];
      li[size_t(i * n + j)] = s / l[size_t(i * n + i)];
    }
  std::vector<double> hinv(size_t(n * n), 0.0);  // L^{-T} L^{-1}
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) {
      double s = 0;
      for (int64_t p = std::max(a, b); p < n; ++p) s += li[size_t(p * n + a)] * li[size_t(p * n + b)];
      hinv[size_t(a * n + b)] = s;
    }
  if (!ref_cholesky(hinv, n)) return false;
  u.assign(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) u[size_t(i * n + j)] = hinv[size_t(j * n + i)];
  return true;
}

// A well-conditioned random SPD matrix 2/T X^T X + damp.
std::vector<double> random_spd(int64_t n, int64_t t, std::mt19937_64& rng, Tensor* x_out = nullptr) {
  Tensor x = test::random_tensor(DType::F32, {t, n}, rng);
  std::vector<double> h(size_t(n * n), 0.0);
  for (int64_t r = 0; r < t; ++r)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        h[size_t(i * n + j)] += 2.0 / double(t) * x.data<float>()[r * n + i] * x.data<float>()[r * n + j];
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] += 0.01;
  if (x_out) *x_out = x;
  return h;
}

TEST(QuantLinalg, CholeskyInverseUpperMatchesPlainReference) {
  std::mt19937_64 rng(std::random_device{}());
  for (int64_t n : {1, 7, 130, 300}) {
    std::vector<double> h = random_spd(n, 2 * n + 3, rng), ref, u = h;
    ASSERT_TRUE(ref_hinv_upper(h, n, ref));
    ASSERT_TRUE(cpu().cholesky_inverse_upper(u.data(), n));
    double maxd = 0, maxr = 0;
    for (size_t i = 0; i < u.size(); ++i) maxd = std::max(maxd, std::fabs(u[i] - ref[i])), maxr = std::max(maxr, std::fabs(ref[i]));
    EXPECT_LT(maxd, 1e-9 * maxr) << "n=" << n;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) EXPECT_EQ(u[size_t(i * n + j)], 0.0);
  }
  // Not positive definite: refused.
  std::vector<double> bad = {1, 2, 2, 1};
  EXPECT_FALSE(cpu().cholesky_inverse_upper(bad.data(), 2));
}

TEST(QuantLinalg, GramAndGemmMatchPlainLoops) {
  std::mt19937_64 rng(std::random_device{}());
  const int64_t k = 37, t1 = 50, t2 = 29;
  Tensor a = test::random_tensor(DType::F32, {t1, k}, rng), b = test::random_tensor(DType::F32, {t2, k}, rng);
  HessianAccumulator acc(cpu(), k);
  acc.add(a);
  acc.add(b);
  std::vector<double> h = acc.finish();
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0;
      for (int64_t r = 0; r < t1; ++r) s += double(a.data<float>()[r * k + i]) * a.data<float>()[r * k + j];
      for (int64_t r = 0; r < t2; ++r) s += double(b.data<float>()[r * k + i]) * b.data<float>()[r * k + j];
      EXPECT_NEAR(h[size_t(i * k + j)], 2.0 * s / double(t1 + t2), 1e-5) << i << "," << j;
    }
  // gemm_f32 with both transposes, leading dimensions larger than the sizes, alpha and beta.
  const int64_t m = 9, n = 11, kk = 13, ld = 20;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Tensor A = test::random_tensor(DType::F32, {ld, ld}, rng), B = test::random_tensor(DType::F32, {ld, ld}, rng);
      Tensor C = test::random_tensor(DType::F32, {ld, ld}, rng);
      Tensor C0 = Tensor::from_data(DType::F32, {ld, ld}, C.data());
      cpu().gemm_f32(ta, tb, m, n, kk, -0.5f, A.data<float>(), ld, B.data<float>(), ld, 2.0f, C.data<float>(), ld);
      for (int64_t i = 0; i < ld; ++i)
        for (int64_t j = 0; j < ld; ++j) {
          double want = C0.data<float>()[i * ld + j];
          if (i < m && j < n) {
            double s = 0;
            for (int64_t p = 0; p < kk; ++p)
              s += double(ta ? A.data<float>()[p * ld + i] : A.data<float>()[i * ld + p]) *
                   (tb ? B.data<float>()[j * ld + p] : B.data<float>()[p * ld + j]);
            want = 2.0 * want - 0.5 * s;
          }
          EXPECT_NEAR(C.data<float>()[i * ld + j], want, 1e-5) << ta << tb << " " << i << "," << j;
        }
    }
}

// GPTQ column by column with immediate fp64 updates of every later column (no blocks, no GEMMs).
QuantCodes ref_gptq(const Tensor& w0, const std::vector<double>& h0, const GptqOptions& o) {
  const int64_t n = w0.dim(0), k = w0.dim(1), gs = o.scheme.group_size;
  std::vector<double> h = h0;
  std::vector<int64_t> perm(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) perm[size_t(i)] = i;
  if (o.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return h0[size_t(a * k + a)] > h0[size_t(b * k + b)]; });
  double mean = 0;
  for (int64_t i = 0; i < k; ++i) mean += h[size_t(i * k + i)] / double(k);
  std::vector<double> hp(h.size()), u;
  for (int64_t a = 0; a < k; ++a)
    for (int64_t b = 0; b < k; ++b) hp[size_t(a * k + b)] = h[size_t(perm[size_t(a)] * k + perm[size_t(b)])];
  for (int64_t i = 0; i < k; ++i) hp[size_t(i * k + i)] += o.damp * mean;
  EXPECT_TRUE(ref_hinv_upper(hp, k, u));
  QuantCodes c = make_codes(n, k, o.scheme);
  if (o.act_order) {
    c.g_idx.resize(size_t(k));
    for (int64_t j = 0; j < k; ++j) c.g_idx[size_t(perm[size_t(j)])] = int32_t(j / gs);
  }
  for (int64_t r = 0; r < n; ++r) {
    std::vector<double> w(static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) w[size_t(j)] = w0.data<float>()[r * k + perm[size_t(j)]];
    GroupParams p;
    for (int64_t j = 0; j < k; ++j) {
      if (j % gs == 0) {
        std::vector<float> g(w.begin() + j, w.begin() + j + gs);
        p = find_params(g.data(), gs, o.scheme);
        set_group(c, j / gs, r, p);
      }
      const int q = p.code(float(w[size_t(j)]), o.scheme.maxq());
      c.q[size_t(r * k + perm[size_t(j)])] = uint8_t(q);
      const double e = (w[size_t(j)] - p.dequant(q)) / u[size_t(j * k + j)];
      for (int64_t col = j + 1; col < k; ++col) w[size_t(col)] -= e * u[size_t(j * k + col)];
    }
  }
  return c;
}

TEST(QuantLinalg, BlockedGptqMatchesColumnByColumnReference) {
  std::mt19937_64 rng(std::random_device{}());
  const int64_t n = 24, k = 160, gs = 32;
  Tensor x;
  std::vector<double> h = random_spd(k, 400, rng, &x);
  Tensor w = test::random_tensor(DType::F32, {n, k}, rng, 0.05f);
  for (bool act : {false, true}) {
    GptqOptions o;
    o.scheme.group_size = gs;
    o.act_order = act;
    o.block_size = 64;  // several blocks, so the GEMM updates between blocks are exercised
    QuantCodes ref = ref_gptq(w, h, o);
    GptqResult g = gptq_quantize(cpu(), w.data<float>(), n, k, h, o);
    // Same algorithm, other summation order: codes agree except at rounding ties, errors agree to 1e-3.
    int64_t same = 0;
    for (size_t i = 0; i < ref.q.size(); ++i) same += ref.q[i] == g.codes.q[i];
    EXPECT_GE(double(same), 0.99 * double(ref.q.size())) << "act_order=" << act;
    Tensor dr = codes_to_dense(ref), dg = codes_to_dense(g.codes);
    const double er = rel_output_error(cpu(), h, dr.data<float>(), w.data<float>(), n, k);
    const double eg = rel_output_error(cpu(), h, dg.data<float>(), w.data<float>(), n, k);
    EXPECT_NEAR(eg, er, 1e-3 * er) << "act_order=" << act;
  }
}

}  // namespace
}  // namespace dlx
