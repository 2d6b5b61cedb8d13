// The quantizer's parallel host code against the plain serial loops it replaced (docs/QUANTIZER.md, "Where the
// work runs"): each must give bit-identical results, whatever the thread count. Sizes are chosen to leave partial
// tiles and chunks (not multiples of 16, 64 or 128) and, where it matters, to span several parallel chunks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/awq.h"
#include "formats/gptq.h"
#include "formats/packed_convert.h"
#include "kernels/backend.h"
#include "quant/host_ops.h"
#include "quant/methods/awq.h"
#include "quant/methods/hessian.h"
#include "quant/methods/rtn.h"
#include "quant_test_util.h"
#include "test_util.h"

namespace dlx {
namespace {

using test::random_tensor;

Backend& cpu() {
  static std::unique_ptr<Backend> be = make_backend("cpu");
  return *be;
}

// Runs fn with the pool at 1 thread and at several, restoring the count.
template <class Fn>
void with_threads(int n, Fn fn) {
  struct Restore {
    int before = num_threads();
    ~Restore() { set_num_threads(before); }
  } restore;
  set_num_threads(n);
  fn();
}

// Random asymmetric codes without act-order (quant_test_util.h).
QuantCodes random_codes(int bits, int64_t n, int64_t k, int64_t gs, std::mt19937_64& rng) {
  return test::random_codes(bits, n, k, gs, /*sym=*/false, /*act_order=*/false, rng);
}

TEST(QuantHostOps, RoundHalfEvenIsNearbyint) {
  std::vector<float> xs = {0.0f, -0.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 7.49999f, 7.5f, 8.5f, -7.5f,
                           1e-30f, -1e-30f, 4194303.5f, -4194303.5f, 4194304.0f, 4194305.0f, 8388607.5f, 1e20f,
                           -1e20f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::denorm_min()};
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> u(-40.0f, 40.0f);
  for (int i = 0; i < 200000; ++i) xs.push_back(u(rng));
  for (int i = -64; i <= 64; ++i) xs.push_back(float(i) * 0.5f);  // every tie in the codes' range
  for (float x : xs) {
    const float want = std::nearbyint(x), got = round_half_even(x);
    EXPECT_EQ(want, got) << x;  // -0.0 == 0.0: the one difference allowed (round_half_even's comment)
  }
  EXPECT_TRUE(std::isnan(round_half_even(std::numeric_limits<float>::quiet_NaN())));
}

TEST(QuantHostOps, ConversionsAndCopiesMatchSerialLoops) {
  std::mt19937_64 rng(1);
  const int64_t n = (int64_t(1) << 20) + 77;  // several parallel chunks, one partial
  for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
    Tensor t = random_tensor(dt, {n}, rng);
    for (int threads : {1, 4}) {
      with_threads(threads, [&] {
        Tensor f = host_to_f32(t);
        ASSERT_EQ(f.dtype(), DType::F32);
        ASSERT_EQ(f.shape(), t.shape());
        for (int64_t i = 0; i < n; ++i) {
          const float want = load_as_f32(t.data(), dt, size_t(i));
          ASSERT_EQ(std::memcmp(&want, f.data<float>() + i, 4), 0) << dtype_name(dt) << " element " << i;
        }
        Tensor c = host_copy(t);
        EXPECT_NE(c.data(), t.data());
        EXPECT_EQ(std::memcmp(c.data(), t.data(), t.nbytes()), 0);
      });
    }
  }
  // Large buffers (huge-page backed) and small ones (heap) are both usable and 64-byte aligned.
  for (int64_t m : {int64_t(3), int64_t(5) << 20}) {
    Tensor u = host_uninit(DType::F32, {m});
    EXPECT_EQ(reinterpret_cast<uintptr_t>(u.data()) % 64, 0u);
    for (int64_t i = 0; i < m; ++i) u.data<float>()[i] = float(i);
    EXPECT_EQ(u.data<float>()[m - 1], float(m - 1));
  }
}

TEST(QuantHostOps, OutputErrorFromSumsEqualsFromFinish) {
  std::mt19937_64 rng(2);
  for (int64_t k : {int64_t(5), int64_t(130), int64_t(200)}) {  // partial 64 x 64 tiles
    HessianAccumulator acc(cpu(), k);
    for (int c = 0; c < 3; ++c) acc.add(random_tensor(DType::F32, {37, k}, rng));
    const std::vector<double> h = acc.finish();
    // finish(): symmetric, 2/T times the sums (the tiled mirror against a plain one).
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < i; ++j) ASSERT_EQ(h[size_t(i * k + j)], h[size_t(j * k + i)]) << i << "," << j;
    const OutputError a(cpu(), h, k), b(acc);
    ASSERT_EQ(std::memcmp(a.h().data(), b.h().data(), size_t(k * k) * 4), 0) << "k = " << k;
    Tensor w = random_tensor(DType::F32, {9, k}, rng), w2 = random_tensor(DType::F32, {9, k}, rng);
    EXPECT_EQ(a.rel(w2.data<float>(), w.data<float>(), 9), b.rel(w2.data<float>(), w.data<float>(), 9));
  }
  HessianAccumulator empty(cpu(), 7);
  const OutputError e(empty);
  for (int64_t i = 0; i < 49; ++i) EXPECT_EQ(e.h().data<float>()[i], 0.0f);
}

// The original serial packers (formats/gptq.cc, formats/awq.cc before they were tiled), as references.
std::vector<uint32_t> ref_gptq_qweight(const QuantCodes& c) {
  const int p = 32 / c.bits;
  std::vector<uint32_t> qw(size_t(c.k / p * c.n), 0);
  for (int64_t k = 0; k < c.k; ++k)
    for (int64_t n = 0; n < c.n; ++n)
      qw[size_t((k / p) * c.n + n)] |= uint32_t(c.q[size_t(n * c.k + k)]) << (c.bits * (k % p));
  return qw;
}

std::vector<uint32_t> ref_awq_qweight(const QuantCodes& c, AwqOrder order) {
  std::vector<uint32_t> qw(size_t(c.k * c.n / 8), 0);
  for (int64_t k = 0; k < c.k; ++k)
    for (int64_t n = 0; n < c.n; ++n)
      qw[size_t(k * (c.n / 8) + n / 8)] |= uint32_t(c.q[size_t(n * c.k + k)]) << (4 * awq::nibble_of(n, order));
  return qw;
}

TEST(QuantHostOps, PackersMatchSerialReferences) {
  std::mt19937_64 rng(3);
  for (int threads : {1, 3}) {
    with_threads(threads, [&] {
      for (int bits : {4, 8}) {
        const QuantCodes c = random_codes(bits, 150, 192, 64, rng);
        const GptqTensors t = pack_gptq(c, /*v1=*/true);
        const std::vector<uint32_t> want = ref_gptq_qweight(c);
        ASSERT_EQ(t.qweight.nbytes(), want.size() * 4);
        EXPECT_EQ(std::memcmp(t.qweight.data(), want.data(), want.size() * 4), 0) << bits << " bits";
      }
      const QuantCodes c = random_codes(4, 264, 136, 8, rng);  // N = 2 * 128 + 8, K = 2 * 64 + 8
      for (AwqOrder order : {AwqOrder::AutoAwq, AwqOrder::Plain}) {
        const AwqTensors t = pack_awq(c, DType::F16, order);
        const std::vector<uint32_t> want = ref_awq_qweight(c, order);
        ASSERT_EQ(t.qweight.nbytes(), want.size() * 4);
        EXPECT_EQ(std::memcmp(t.qweight.data(), want.data(), want.size() * 4), 0);
      }
    });
  }
  QuantCodes bad = random_codes(4, 16, 64, 32, rng);
  bad.q[777] = 16;
  try {
    pack_gptq(bad, true);
    ADD_FAILURE() << "a 5-bit code was packed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("code 16 does not fit in 4 bits"), std::string::npos) << e.what();
  }
}

TEST(QuantHostOps, PackedWeightFromRowsEqualsGeneric) {
  std::mt19937_64 rng(4);
  for (int bits : {4, 8}) {
    const QuantCodes c = random_codes(bits, 37, 256, 64, rng);
    for (bool act_order : {false, true}) {
      std::vector<int32_t> perm;
      if (act_order) {
        perm.resize(size_t(c.k));
        for (int64_t i = 0; i < c.k; ++i) perm[size_t(i)] = int32_t(i);
        std::shuffle(perm.begin(), perm.end(), rng);
      }
      const int64_t N = c.n, K = c.k;
      auto scale = [&](int64_t g, int64_t n) { return c.scale[size_t(g * N + n)]; };
      auto zero = [&](int64_t g, int64_t n) { return float(c.zero[size_t(g * N + n)]); };
      const PackedWeight a = build_packed_weight(
          bits, N, K, c.group_size, perm, [&](int64_t k, int64_t n) { return c.q[size_t(n * K + k)]; }, scale, zero);
      const PackedWeight b = build_packed_weight_from_rows(
          bits, N, K, c.group_size, perm, [&](int64_t n) { return c.q.data() + n * K; }, scale, zero);
      for (const auto& [x, y] : {std::pair{&a.qweight, &b.qweight}, {&a.scales, &b.scales}, {&a.zeros, &b.zeros}}) {
        ASSERT_EQ(x->nbytes(), y->nbytes());
        EXPECT_EQ(std::memcmp(x->data(), y->data(), x->nbytes()), 0) << bits << " bits, act-order " << act_order;
      }
      EXPECT_EQ(a.perm.defined(), b.perm.defined());
    }
  }
}

TEST(QuantHostOps, AwqWeightMeanIsThreadCountIndependent) {
  std::mt19937_64 rng(5);
  const Tensor a = random_tensor(DType::F32, {33, 256}, rng), b = random_tensor(DType::F32, {17, 256}, rng);
  // The serial reference: linears, rows and groups in order.
  std::vector<double> sum(256, 0.0);
  for (const Tensor* w : {&a, &b})
    for (int64_t r = 0; r < w->dim(0); ++r)
      for (int64_t g0 = 0; g0 < 256; g0 += 64) {
        float m = 0;
        for (int64_t c = g0; c < g0 + 64; ++c) m = std::max(m, std::fabs(w->data<float>()[r * 256 + c]));
        const double inv = 1.0 / (double(m) + 1e-6);
        for (int64_t c = g0; c < g0 + 64; ++c) sum[size_t(c)] += std::fabs(double(w->data<float>()[r * 256 + c])) * inv;
      }
  for (int threads : {1, 4})
    with_threads(threads, [&] {
      const std::vector<float> got = awq_weight_mean({&a, &b}, 64);
      for (size_t c = 0; c < 256; ++c) ASSERT_EQ(got[c], float(sum[c] / 50.0)) << c;
    });
}

}  // namespace
}  // namespace dlx
