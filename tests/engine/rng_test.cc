// core/rng.h: the xoshiro256** streams against published reference outputs, keyed streams, ranges and moments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "sampler_test_util.h"

namespace dlx {
namespace {

using namespace sampler_test;

// ---- Sampling: RNG ----

TEST(SamplingRng, MatchesPublishedReferenceOutputs) {
  // xoshiro256** from state {1, 2, 3, 4} and splitmix64 from seeds 1234567 and 0 (Vigna's reference code).
  Rng r = Rng::from_state(1, 2, 3, 4);
  EXPECT_EQ(r.next_u64(), 11520ull);
  EXPECT_EQ(r.next_u64(), 0ull);
  EXPECT_EQ(r.next_u64(), 1509978240ull);
  EXPECT_EQ(r.next_u64(), 1215971899390074240ull);
  uint64_t s = 1234567;
  EXPECT_EQ(splitmix64_next(s), 6457827717110365317ull);
  EXPECT_EQ(splitmix64_next(s), 3203168211198807973ull);
  EXPECT_EQ(splitmix64_next(s), 9817491932198370423ull);
  uint64_t z = 0;
  EXPECT_EQ(splitmix64_next(z), 0xe220a8397b1dcdafull);
  EXPECT_EQ(splitmix64(0), 0xe220a8397b1dcdafull);
  EXPECT_THROW(Rng::from_state(0, 0, 0, 0), Error);
}

TEST(SamplingRng, SeedsAndKeysGiveReproducibleIndependentStreams) {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
  EXPECT_NE(Rng(42).next_u64(), c.next_u64());
  EXPECT_EQ(Rng::keyed(7, {1, 2, 3}).next_u64(), Rng::keyed(7, {1, 2, 3}).next_u64());
  const std::set<uint64_t> firsts = {Rng::keyed(7, {1, 2, 3}).next_u64(), Rng::keyed(7, {3, 2, 1}).next_u64(),
                                     Rng::keyed(7, {1, 2, 4}).next_u64(), Rng::keyed(7, {1, 2}).next_u64(),
                                     Rng::keyed(7, {}).next_u64()};
  EXPECT_EQ(firsts.size(), 5u);  // order and length of the key matter
  EXPECT_NE(Rng::keyed(7, {1}).next_u64(), Rng::keyed(8, {1}).next_u64());
}

TEST(SamplingRng, UniformRangesAndMoments) {
  Rng r(1);
  double sum = 0, sum2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double u = r.uniform(), w = r.uniform_open();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ASSERT_GT(w, 0.0);
    ASSERT_LT(w, 1.0);
    sum += u;
    sum2 += u * u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_NEAR(sum2 / n, 1.0 / 3.0, 0.005);
  // Gumbel(0, 1): mean = Euler-Mascheroni constant, variance = pi^2 / 6.
  double g = 0, g2 = 0;
  for (int i = 0; i < n; ++i) {
    const double x = r.gumbel();
    g += x;
    g2 += x * x;
  }
  EXPECT_NEAR(g / n, 0.5772157, 0.01);
  EXPECT_NEAR(g2 / n - (g / n) * (g / n), M_PI * M_PI / 6, 0.03);
}

}  // namespace
}  // namespace dlx
