// The quantizer's blocked linear algebra (backend gram_accumulate / gemm_f32 / cholesky_inverse_upper, blocked
// GPTQ) against plain unblocked references written here: X^T X and GEMMs as loops, GPTQ's Hinv as Cholesky,
// triangular inverse, L^-T L^-1 and Cholesky again, and GPTQ column by column with immediate updates (Frantar et
// al., Algorithm 1 without lazy batches). Fresh random inputs each time; small sizes so that it runs in seconds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "core/error.h"
#include "kernels/backend.h"
#include "quant/methods/awq.h"
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

// The error report's and AWQ's small ops (backend.h zero, symmetric_scaled, dot_f64, column_abs_sum) on the CPU
// against plain loops; sizes that are not multiples of the tiles and blocks.
TEST(QuantLinalg, ReportOpsMatchPlainLoops) {
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int64_t k : {1, 63, 130}) {
    SCOPED_TRACE("k = " + std::to_string(k));
    Tensor up = test::random_tensor(DType::F32, {k, k}, rng);
    // The lower triangle must not be read: NaN there would show in the output.
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < i; ++j) up.data<float>()[i * k + j] = std::nanf("");
    Tensor out = cpu().empty(DType::F32, {k, k});
    const double f = 2.0 / 3.0;
    cpu().symmetric_scaled(up, f, out);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const float want = float(f * double(up.data<float>()[std::min(i, j) * k + std::max(i, j)]));
        ASSERT_EQ(out.data<float>()[i * k + j], want) << i << "," << j;
      }
    cpu().zero(out);
    for (int64_t i = 0; i < k * k; ++i) ASSERT_EQ(out.data<float>()[i], 0.0f);
  }
  for (int64_t n : {0, 1, 4095, 4097, 100000}) {
    Tensor a = test::random_tensor(DType::F32, {std::max<int64_t>(n, 1)}, rng),
           b = test::random_tensor(DType::F32, {std::max<int64_t>(n, 1)}, rng);
    const Tensor av = Tensor::from_data(DType::F32, {n}, a.data()), bv = Tensor::from_data(DType::F32, {n}, b.data());
    double want = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i)
      want += double(a.data<float>()[i]) * double(b.data<float>()[i]),
          mag += std::fabs(double(a.data<float>()[i]) * double(b.data<float>()[i]));
    EXPECT_NEAR(cpu().dot_f64(av, bv), want, 1e-13 * mag + 1e-300) << "n = " << n;
  }
  {
    // column_abs_sum continues a running fp64 sum over chunk after chunk: exactly the plain loop over all rows.
    const int64_t k = 203;
    std::vector<double> sum(size_t(k), 0.0), want(size_t(k), 0.0);
    for (int64_t t : {1, 37, 300}) {
      Tensor x = test::random_tensor(DType::F32, {t, k}, rng, 3.0f);
      cpu().column_abs_sum(x, sum);
      for (int64_t r = 0; r < t; ++r)
        for (int64_t c = 0; c < k; ++c) want[size_t(c)] += std::fabs(double(x.data<float>()[r * k + c]));
      for (int64_t c = 0; c < k; ++c) ASSERT_EQ(sum[size_t(c)], want[size_t(c)]) << "t = " << t << ", column " << c;
    }
  }
  {
    const int64_t t = 29, k = 77;
    Tensor x = test::random_tensor(DType::F32, {t, k}, rng), mul = test::random_tensor(DType::F32, {k}, rng);
    Tensor out = cpu().empty(DType::F32, {t, k});
    cpu().scale_columns(x, mul, out);
    for (int64_t i = 0; i < t * k; ++i)
      ASSERT_EQ(out.data<float>()[i], x.data<float>()[i] * mul.data<float>()[i % k]) << i;
  }
  Tensor x = test::random_tensor(DType::F32, {4, 5}, rng), bad = cpu().empty(DType::F32, {4});
  EXPECT_THROW(cpu().scale_columns(x, bad, x), Error);
  std::vector<double> short_sum(4, 0.0);
  EXPECT_THROW(cpu().column_abs_sum(x, short_sum), Error);
  EXPECT_THROW(cpu().dot_f64(x, bad), Error);
}

// Backend::fake_quant on the CPU against the host's fake_quant_scaled (AWQ's candidates) and RTN's codes, bit for bit,
// over the grids every method uses; rows with a constant and an all-zero group; the weight-error form (minus_w); a
// scale beyond fp16 refused.
TEST(QuantLinalg, FakeQuantMatchesHostRtn) {
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t n = 23, k = 256;
  Tensor w = test::random_tensor(DType::F32, {n, k}, rng, 0.05f);
  for (int64_t c = 0; c < 64; ++c) w.data<float>()[c] = 0.0f, w.data<float>()[k + c] = 0.03f;  // zero, constant
  for (int64_t c = 64; c < 128; ++c) w.data<float>()[2 * k + c] = std::fabs(w.data<float>()[2 * k + c]);  // >= 0
  std::uniform_real_distribution<float> u(0.25f, 4.0f);
  std::vector<float> sv(static_cast<size_t>(k));
  for (float& v : sv) v = u(rng);
  const Tensor sd = Tensor::from_data(DType::F32, {k}, sv.data());
  for (int bits : {4, 8})
    for (int64_t gs : {64, 256})
      for (int mode = 0; mode < 4; ++mode) {
        QuantScheme q;
        q.bits = bits, q.group_size = gs;
        q.sym = mode == 0;
        q.include_zero = mode != 2;  // mode 2: AWQ's min/max ranges
        q.min_zero = mode == 3 ? 1 : 0;  // GPTQ v1 asym
        SCOPED_TRACE(testing::Message() << "bits " << bits << " group " << gs << " mode " << mode);
        const FakeQuantGrid g{q.bits, q.group_size, q.sym, q.include_zero, q.min_zero};
        Tensor out = cpu().empty(DType::F32, {n, k}), err = cpu().empty(DType::F32, {n, k});
        cpu().fake_quant(w, sd, g, false, out);
        cpu().fake_quant(w, sd, g, true, err);
        const Tensor want = fake_quant_scaled(w, sv, q);
        ASSERT_EQ(std::memcmp(out.data(), want.data(), size_t(n * k) * 4), 0);
        for (int64_t i = 0; i < n * k; ++i)
          ASSERT_EQ(err.data<float>()[i], want.data<float>()[i] - w.data<float>()[i]) << i;
        cpu().fake_quant(w, Tensor(), g, false, out);
        const Tensor rtn = codes_to_dense(rtn_quantize(w.data<float>(), n, k, q));
        ASSERT_EQ(std::memcmp(out.data(), rtn.data(), size_t(n * k) * 4), 0);
      }
  Tensor big = test::random_tensor(DType::F32, {2, 64}, rng);
  big.data<float>()[5] = 1e6f;
  Tensor out = cpu().empty(DType::F32, {2, 64});
  EXPECT_THROW(cpu().fake_quant(big, Tensor(), FakeQuantGrid{4, 64, true, true, 0}, false, out), Error);
  EXPECT_THROW(cpu().fake_quant(w, Tensor(), FakeQuantGrid{4, 100, true, true, 0}, false, out), Error);
}

// OutputError's report (D H on the backend, sum (D H) o D in fp64 there) against the quadratic form as plain loops.
TEST(QuantLinalg, OutputErrorMatchesPlainQuadraticForm) {
  std::mt19937_64 rng(std::random_device{}());
  const int64_t t = 90, k = 70, n = 33;
  Tensor x = test::random_tensor(DType::F32, {t, k}, rng);
  HessianAccumulator acc(cpu(), k);
  acc.add(x);
  const std::vector<double> h = acc.finish();
  Tensor a = test::random_tensor(DType::F32, {n, k}, rng), b = test::random_tensor(DType::F32, {n, k}, rng);
  auto quad = [&](const float* d) {
    double s = 0;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < k; ++j) s += double(d[r * k + i]) * h[size_t(i * k + j)] * double(d[r * k + j]);
    return s;
  };
  std::vector<float> d(size_t(n * k));
  for (size_t i = 0; i < d.size(); ++i) d[i] = a.data<float>()[i] - b.data<float>()[i];
  const double sq = quad(d.data()), nb = quad(b.data<float>());
  for (int from_sums = 0; from_sums < 2; ++from_sums) {
    const OutputError e = from_sums ? OutputError(acc) : OutputError(cpu(), h, k);
    EXPECT_NEAR(e.sq(a.data<float>(), b.data<float>(), n), sq, 1e-5 * sq) << from_sums;
    EXPECT_NEAR(e.norm(b.data<float>(), n), nb, 1e-5 * nb) << from_sums;
    EXPECT_NEAR(e.rel(a.data<float>(), b.data<float>(), n), std::sqrt(sq / nb), 1e-5 * std::sqrt(sq / nb));
  }
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
