// Tests of the diffusion samplers (src/engine): the shared helpers against plain references and hand-computed
// values, the Dream schedule against values produced by torch 2.11 (CUDA and CPU agree), and both samplers
// on hand-built logits functions whose outcome is known: which positions are revealed at which step, with
// which tokens, and the error for each invalid option.
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
#include "core/thread_pool.h"
#include "engine/dream_sampler.h"
#include "engine/llada_sampler.h"
#include "engine/rng.h"
#include "engine/sampling.h"

namespace dlx {
namespace {

constexpr float kNeg = -30.0f;  // an "impossible" token: probability ~1e-13 next to O(1) logits
constexpr int64_t kV = 64;      // vocabulary of the fake models
constexpr int64_t kMask = 63;   // [MASK] inside the vocabulary, so its suppression is exercised

// ---- Fake models ----

using Rule = std::function<void(int64_t b, int64_t pos, const int64_t* row, int64_t L, float* out)>;

// A logits function computed position by position from `rule`, recording every call's ids and key_mask.
struct FakeModel {
  int64_t V = kV;
  Rule rule;
  std::vector<Tensor> ids_seen, masks_seen;

  LogitsFn fn() {
    return [this](const Tensor& ids, const Tensor& km) {
      ids_seen.push_back(Tensor::from_data(DType::I64, ids.shape(), ids.data()));
      masks_seen.push_back(km.defined() ? Tensor::from_data(DType::U8, km.shape(), km.data()) : Tensor());
      const int64_t B = ids.dim(0), L = ids.dim(1);
      Tensor out = Tensor::zeros(DType::F32, {B, L, V});
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p = 0; p < L; ++p) rule(b, p, ids.data<int64_t>() + b * L, L, out.data<float>() + (b * L + p) * V);
      return out;
    };
  }
  // The same model behind the row-selecting callback; records the rows asked for.
  std::vector<std::vector<int64_t>> rows_seen;
  RowLogitsFn row_fn() {
    return [this](const Tensor& ids, const Tensor& km, const std::vector<int64_t>& rows) {
      ids_seen.push_back(Tensor::from_data(DType::I64, ids.shape(), ids.data()));
      masks_seen.push_back(km.defined() ? Tensor::from_data(DType::U8, km.shape(), km.data()) : Tensor());
      rows_seen.push_back(rows);
      const int64_t L = ids.dim(1);
      Tensor out = Tensor::zeros(DType::F32, {int64_t(rows.size()), V});
      for (size_t i = 0; i < rows.size(); ++i)
        rule(rows[i] / L, rows[i] % L, ids.data<int64_t>() + rows[i] / L * L, L, out.data<float>() + int64_t(i) * V);
      return out;
    };
  }
};

// Fills a logits row with log(prob) for the listed tokens and kNeg elsewhere.
void put_dist(float* out, int64_t V, const std::vector<std::pair<int64_t, double>>& dist) {
  std::fill(out, out + V, kNeg);
  for (auto [tok, p] : dist) out[tok] = float(std::log(p));
}

// Token `tok` with probability p and four others (ids 1..4) sharing the rest: maskgit confidence p.
std::vector<std::pair<int64_t, double>> peaked(int64_t tok, double p) {
  return {{tok, p}, {1, (1 - p) / 4}, {2, (1 - p) / 4}, {3, (1 - p) / 4}, {4, (1 - p) / 4}};
}

// Logits that depend on the whole row (so every reveal changes later steps) and look random.
void hashed_rule(const int64_t* row, int64_t L, int64_t pos, float* out, int64_t V) {
  uint64_t h = 0x12345 + uint64_t(pos) * 1000003ull;
  for (int64_t i = 0; i < L; ++i) h = h * 0x100000001b3ull ^ uint64_t(row[i]);
  for (int64_t v = 0; v < V; ++v) {
    uint64_t z = h + uint64_t(v) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 29)) * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 32;
    out[v] = float(z >> 40) / float(1 << 24) * 4.0f;  // uniform in [0, 4)
  }
}

Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows) {
  const int64_t B = int64_t(rows.size()), P = int64_t(rows[0].size());
  Tensor t = Tensor::zeros(DType::I64, {B, P});
  for (int64_t b = 0; b < B; ++b) std::copy(rows[b].begin(), rows[b].end(), t.data<int64_t>() + b * P);
  return t;
}

std::vector<int64_t> row_of(const Tensor& t, int64_t b) {
  const int64_t L = t.dim(1);
  return std::vector<int64_t>(t.data<int64_t>() + b * L, t.data<int64_t>() + (b + 1) * L);
}

// Positions (relative to `offset`) masked in `before` and not in `after`, for one row.
std::set<int64_t> revealed_between(const Tensor& before, const Tensor& after, int64_t mask, int64_t offset,
                                   int64_t b = 0) {
  std::set<int64_t> out;
  const auto x = row_of(before, b), y = row_of(after, b);
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] == mask && y[i] != mask) out.insert(int64_t(i) - offset);
  return out;
}

// The reveal sets of each forward pass: snapshots are the ids of each call, then the final output.
std::vector<std::set<int64_t>> reveal_sets(const FakeModel& m, const Tensor& out, int64_t mask, int64_t offset,
                                           int64_t b = 0) {
  std::vector<std::set<int64_t>> sets;
  for (size_t c = 0; c < m.ids_seen.size(); ++c)
    sets.push_back(revealed_between(m.ids_seen[c], c + 1 < m.ids_seen.size() ? m.ids_seen[c + 1] : out, mask,
                                    offset, b));
  return sets;
}

int64_t count_of(const std::vector<int64_t>& v, int64_t x) { return int64_t(std::count(v.begin(), v.end(), x)); }

// |freq - p| within 5 standard deviations of a binomial proportion (plus a little slack).
void expect_frequency(int64_t hits, int64_t n, double p, const std::string& what) {
  const double f = double(hits) / double(n), tol = 5 * std::sqrt(p * (1 - p) / double(n)) + 2e-3;
  EXPECT_NEAR(f, p, tol) << what;
}

template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

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

// ---- Sampling: row helpers ----

TEST(SamplingRow, SoftmaxArgmaxAndProbMatchDoubleReference) {
  Rng r(3);
  std::vector<float> x(257);
  for (float& v : x) v = float(r.uniform() * 20 - 10);
  x[5] = -std::numeric_limits<float>::infinity();
  std::vector<float> p(x.size());
  softmax(x.data(), int64_t(x.size()), p.data());
  double z = 0;
  for (float v : x) z += std::exp(double(v));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(p[i], std::exp(double(x[i])) / z, 1e-7);
  EXPECT_EQ(p[5], 0.0f);
  for (int64_t t : {0, 7, 100}) EXPECT_NEAR(softmax_prob(x.data(), int64_t(x.size()), t), std::exp(double(x[t])) / z, 1e-12);
  const float y[] = {1, 3, 2, 3};
  EXPECT_EQ(argmax(y, 4), 1);  // first of equal maxima
  const float none[] = {-INFINITY, -INFINITY};
  float out[2];
  EXPECT_THROW(softmax(none, 2, out), Error);
}

// Dream's top_k_logits, literally: remove logits < the k-th largest.
std::vector<bool> reference_top_k_keep(const std::vector<float>& x, int64_t k) {
  std::vector<float> s = x;
  std::sort(s.begin(), s.end(), std::greater<float>());
  const float kth = s[size_t(std::min<int64_t>(k, int64_t(x.size())) - 1)];
  std::vector<bool> keep;
  for (float v : x) keep.push_back(!(v < kth));
  return keep;
}

// Dream's top_p_logits, literally: sort descending, cumsum of softmax, remove cum > p shifted right by one.
std::vector<bool> reference_top_p_keep(const std::vector<float>& x, double top_p) {
  std::vector<int> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return x[a] > x[b]; });
  double z = 0;
  for (float v : x) z += std::exp(double(v));
  std::vector<bool> remove_sorted(x.size()), keep(x.size());
  double cum = 0;
  for (size_t j = 0; j < x.size(); ++j) {
    cum += std::exp(double(x[order[j]])) / z;
    remove_sorted[j] = cum > top_p;
  }
  for (size_t j = x.size(); j-- > 1;) remove_sorted[j] = remove_sorted[j - 1];
  remove_sorted[0] = false;
  for (size_t j = 0; j < x.size(); ++j) keep[order[j]] = !remove_sorted[j];
  return keep;
}

TEST(SamplingFilter, TopKMatchesReferenceIncludingTies) {
  Rng r(11);
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t n = 1 + int64_t(r.uniform() * 300);
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = float(int(r.uniform() * 12)) * 0.5f;  // few distinct values: many ties
    for (int64_t k : {int64_t(1), int64_t(2), int64_t(5), n, n + 3}) {
      std::vector<float> y = x;
      top_k_filter(y.data(), n, k);
      const auto keep = reference_top_k_keep(x, k);
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(y[size_t(i)], keep[size_t(i)] ? x[size_t(i)] : -INFINITY);
    }
  }
  std::vector<float> x = {1, 2, 3};
  top_k_filter(x.data(), 3, 0);  // off
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3}));
}

TEST(SamplingFilter, TopPMatchesReference) {
  // Logits (2, .5, 1, -.5) have probabilities (.598, .133, .220, .049): in descending order the mass before
  // each entry is 0, .598, .818, .951, so p = 0.8 keeps logits 2 and 1 only.
  std::vector<float> ex = {2.0f, 0.5f, 1.0f, -0.5f};
  top_p_filter(ex.data(), 4, 0.8);
  EXPECT_EQ(ex, (std::vector<float>{2.0f, -INFINITY, 1.0f, -INFINITY}));
  ex = {2.0f, 0.5f, 1.0f, -0.5f};
  top_p_filter(ex.data(), 4, 0.85);  // now .818 <= p: the third entry (logit .5) is kept too
  EXPECT_EQ(ex, (std::vector<float>{2.0f, 0.5f, 1.0f, -INFINITY}));
  Rng r(12);
  for (int trial = 0; trial < 60; ++trial) {
    // Sizes and scales chosen so the kept head is sometimes < 64 entries and sometimes hundreds (flat rows).
    const int64_t n = 1 + int64_t(r.uniform() * 2000);
    const double scale = trial % 3 == 0 ? 0.01 : trial % 3 == 1 ? 1.0 : 8.0;
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = float(r.uniform() * scale);
    if (trial % 4 == 3 && scale >= 1)  // coarse values: many ties, kept or removed by index order
      for (float& v : x) v = std::floor(v * 4) / 4;
    for (double p : {0.05, 0.3, 0.5, 0.9, 0.95, 0.999}) {
      std::vector<float> y = x;
      top_p_filter(y.data(), n, p);
      const auto keep = reference_top_p_keep(x, p);
      int64_t mismatches = 0;
      for (int64_t i = 0; i < n; ++i)
        mismatches += keep[size_t(i)] ? y[size_t(i)] != x[size_t(i)] : y[size_t(i)] != -INFINITY;
      EXPECT_EQ(mismatches, 0) << "n=" << n << " scale=" << scale << " p=" << p;
    }
  }
  std::vector<float> x = {1, 2, 3};
  top_p_filter(x.data(), 3, 1.0);  // off
  EXPECT_EQ(x, (std::vector<float>{1, 2, 3}));
}

TEST(SamplingRow, CategoricalEdgesAndDistribution) {
  const float p[] = {0.0f, 0.25f, 0.0f, 0.75f, 0.0f};
  EXPECT_EQ(sample_categorical(p, 5, 0.0), 1);
  EXPECT_EQ(sample_categorical(p, 5, 0.2499), 1);
  EXPECT_EQ(sample_categorical(p, 5, 0.2501), 3);
  EXPECT_EQ(sample_categorical(p, 5, std::nextafter(1.0, 0.0)), 3);  // never the zero-probability tail
  const float q[] = {0.1f, 0.2f, 0.3f, 0.4f};
  Rng r(5);
  std::vector<int64_t> hits(4);
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++hits[size_t(sample_categorical(q, 4, r.uniform()))];
  for (int k = 0; k < 4; ++k) expect_frequency(hits[size_t(k)], n, q[k], "token " + std::to_string(k));
}

TEST(SamplingRow, ConfidenceMeasuresMatchHandValues) {
  const float p[] = {0.6f, 0.35f, 0.01f, 0.01f, 0.01f, 0.01f, 0.01f};
  EXPECT_NEAR(top2_margin(p, 7), 0.25, 1e-6);
  double ent = 0;
  for (float v : p) ent += double(v) * std::log(double(v) + 1e-10);
  EXPECT_NEAR(neg_entropy(p, 7), ent, 1e-6);
  EXPECT_NEAR(ent, -0.9042, 1e-3);
  const float one[] = {1.0f};
  EXPECT_EQ(top2_margin(one, 1), 1.0);
  EXPECT_NEAR(neg_entropy(one, 1), 0.0, 1e-9);
  const float tie[] = {0.5f, 0.5f};
  EXPECT_EQ(top2_margin(tie, 2), 0.0);
}

TEST(SamplingRow, SampleTokenAppliesTemperatureThenTopPThenTopK) {
  auto logp = [](std::vector<double> p) {
    std::vector<float> x;
    for (double v : p) x.push_back(float(std::log(v)));
    return x;
  };
  // Greedy + top_p 0.5 on (.4 .3 .2 .1): the nucleus is {0, 1}; the confidences are of the renormalized pair.
  std::vector<float> x = logp({0.4, 0.3, 0.2, 0.1});
  TokenChoice c = sample_token(x.data(), 4, {0.0f, 0.5f, 0}, Confidence::Prob, 0.0);
  EXPECT_EQ(c.token, 0);
  EXPECT_NEAR(c.prob, 0.4 / 0.7, 1e-6);
  x = logp({0.4, 0.3, 0.2, 0.1});
  EXPECT_NEAR(sample_token(x.data(), 4, {0.0f, 0.5f, 0}, Confidence::Margin, 0.0).confidence, 0.1 / 0.7, 1e-6);
  x = logp({0.4, 0.3, 0.2, 0.1});
  const double a = 0.4 / 0.7, b = 0.3 / 0.7;
  EXPECT_NEAR(sample_token(x.data(), 4, {0.0f, 0.5f, 0}, Confidence::NegEntropy, 0.0).confidence,
              a * std::log(a + 1e-10) + b * std::log(b + 1e-10), 1e-6);
  // Temperature 0.5 first sharpens to (.533 .3 .133 .033), after which top_p 0.5 keeps token 0 only; the
  // other order (top_p first) would keep two tokens.
  for (double u : {0.0, 0.5, 0.99}) {
    x = logp({0.4, 0.3, 0.2, 0.1});
    c = sample_token(x.data(), 4, {0.5f, 0.5f, 0}, Confidence::Prob, u);
    EXPECT_EQ(c.token, 0);
    EXPECT_NEAR(c.prob, 1.0, 1e-6);
  }
  // Sampling at temperature 1 with top_k 2: u picks inside the renormalized top two (.4/.7, .3/.7).
  x = logp({0.3, 0.4, 0.2, 0.1});
  c = sample_token(x.data(), 4, {1.0f, 1.0f, 2}, Confidence::Prob, 0.5);
  EXPECT_EQ(c.token, 1);  // cumulative: token 0 .4286, token 1 1.0
  EXPECT_NEAR(c.prob, 0.4 / 0.7, 1e-6);
  x = logp({0.3, 0.4, 0.2, 0.1});
  EXPECT_EQ(sample_token(x.data(), 4, {1.0f, 1.0f, 2}, Confidence::Prob, 0.4).token, 0);
}

TEST(SamplingRow, GumbelChoiceGreedyAndDistribution) {
  const float x[] = {0.5f, 2.0f, 1.0f};
  Rng r(9), copy = r;
  TokenChoice c = gumbel_choice(x, 3, 0.0, &r);
  EXPECT_EQ(c.token, 1);
  EXPECT_NEAR(c.prob, softmax_prob(x, 3, 1), 1e-12);
  EXPECT_EQ(r.next_u64(), copy.next_u64());  // temperature 0 draws nothing
  // argmax(exp(l) / (-log u)^T) is a draw from softmax(l / T).
  std::vector<float> l = {float(std::log(0.1)), float(std::log(0.2)), float(std::log(0.3)), float(std::log(0.4))};
  for (double T : {1.0, 0.5}) {
    std::vector<double> want(4);
    double z = 0;
    for (int k = 0; k < 4; ++k) z += want[size_t(k)] = std::exp(l[size_t(k)] / T);
    std::vector<int64_t> hits(4);
    const int n = 30000;
    Rng g(77);
    for (int i = 0; i < n; ++i) ++hits[size_t(gumbel_choice(l.data(), 4, T, &g).token)];
    for (int k = 0; k < 4; ++k) expect_frequency(hits[size_t(k)], n, want[size_t(k)] / z, "T " + std::to_string(T));
  }
}

TEST(SamplingRow, CfgAndSuppression) {
  const float cond[] = {1.0f, 0.0f, 1.1f}, un[] = {0.0f, 0.0f, 1.5f};
  float out[3];
  cfg_combine(cond, un, 3, 1.0f, out);
  EXPECT_FLOAT_EQ(out[0], 2.0f);
  EXPECT_FLOAT_EQ(out[1], 0.0f);
  EXPECT_FLOAT_EQ(out[2], 0.7f);
  cfg_combine(cond, un, 3, 0.0f, out);  // scale 0: the conditional logits
  EXPECT_FLOAT_EQ(out[2], 1.1f);
  float row[] = {1, 2, 3, 4};
  const int64_t ids[] = {1, 3, 99, -1};
  suppress_tokens(row, 4, ids);
  EXPECT_EQ(row[0], 1.0f);
  EXPECT_EQ(row[1], -INFINITY);
  EXPECT_EQ(row[3], -INFINITY);
}

TEST(SamplingSelect, TopKAndThreshold) {
  const std::vector<Proposal> props = {{10, 1, 0.5, 0.5}, {11, 1, 0.9, 0.2}, {12, 1, 0.9, 0.5}, {13, 1, 0.95, 0.7}};
  auto positions = [&](const std::vector<size_t>& idx) {
    std::vector<int64_t> p;
    for (size_t i : idx) p.push_back(props[i].pos);
    return p;
  };
  EXPECT_EQ(positions(pick_top_k(props, 3)), (std::vector<int64_t>{13, 10, 12}));  // tie .5: lower position first
  EXPECT_EQ(positions(pick_top_k(props, 9)).size(), 4u);
  EXPECT_TRUE(pick_top_k(props, 0).empty());
  EXPECT_EQ(positions(pick_above_threshold(props, 0.9)), (std::vector<int64_t>{13, 11, 12}));  // >= threshold
  EXPECT_EQ(positions(pick_above_threshold(props, 0.99)), (std::vector<int64_t>{13}));         // at least one
  EXPECT_TRUE(pick_above_threshold({}, 0.5).empty());
}

TEST(SamplingStop, FindsFirstStopAfterPrompt) {
  const int64_t ids[] = {5, 6, 2, 7, 2};
  const int64_t stops[] = {2, 9};
  EXPECT_EQ(find_stop(ids, 5, stops), 2);
  EXPECT_EQ(find_stop(ids, 2, stops), 2);  // none: n
  Tensor out = ids_tensor({{1, 2, 5, 5, 9, 2}, {1, 1, 5, 5, 5, 5}, {1, 1, 2, 5, 5, 5}});
  // The prompt's own stop ids (row 0 position 1) do not count.
  EXPECT_EQ(generated_lengths(out, 2, stops), (std::vector<int64_t>{2, 4, 0}));
  EXPECT_THROW(generated_lengths(out, 7, stops), Error);
}

// ---- Dream ----

UnmaskOptions dream_opts(int64_t n, int steps) {
  UnmaskOptions o;
  o.max_new_tokens = n;
  o.steps = steps;
  o.mask_token_id = kMask;
  o.alg = DreamAlg::MaskgitPlus;
  return o;
}

// Dream's logits shift: the distribution for position q lives in logits row q - 1.
Rule dream_static(int64_t P, std::function<std::vector<std::pair<int64_t, double>>(int64_t k)> dist_of_new) {
  return [=](int64_t, int64_t pos, const int64_t*, int64_t L, float* out) {
    const int64_t k = pos + 1 - P;  // the new-token index this row feeds
    if (k >= 0 && pos + 1 < L) put_dist(out, kV, dist_of_new(k));
    else put_dist(out, kV, {{5, 1.0}});
  };
}

TEST(DreamSampler, ScheduleMatchesTorch) {
  // Sequences of Dream's number_transfer_tokens (mask count N, steps) as torch 2.11 computes them on CUDA and
  // CPU (linspace in float32, int(num_mask * (1 - s / t))), run-length encoded as {value, repeats}.
  struct Case {
    int64_t n;
    int steps;
    std::vector<std::pair<int64_t, int>> runs;
  };
  const std::vector<Case> cases = {
      {8, 8, {{0, 1}, {1, 6}, {2, 1}}},         {16, 4, {{3, 1}, {4, 2}, {5, 1}}},
      {10, 3, {{3, 2}, {4, 1}}},                {64, 64, {{0, 1}, {1, 62}, {2, 1}}},
      {128, 32, {{3, 1}, {4, 30}, {5, 1}}},     {100, 7, {{14, 6}, {16, 1}}},
      {256, 256, {{0, 1}, {1, 254}, {2, 1}}},   {512, 512, {{0, 1}, {1, 510}, {2, 1}}},
      {128, 128, {{0, 1}, {1, 126}, {2, 1}}},   {256, 64, {{3, 1}, {4, 62}, {5, 1}}},
      {7, 100, {{0, 94}, {1, 5}, {2, 1}}},      {1, 1, {{1, 1}}},
      {3, 1, {{3, 1}}},                         {200, 4, {{49, 1}, {50, 2}, {51, 1}}},
  };
  for (const Case& c : cases) {
    std::vector<int64_t> want;
    for (auto [v, r] : c.runs) want.insert(want.end(), size_t(r), v);
    const std::vector<float> t = dream_timesteps(c.steps, 1e-3f);
    std::vector<int64_t> got;
    int64_t masked = c.n;
    for (int i = 0; i < c.steps; ++i) {
      got.push_back(dream_transfer_count(masked, i, c.steps, t));
      masked -= got.back();
    }
    EXPECT_EQ(got, want) << "N=" << c.n << " steps=" << c.steps;
  }
  // torch.linspace(1, 1e-3, 513)[i] and (1025)[i] bit for bit, at indices where a non-fused multiply-add differs.
  const std::vector<float> t512 = dream_timesteps(512, 1e-3f), t1024 = dream_timesteps(1024, 1e-3f);
  EXPECT_EQ(t512[28], 0x1.e4072ap-1f);
  EXPECT_EQ(t512[41], 0x1.d70a7ep-1f);
  EXPECT_EQ(t512[45], 0x1.d30b86p-1f);
  EXPECT_EQ(t1024[1], 0x1.ff8020p-1f);
  EXPECT_EQ(t1024[300], 0x1.6a2666p-1f);
  EXPECT_EQ(t1024[513], 0x1.ff8354p-2f);
  EXPECT_EQ(t1024[700], 0x1.44b334p-2f);
  EXPECT_EQ(t1024[1023], 0x1.02f1aap-9f);
  EXPECT_EQ(t1024[1024], 0x1.0624dep-10f);
}

TEST(DreamSampler, LogitsAreShiftedByOne) {
  // Row j of the logits peaks at token 10 + j; Dream fills position q from row q - 1 (row 0 for q = 0).
  FakeModel m;
  m.rule = [](int64_t, int64_t pos, const int64_t*, int64_t, float* out) { put_dist(out, kV, {{10 + pos, 0.9}, {1, 0.1}}); };
  Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{7, 8, 9}}), dream_opts(5, 5));
  EXPECT_EQ(row_of(out, 0), (std::vector<int64_t>{7, 8, 9, 12, 13, 14, 15, 16}));
  // Empty prompt: position 0 reads its own row (the reference's cat(logits[:, :1], logits[:, :-1])).
  FakeModel m0;
  m0.rule = m.rule;
  out = unmask_generate(UnmaskPolicy::Dream, m0.fn(), Tensor::zeros(DType::I64, {1, 0}), dream_opts(3, 3));
  EXPECT_EQ(row_of(out, 0), (std::vector<int64_t>{10, 10, 11}));
}

TEST(DreamSampler, RevealsMostConfidentFirstOnTheSchedule) {
  const std::vector<double> conf = {0.5, 0.9, 0.3, 0.7, 0.95, 0.6, 0.4, 0.8};
  FakeModel m;
  m.rule = dream_static(2, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
  std::vector<int64_t> revealed;
  int calls = 0;
  std::vector<std::vector<int64_t>> canvases;
  Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{5, 6}}), dream_opts(8, 8),
                              [&](int step, int total, int64_t r, const Tensor& canvas) {
                                EXPECT_EQ(step, calls++);
                                EXPECT_EQ(total, 8);
                                revealed.push_back(r);
                                canvases.emplace_back(canvas.data<int64_t>(), canvas.data<int64_t>() + canvas.numel());
                              });
  // The canvas after each step: the prompt, the r positions revealed so far with their final tokens, [MASK] elsewhere.
  ASSERT_EQ(canvases.size(), revealed.size());
  for (size_t s = 0; s < canvases.size(); ++s) {
    ASSERT_EQ(canvases[s].size(), 10u);
    EXPECT_EQ(canvases[s][0], 5);
    EXPECT_EQ(canvases[s][1], 6);
    int64_t n = 0;
    for (size_t k = 2; k < 10; ++k)
      if (canvases[s][k] != kMask) {
        EXPECT_EQ(canvases[s][k], out.data<int64_t>()[k]);
        ++n;
      }
    EXPECT_EQ(n, revealed[s]) << "step " << s;
  }
  // Schedule for 8 masks in 8 steps: 0,1,1,1,1,1,1,2; the step that reveals nothing runs no forward pass.
  EXPECT_EQ(revealed, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 8}));
  EXPECT_EQ(m.ids_seen.size(), 7u);
  const std::vector<std::set<int64_t>> want = {{4}, {1}, {7}, {3}, {5}, {0}, {2, 6}};
  EXPECT_EQ(reveal_sets(m, out, kMask, 2), want);
  for (int64_t k = 0; k < 8; ++k) EXPECT_EQ(out.data<int64_t>()[2 + k], 20 + k);
}

TEST(DreamSampler, EachAlgRanksByItsOwnConfidence) {
  // A: .6/.35/5x.01, B: .5/.5, C: .55/.45, D: .58/.21/.21 (the token 20 + k first, the rest on ids 40..45).
  const std::vector<std::vector<std::pair<int64_t, double>>> dists = {
      {{20, 0.6}, {40, 0.35}, {41, 0.01}, {42, 0.01}, {43, 0.01}, {44, 0.01}, {45, 0.01}},
      {{21, 0.5}, {40, 0.5}},  // exact tie: the lower id wins
      {{22, 0.55}, {40, 0.45}},
      {{23, 0.58}, {40, 0.21}, {41, 0.21}},
  };
  const std::map<std::string, std::vector<std::set<int64_t>>> want = {
      {"maskgit_plus", {{0}, {3}, {2}, {1}}},  // probability .6 .58 .55 .5
      {"topk_margin", {{3}, {0}, {2}, {1}}},   // margin .37 .25 .1 0
      {"entropy", {{2}, {1}, {0}, {3}}},       // neg entropy -.688 -.693 -.904 -.971
  };
  for (const auto& [alg, order] : want) {
    FakeModel m;
    m.rule = dream_static(1, [&](int64_t k) { return dists[size_t(k)]; });
    UnmaskOptions o = dream_opts(4, 4);
    o.alg = parse_dream_alg(alg);
    o.tokens_per_step = 1;
    Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{5}}), o);
    EXPECT_EQ(reveal_sets(m, out, kMask, 1), order) << alg;
    EXPECT_EQ(row_of(out, 0), (std::vector<int64_t>{5, 20, 21, 22, 23})) << alg;
  }
}

TEST(DreamSampler, GreedyIsDeterministicAndIgnoresTheSeed) {
  for (const char* alg : {"maskgit_plus", "topk_margin", "entropy"}) {
    FakeModel m;
    m.rule = [](int64_t, int64_t pos, const int64_t* row, int64_t L, float* out) { hashed_rule(row, L, pos, out, kV); };
    UnmaskOptions o = dream_opts(12, 6);
    o.alg = parse_dream_alg(alg);
    o.seed = 1;
    const Tensor a = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{3, 4}}), o);
    o.seed = 2;
    const Tensor b = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{3, 4}}), o);
    EXPECT_EQ(row_of(a, 0), row_of(b, 0)) << alg;
    EXPECT_EQ(count_of(row_of(a, 0), kMask), 0) << alg;
  }
}

TEST(DreamSampler, SeedReproducibleAndRowsIndependent) {
  FakeModel m;
  m.rule = [](int64_t, int64_t pos, const int64_t* row, int64_t L, float* out) { hashed_rule(row, L, pos, out, kV); };
  UnmaskOptions o = dream_opts(16, 8);
  o.temperature = 1.0f;
  o.top_p = 0.95f;
  o.seed = 123;
  const Tensor a = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{3, 4}, {3, 4}}), o);
  const Tensor b = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{3, 4}, {3, 4}}), o);
  EXPECT_EQ(row_of(a, 0), row_of(b, 0));
  EXPECT_EQ(row_of(a, 1), row_of(b, 1));
  EXPECT_NE(row_of(a, 0), row_of(a, 1));  // each row has its own random streams
  const Tensor single = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{3, 4}}), o);
  EXPECT_EQ(row_of(single, 0), row_of(a, 0));  // ... which do not depend on the other rows
  o.seed = 124;
  EXPECT_NE(row_of(unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{3, 4}}), o), 0), row_of(a, 0));
  // ... nor on the number of threads the positions are spread over.
  o.seed = 123;
  const int threads = num_threads();
  set_num_threads(1);
  const Tensor one = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{3, 4}, {3, 4}}), o);
  set_num_threads(3);
  const Tensor three = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{3, 4}, {3, 4}}), o);
  set_num_threads(threads);
  EXPECT_EQ(row_of(one, 1), row_of(a, 1));
  EXPECT_EQ(row_of(three, 1), row_of(a, 1));
}

TEST(DreamSampler, SampledTokensFollowTemperatureTopPAndTopK) {
  // One new token from row 0 of the logits = log(.1 .2 .3 .4) (tokens 10..13), over many seeds.
  struct Case {
    float temperature, top_p;
    int64_t top_k;
    std::vector<double> want;
  };
  const std::vector<Case> cases = {
      {1.0f, 1.0f, 0, {0.1, 0.2, 0.3, 0.4}},
      {0.5f, 1.0f, 0, {0.01 / 0.3, 0.04 / 0.3, 0.09 / 0.3, 0.16 / 0.3}},
      {1.0f, 1.0f, 2, {0, 0, 0.3 / 0.7, 0.4 / 0.7}},
      {1.0f, 0.75f, 0, {0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9}},
      {1.0f, 0.35f, 0, {0, 0, 0, 1}},
  };
  for (const Case& c : cases) {
    FakeModel m;
    m.V = 16;
    m.rule = [](int64_t, int64_t, const int64_t*, int64_t, float* out) {
      put_dist(out, 16, {{10, 0.1}, {11, 0.2}, {12, 0.3}, {13, 0.4}});
    };
    UnmaskOptions o = dream_opts(1, 1);
    o.temperature = c.temperature;
    o.top_p = c.top_p;
    o.top_k = c.top_k;
    std::vector<int64_t> hits(4);
    const int n = 4000;
    for (int s = 0; s < n; ++s) {
      o.seed = uint64_t(s);
      const int64_t tok = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{1}}), o).data<int64_t>()[1];
      ASSERT_GE(tok, 10);
      ASSERT_LE(tok, 13);
      ++hits[size_t(tok - 10)];
    }
    for (int k = 0; k < 4; ++k)
      expect_frequency(hits[size_t(k)], n, c.want[size_t(k)],
                       "T=" + std::to_string(c.temperature) + " p=" + std::to_string(c.top_p) + " k=" +
                           std::to_string(c.top_k) + " token " + std::to_string(k));
  }
}

TEST(DreamSampler, OriginRevealsEachMaskWithTheTransferProbability) {
  FakeModel m;
  m.rule = dream_static(1, [](int64_t k) { return peaked(20 + k % 30, 0.9); });
  UnmaskOptions o = dream_opts(200, 4);
  o.alg = DreamAlg::Origin;
  auto per_step = [&](uint64_t seed) {
    o.seed = seed;
    std::vector<int64_t> r;
    const Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{5}}), o, [&](int, int, int64_t n, const Tensor&) { r.push_back(n); });
    EXPECT_EQ(count_of(row_of(out, 0), kMask), 0);
    return r;
  };
  const std::vector<int64_t> a = per_step(1);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a[3], 200);
  // t = (1, .75025, .5005, .25075, .001): p = .24975, .3329, .499, 1 per remaining mask.
  EXPECT_NEAR(double(a[0]), 200 * 0.24975, 5 * std::sqrt(200 * 0.25 * 0.75));
  EXPECT_NEAR(double(a[1] - a[0]), (200 - a[0]) * 0.3329, 5 * std::sqrt((200 - a[0]) * 0.3329 * 0.6671));
  EXPECT_NEAR(double(a[2] - a[1]), (200 - a[1]) * 0.499, 5 * std::sqrt((200 - a[1]) * 0.25));
  EXPECT_EQ(per_step(1), a);
  bool differs = false;
  for (uint64_t s = 2; s < 6; ++s) differs |= per_step(s) != a;
  EXPECT_TRUE(differs);
}

TEST(DreamSampler, AlgTempSamplesPositionsBySoftmaxOfConfidence) {
  const std::vector<double> conf = {0.9, 0.8, 0.5};
  auto first_revealed = [&](float alg_temp, uint64_t seed) {
    FakeModel m;
    m.rule = dream_static(1, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
    UnmaskOptions o = dream_opts(3, 3);
    o.tokens_per_step = 1;
    o.alg_temp = alg_temp;
    o.seed = seed;
    const Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{5}}), o);
    const auto sets = reveal_sets(m, out, kMask, 1);
    return *sets[0].begin();
  };
  for (uint64_t s = 0; s < 20; ++s) EXPECT_EQ(first_revealed(1e-6f, s), 0);  // tiny alg_temp: the top-k choice
  // softmax((.9 .8 .5) / 0.1) = (.7275 .2676 .0049): multinomial without replacement, first draw.
  std::vector<int64_t> hits(3);
  const int n = 3000;
  for (int s = 0; s < n; ++s) ++hits[size_t(first_revealed(0.1f, uint64_t(s)))];
  const double z = std::exp(9.0) + std::exp(8.0) + std::exp(5.0);
  expect_frequency(hits[0], n, std::exp(9.0) / z, "position 0");
  expect_frequency(hits[1], n, std::exp(8.0) / z, "position 1");
}

TEST(DreamSampler, ThresholdRevealsAllConfidentAtLeastOne) {
  const std::vector<double> conf = {0.95, 0.3, 0.92, 0.5, 0.4, 0.97};
  FakeModel m;
  m.rule = dream_static(1, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
  UnmaskOptions o = dream_opts(6, 1);
  o.threshold = 0.9f;
  o.alg = DreamAlg::Entropy;  // threshold mode compares probabilities whatever the alg
  Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{5}}), o);
  EXPECT_EQ(reveal_sets(m, out, kMask, 1), (std::vector<std::set<int64_t>>{{0, 2, 5}, {3}, {4}, {1}}));
  // Per block of 3: nothing of the second block is revealed while the first has masks.
  FakeModel mb;
  mb.rule = m.rule;
  o.block_length = 3;
  out = unmask_generate(UnmaskPolicy::Dream, mb.fn(), ids_tensor({{5}}), o);
  EXPECT_EQ(reveal_sets(mb, out, kMask, 1), (std::vector<std::set<int64_t>>{{0, 2}, {1}, {5}, {3}, {4}}));
  for (int64_t k = 0; k < 6; ++k) EXPECT_EQ(out.data<int64_t>()[1 + k], 20 + k);
}

TEST(DreamSampler, TokensPerStepRevealsAFixedNumber) {
  const std::vector<double> conf = {0.6, 0.9, 0.7, 0.95, 0.8};
  FakeModel m;
  m.rule = dream_static(1, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
  UnmaskOptions o = dream_opts(5, 1);
  o.tokens_per_step = 2;
  int last_total = 0;
  Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{5}}), o, [&](int, int total, int64_t, const Tensor&) { last_total = total; });
  EXPECT_EQ(reveal_sets(m, out, kMask, 1), (std::vector<std::set<int64_t>>{{1, 3}, {2, 4}, {0}}));
  EXPECT_EQ(last_total, 3);
}

TEST(DreamSampler, BlocksAreDecodedInOrderWithTheirOwnSchedule) {
  const std::vector<double> conf = {0.5, 0.9, 0.3, 0.7, 0.95, 0.6, 0.4, 0.8};
  FakeModel m;
  m.rule = dream_static(1, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
  UnmaskOptions o = dream_opts(8, 4);
  o.block_length = 4;  // 2 steps per block on linspace(1, eps, 3): 4 masks -> 1, then 3
  Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{5}}), o);
  EXPECT_EQ(reveal_sets(m, out, kMask, 1), (std::vector<std::set<int64_t>>{{1}, {0, 2, 3}, {4}, {5, 6, 7}}));
}

TEST(DreamSampler, StepEdges) {
  const std::vector<double> conf = {0.5, 0.9, 0.3};
  // steps == 1: everything in one forward pass.
  FakeModel m1;
  m1.rule = dream_static(1, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
  Tensor out = unmask_generate(UnmaskPolicy::Dream, m1.fn(), ids_tensor({{5}}), dream_opts(3, 1));
  EXPECT_EQ(reveal_sets(m1, out, kMask, 1), (std::vector<std::set<int64_t>>{{0, 1, 2}}));
  // steps > masks: the schedule (7 masks, 100 steps) reveals nothing for 94 steps, then 1,1,1,1,1,2; the
  // callback still sees every step.
  FakeModel m2;
  m2.rule = dream_static(1, [](int64_t k) { return peaked(20 + k, 0.9 - 0.1 * double(k)); });
  int steps_seen = 0;
  int64_t last = -1;
  out = unmask_generate(UnmaskPolicy::Dream, m2.fn(), ids_tensor({{5}}), dream_opts(7, 100), [&](int, int, int64_t r, const Tensor&) {
    ++steps_seen;
    last = r;
  });
  EXPECT_EQ(steps_seen, 100);
  EXPECT_EQ(last, 7);
  EXPECT_EQ(m2.ids_seen.size(), 6u);
  EXPECT_EQ(reveal_sets(m2, out, kMask, 1), (std::vector<std::set<int64_t>>{{0}, {1}, {2}, {3}, {4}, {5, 6}}));
}

TEST(DreamSampler, LeftPaddingAndPromptMasks) {
  FakeModel m;
  m.rule = dream_static(3, [](int64_t k) { return peaked(20 + k, 0.9); });
  UnmaskOptions o = dream_opts(3, 3);
  // Row 0 is left-padded with the mask id itself: padding is never revealed.
  o.prompt_mask = Tensor::zeros(DType::U8, {2, 3});
  const uint8_t pm[] = {0, 0, 1, 1, 1, 1};
  std::copy(pm, pm + 6, o.prompt_mask.data<uint8_t>());
  Tensor out = unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{kMask, kMask, 7}, {3, 4, 7}}), o);
  EXPECT_EQ(row_of(out, 0), (std::vector<int64_t>{kMask, kMask, 7, 20, 21, 22}));
  EXPECT_EQ(row_of(out, 1), (std::vector<int64_t>{3, 4, 7, 20, 21, 22}));
  ASSERT_FALSE(m.masks_seen.empty());
  for (const Tensor& km : m.masks_seen) {
    ASSERT_TRUE(km.defined());
    const std::vector<uint8_t> want = {0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    EXPECT_EQ(std::vector<uint8_t>(km.data<uint8_t>(), km.data<uint8_t>() + 12), want);
  }
  // A [MASK] inside a valid prompt is filled (infilling) without blocks, and left alone with blocks.
  FakeModel mi;
  mi.rule = [](int64_t, int64_t pos, const int64_t*, int64_t, float* out) { put_dist(out, kV, {{30 + pos, 0.9}, {1, 0.1}}); };
  out = unmask_generate(UnmaskPolicy::Dream, mi.fn(), ids_tensor({{5, kMask, 7}}), dream_opts(2, 2));
  EXPECT_EQ(row_of(out, 0), (std::vector<int64_t>{5, 30, 7, 32, 33}));
  UnmaskOptions ob = dream_opts(2, 2);
  ob.block_length = 2;
  out = unmask_generate(UnmaskPolicy::Dream, mi.fn(), ids_tensor({{5, kMask, 7}}), ob);
  EXPECT_EQ(row_of(out, 0), (std::vector<int64_t>{5, kMask, 7, 32, 33}));
}

TEST(DreamSampler, NeverEmitsMaskOrSuppressedTokens) {
  FakeModel m;
  m.rule = [](int64_t, int64_t, const int64_t*, int64_t, float* out) {
    std::fill(out, out + kV, kNeg);
    out[kMask] = 5.0f;
    out[3] = 4.0f;
    out[1] = 3.0f;
  };
  UnmaskOptions o = dream_opts(2, 2);
  EXPECT_EQ(row_of(unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{9}}), o), 0), (std::vector<int64_t>{9, 3, 3}));
  o.suppress_token_ids = {3};
  EXPECT_EQ(row_of(unmask_generate(UnmaskPolicy::Dream, m.fn(), ids_tensor({{9}}), o), 0), (std::vector<int64_t>{9, 1, 1}));
}

TEST(DreamSampler, RowCallbackGetsOnlyTheShiftedRowsOfMaskedPositions) {
  for (int64_t block_length : {int64_t(0), int64_t(4)}) {
    FakeModel full, rows;
    full.rule = rows.rule = [](int64_t, int64_t pos, const int64_t* row, int64_t L, float* out) {
      hashed_rule(row, L, pos, out, kV);
    };
    UnmaskOptions o = dream_opts(8, 8);
    o.temperature = 0.8f;
    o.seed = 4;
    o.block_length = block_length;
    const Tensor prompt = ids_tensor({{3, 4}, {5, 6}});
    const Tensor a = unmask_generate(UnmaskPolicy::Dream, full.fn(), prompt, o);
    const Tensor b = unmask_generate(UnmaskPolicy::Dream, rows.row_fn(), prompt, o);
    EXPECT_EQ(row_of(a, 0), row_of(b, 0));
    EXPECT_EQ(row_of(a, 1), row_of(b, 1));
    ASSERT_EQ(rows.rows_seen.size(), full.ids_seen.size());
    const int64_t L = 10;
    for (size_t c = 0; c < rows.rows_seen.size(); ++c) {
      // Block k is current while it has masks; the rows read are those of p - 1 for its masked p.
      std::set<int64_t> want;
      for (int64_t bi = 0; bi < 2; ++bi) {
        const auto r = row_of(rows.ids_seen[c], bi);
        int64_t lo = 0, hi = L;
        if (block_length > 0) {
          lo = 2;
          while (std::count(r.begin() + lo, r.begin() + lo + block_length, kMask) == 0) lo += block_length;
          hi = lo + block_length;
        }
        for (int64_t p = lo; p < hi; ++p)
          if (r[size_t(p)] == kMask) want.insert(bi * L + p - 1);
      }
      EXPECT_EQ(rows.rows_seen[c], std::vector<int64_t>(want.begin(), want.end())) << "call " << c;
    }
  }
}

TEST(DreamSampler, InvalidOptionsNameTheOption) {
  FakeModel m;
  m.rule = [](int64_t, int64_t, const int64_t*, int64_t, float* out) { put_dist(out, kV, {{1, 1.0}}); };
  const Tensor prompt = ids_tensor({{1, 2}});
  auto with = [&](std::function<void(UnmaskOptions&)> edit, const std::string& needle) {
    UnmaskOptions o = dream_opts(8, 8);
    edit(o);
    expect_error([&] { unmask_generate(UnmaskPolicy::Dream, m.fn(), prompt, o); }, needle);
  };
  with([](UnmaskOptions& o) { o.max_new_tokens = 0; }, "max_new_tokens");
  with([](UnmaskOptions& o) { o.steps = 0; }, "steps");
  with([](UnmaskOptions& o) { o.eps = 0; }, "eps");
  with([](UnmaskOptions& o) { o.eps = 1; }, "eps");
  expect_error([] { parse_dream_alg("greedy"); }, "alg");
  with([](UnmaskOptions& o) { o.alg_temp = -1; }, "alg_temp");
  with([](UnmaskOptions& o) { o.temperature = -0.5f; }, "temperature");
  with([](UnmaskOptions& o) { o.temperature = NAN; }, "temperature");
  with([](UnmaskOptions& o) { o.top_p = 0; }, "top_p");
  with([](UnmaskOptions& o) { o.top_p = 1.5f; }, "top_p");
  with([](UnmaskOptions& o) { o.top_k = -1; }, "top_k");
  with([](UnmaskOptions& o) { o.mask_token_id = -1; }, "mask_token_id");
  with([](UnmaskOptions& o) { o.block_length = -2; }, "block_length");
  with([](UnmaskOptions& o) { o.block_length = 3; }, "block_length (3) must divide max_new_tokens (8)");
  with([](UnmaskOptions& o) { o.block_length = 2, o.steps = 6; }, "steps (6) must be divisible by the number of blocks (4");
  with([](UnmaskOptions& o) { o.threshold = 1.5f; }, "threshold");
  with([](UnmaskOptions& o) { o.tokens_per_step = -1; }, "tokens_per_step");
  with([](UnmaskOptions& o) { o.threshold = 0.9f, o.tokens_per_step = 2; }, "threshold and tokens_per_step");
  with([](UnmaskOptions& o) { o.alg = DreamAlg::Origin, o.threshold = 0.9f; }, "origin");
  UnmaskOptions ok = dream_opts(8, 8);
  ok.block_length = 2, ok.steps = 6, ok.threshold = 0.9f;  // steps are not used in threshold mode
  EXPECT_NO_THROW(unmask_generate(UnmaskPolicy::Dream, m.fn(), prompt, ok));
  expect_error([&] { unmask_generate(UnmaskPolicy::Dream, m.fn(), Tensor::zeros(DType::I32, {1, 2}), dream_opts(8, 8)); }, "prompt ids");
  LogitsFn wrong = [](const Tensor& ids, const Tensor&) { return Tensor::zeros(DType::F32, {ids.dim(0), 3, kV}); };
  expect_error([&] { unmask_generate(UnmaskPolicy::Dream, wrong, prompt, dream_opts(8, 8)); }, "logits callback");
}

// ---- LLaDA ----

UnmaskOptions llada_opts(int64_t gen, int64_t block, int steps) {
  UnmaskOptions o;
  o.max_new_tokens = gen;
  o.block_length = block;
  o.steps = steps;
  o.mask_token_id = kMask;
  return o;
}

// LLaDA has no shift: the distribution for position q is in logits row q.
Rule llada_static(int64_t P, std::function<std::vector<std::pair<int64_t, double>>(int64_t k)> dist_of_new) {
  return [=](int64_t, int64_t pos, const int64_t*, int64_t, float* out) {
    if (pos >= P) put_dist(out, kV, dist_of_new(pos - P));
    else put_dist(out, kV, {{5, 1.0}});
  };
}

TEST(LladaSampler, TransferScheduleSpreadsRemainderToFirstSteps) {
  EXPECT_EQ(llada_transfer_schedule(7, 3), (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(llada_transfer_schedule(10, 4), (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(llada_transfer_schedule(4, 8), (std::vector<int64_t>{1, 1, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(llada_transfer_schedule(32, 32), std::vector<int64_t>(32, 1));
  EXPECT_EQ(llada_transfer_schedule(0, 3), (std::vector<int64_t>{0, 0, 0}));
}

TEST(LladaSampler, LogitsAreNotShifted) {
  FakeModel m;
  m.rule = [](int64_t, int64_t pos, const int64_t*, int64_t, float* out) { put_dist(out, kV, {{10 + pos, 0.9}, {1, 0.1}}); };
  const Tensor out = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{7, 8, 9}}), llada_opts(4, 0, 4));
  EXPECT_EQ(row_of(out, 0), (std::vector<int64_t>{7, 8, 9, 13, 14, 15, 16}));
}

TEST(LladaSampler, BlocksNeverLeakAndFollowTheSchedule) {
  // gen 12 in blocks of 4, 6 steps: 2 steps per block revealing 2 + 2, for every sampling configuration.
  for (const char* remasking : {"low_confidence", "random"})
    for (float temperature : {0.0f, 0.7f}) {
      FakeModel m;
      m.rule = [](int64_t, int64_t pos, const int64_t* row, int64_t L, float* out) { hashed_rule(row, L, pos, out, kV); };
      UnmaskOptions o = llada_opts(12, 4, 6);
      o.remasking = parse_remasking(remasking);
      o.temperature = temperature;
      o.seed = 5;
      const int64_t P = 2;
      const Tensor out = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{3, 4}}), o);
      ASSERT_EQ(m.ids_seen.size(), 6u);
      for (size_t c = 0; c < 6; ++c) {
        const auto row = row_of(m.ids_seen[c], 0);
        const int64_t blk = int64_t(c) / 2;
        for (int64_t k = 0; k < 12; ++k) {
          const bool masked = row[size_t(P + k)] == kMask;
          if (k / 4 < blk) {
            EXPECT_FALSE(masked) << "earlier block, call " << c;
          }
          if (k / 4 > blk) {
            EXPECT_TRUE(masked) << "later block, call " << c;
          }
        }
        EXPECT_EQ(count_of(std::vector<int64_t>(row.begin() + P + blk * 4, row.begin() + P + blk * 4 + 4), kMask),
                  4 - 2 * int64_t(c % 2))
            << remasking << " T=" << temperature << " call " << c;
      }
      EXPECT_EQ(count_of(row_of(out, 0), kMask), 0);
    }
}

TEST(LladaSampler, LowConfidenceRevealsMostProbableOfTheBlockFirst) {
  const std::vector<double> conf = {0.5, 0.9, 0.3, 0.95, 0.6, 0.4};
  FakeModel m;
  m.rule = llada_static(1, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
  const Tensor out = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{5}}), llada_opts(6, 3, 6));
  // Position 3 (.95) waits for the first block to finish.
  EXPECT_EQ(reveal_sets(m, out, kMask, 1), (std::vector<std::set<int64_t>>{{1}, {0}, {2}, {3}, {4}, {5}}));
  for (int64_t k = 0; k < 6; ++k) EXPECT_EQ(out.data<int64_t>()[1 + k], 20 + k);
}

TEST(LladaSampler, StepEdges) {
  const auto rule = llada_static(1, [](int64_t k) { return peaked(20 + k, 0.9 - 0.05 * double(k)); });
  // Remainders: 7 masks in 3 steps reveal 3, 2, 2.
  FakeModel a;
  a.rule = rule;
  Tensor out = unmask_generate(UnmaskPolicy::Llada, a.fn(), ids_tensor({{5}}), llada_opts(7, 0, 3));
  EXPECT_EQ(reveal_sets(a, out, kMask, 1), (std::vector<std::set<int64_t>>{{0, 1, 2}, {3, 4}, {5, 6}}));
  // steps == gen_length: one per step; steps == 1: all at once.
  FakeModel b;
  b.rule = rule;
  out = unmask_generate(UnmaskPolicy::Llada, b.fn(), ids_tensor({{5}}), llada_opts(4, 0, 4));
  EXPECT_EQ(reveal_sets(b, out, kMask, 1), (std::vector<std::set<int64_t>>{{0}, {1}, {2}, {3}}));
  FakeModel c;
  c.rule = rule;
  out = unmask_generate(UnmaskPolicy::Llada, c.fn(), ids_tensor({{5}}), llada_opts(4, 0, 1));
  EXPECT_EQ(reveal_sets(c, out, kMask, 1), (std::vector<std::set<int64_t>>{{0, 1, 2, 3}}));
  // More steps than masks: the empty steps run no forward pass but are reported.
  FakeModel d;
  d.rule = rule;
  std::vector<int64_t> revealed;
  out = unmask_generate(UnmaskPolicy::Llada, d.fn(), ids_tensor({{5}}), llada_opts(4, 2, 8),
                       [&](int, int total, int64_t r, const Tensor&) {
                         EXPECT_EQ(total, 8);
                         revealed.push_back(r);
                       });
  EXPECT_EQ(revealed, (std::vector<int64_t>{1, 2, 2, 2, 3, 4, 4, 4}));
  EXPECT_EQ(d.ids_seen.size(), 4u);
}

TEST(LladaSampler, GumbelSamplingFollowsSoftmaxOverTemperature) {
  for (float T : {1.0f, 0.5f}) {
    FakeModel m;
    m.V = 16;
    m.rule = [](int64_t, int64_t, const int64_t*, int64_t, float* out) {
      put_dist(out, 16, {{10, 0.1}, {11, 0.2}, {12, 0.3}, {13, 0.4}});
    };
    UnmaskOptions o = llada_opts(1, 0, 1);
    o.temperature = T;
    std::vector<int64_t> hits(4);
    const int n = 4000;
    for (int s = 0; s < n; ++s) {
      o.seed = uint64_t(s);
      const int64_t tok = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{1}}), o).data<int64_t>()[1];
      ASSERT_GE(tok, 10);
      ASSERT_LE(tok, 13);
      ++hits[size_t(tok - 10)];
    }
    double z = 0;
    for (double p : {0.1, 0.2, 0.3, 0.4}) z += std::pow(p, 1.0 / T);
    const double p[] = {0.1, 0.2, 0.3, 0.4};
    for (int k = 0; k < 4; ++k) expect_frequency(hits[size_t(k)], n, std::pow(p[k], 1.0 / T) / z, "T " + std::to_string(T));
  }
}

TEST(LladaSampler, DeterminismSeedsAndRows) {
  FakeModel m;
  m.rule = [](int64_t, int64_t pos, const int64_t* row, int64_t L, float* out) { hashed_rule(row, L, pos, out, kV); };
  UnmaskOptions o = llada_opts(16, 8, 8);
  o.seed = 1;
  const Tensor g1 = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{3, 4}}), o);
  o.seed = 2;
  EXPECT_EQ(row_of(unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{3, 4}}), o), 0), row_of(g1, 0));  // greedy: seed unused
  o.temperature = 1.0f;
  o.seed = 9;
  const Tensor a = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{3, 4}, {3, 4}}), o);
  EXPECT_EQ(row_of(unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{3, 4}, {3, 4}}), o), 1), row_of(a, 1));
  EXPECT_NE(row_of(a, 0), row_of(a, 1));
  EXPECT_EQ(row_of(unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{3, 4}}), o), 0), row_of(a, 0));
  o.seed = 10;
  EXPECT_NE(row_of(unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{3, 4}}), o), 0), row_of(a, 0));
}

TEST(LladaSampler, RandomRemaskingOrderDependsOnTheSeedOnly) {
  const std::vector<double> conf = {0.5, 0.9, 0.3, 0.95, 0.6, 0.4, 0.7, 0.8};
  std::set<int64_t> firsts_random, firsts_conf;
  for (uint64_t s = 0; s < 20; ++s)
    for (const char* remasking : {"random", "low_confidence"}) {
      FakeModel m;
      m.rule = llada_static(1, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
      UnmaskOptions o = llada_opts(8, 0, 8);
      o.remasking = parse_remasking(remasking);
      o.seed = s;
      const Tensor out = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{5}}), o);
      const auto sets = reveal_sets(m, out, kMask, 1);
      ASSERT_EQ(sets.size(), 8u);
      for (const auto& st : sets) EXPECT_EQ(st.size(), 1u);
      (std::string(remasking) == "random" ? firsts_random : firsts_conf).insert(*sets[0].begin());
      for (int64_t k = 0; k < 8; ++k) EXPECT_EQ(out.data<int64_t>()[1 + k], 20 + k);  // tokens stay greedy
    }
  EXPECT_EQ(firsts_conf, (std::set<int64_t>{3}));
  EXPECT_GE(firsts_random.size(), 4u);
}

TEST(LladaSampler, ClassifierFreeGuidance) {
  // The unconditional rows are those whose prompt is masked. Position a: cond = uncond = (2, 0, 0);
  // position b: cond (1.5, 0, 0), uncond (0, 0, 0). Without CFG a is more confident (.787 vs .691); with
  // scale 1, b's logits become (3, 0, 0) (.909) and b goes first.
  auto run = [](float scale, FakeModel& m) {
    m.V = 3;
    m.rule = [](int64_t, int64_t pos, const int64_t* row, int64_t, float* out) {
      const bool uncond = row[0] == kMask;
      const float a[] = {2, 0, 0}, bc[] = {1.5f, 0, 0}, bu[] = {0, 0, 0}, other[] = {0, 0, 0};
      const float* src = pos == 1 ? a : pos == 2 ? (uncond ? bu : bc) : other;
      std::copy(src, src + 3, out);
    };
    UnmaskOptions o = llada_opts(2, 0, 2);
    o.cfg_scale = scale;
    o.prompt_mask = Tensor::zeros(DType::U8, {1, 1});
    o.prompt_mask.data<uint8_t>()[0] = 1;
    return unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{2}}), o);
  };
  FakeModel plain, guided;
  Tensor out = run(0.0f, plain);
  EXPECT_EQ(reveal_sets(plain, out, kMask, 1), (std::vector<std::set<int64_t>>{{0}, {1}}));
  EXPECT_EQ(plain.ids_seen[0].dim(0), 1);
  out = run(1.0f, guided);
  EXPECT_EQ(reveal_sets(guided, out, kMask, 1), (std::vector<std::set<int64_t>>{{1}, {0}}));
  // One call of 2B rows: x, then x with the prompt masked; the key mask is stacked the same way.
  ASSERT_EQ(guided.ids_seen.size(), 2u);
  EXPECT_EQ(guided.ids_seen[1].dim(0), 2);
  EXPECT_EQ(row_of(guided.ids_seen[1], 0), (std::vector<int64_t>{2, kMask, 0}));
  EXPECT_EQ(row_of(guided.ids_seen[1], 1), (std::vector<int64_t>{kMask, kMask, 0}));
  ASSERT_TRUE(guided.masks_seen[1].defined());
  EXPECT_EQ(guided.masks_seen[1].shape(), (Shape{2, 3}));
  // The guided token: cond (1, 0, 1.1), uncond (0, 0, 1.5): argmax 2 without CFG, 0 with scale 1 (2, 0, .7).
  for (float scale : {0.0f, 1.0f}) {
    FakeModel m;
    m.V = 3;
    m.rule = [](int64_t, int64_t, const int64_t* row, int64_t, float* out) {
      const float c[] = {1, 0, 1.1f}, u[] = {0, 0, 1.5f};
      std::copy(row[0] == kMask ? u : c, (row[0] == kMask ? u : c) + 3, out);
    };
    UnmaskOptions o = llada_opts(1, 0, 1);
    o.cfg_scale = scale;
    EXPECT_EQ(unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{2}}), o).data<int64_t>()[1], scale > 0 ? 0 : 2);
  }
}

TEST(LladaSampler, ThresholdAndTokensPerStep) {
  const std::vector<double> conf = {0.95, 0.3, 0.92, 0.5, 0.4, 0.97};
  FakeModel m;
  m.rule = llada_static(1, [&](int64_t k) { return peaked(20 + k, conf[size_t(k)]); });
  UnmaskOptions o = llada_opts(6, 3, 1);
  o.threshold = 0.9f;
  Tensor out = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{5}}), o);
  EXPECT_EQ(reveal_sets(m, out, kMask, 1), (std::vector<std::set<int64_t>>{{0, 2}, {1}, {5}, {3}, {4}}));
  FakeModel f;
  f.rule = m.rule;
  UnmaskOptions t = llada_opts(6, 0, 1);
  t.tokens_per_step = 4;
  out = unmask_generate(UnmaskPolicy::Llada, f.fn(), ids_tensor({{5}}), t);
  EXPECT_EQ(reveal_sets(f, out, kMask, 1), (std::vector<std::set<int64_t>>{{0, 2, 3, 5}, {1, 4}}));
}

TEST(LladaSampler, PaddingSuppressionAndMask) {
  FakeModel m;
  m.rule = [](int64_t, int64_t, const int64_t*, int64_t, float* out) {
    std::fill(out, out + kV, kNeg);
    out[kMask] = 5.0f;
    out[3] = 4.0f;
    out[1] = 3.0f;
  };
  UnmaskOptions o = llada_opts(2, 0, 2);
  o.prompt_mask = Tensor::zeros(DType::U8, {2, 2});
  const uint8_t pm[] = {0, 1, 1, 1};
  std::copy(pm, pm + 4, o.prompt_mask.data<uint8_t>());
  Tensor out = unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{0, 9}, {8, 9}}), o);
  EXPECT_EQ(row_of(out, 0), (std::vector<int64_t>{0, 9, 3, 3}));  // never [MASK]
  EXPECT_EQ(row_of(out, 1), (std::vector<int64_t>{8, 9, 3, 3}));
  const std::vector<uint8_t> want = {0, 1, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(std::vector<uint8_t>(m.masks_seen[0].data<uint8_t>(), m.masks_seen[0].data<uint8_t>() + 8), want);
  o.suppress_token_ids = {3};  // the reference's logits_eos_inf, for any id
  EXPECT_EQ(row_of(unmask_generate(UnmaskPolicy::Llada, m.fn(), ids_tensor({{0, 9}, {8, 9}}), o), 1), (std::vector<int64_t>{8, 9, 1, 1}));
}

TEST(LladaSampler, RowCallbackGetsOnlyTheBlockRows) {
  for (float cfg : {0.0f, 2.0f}) {
    FakeModel full, rows;
    full.rule = rows.rule = [](int64_t, int64_t pos, const int64_t* row, int64_t L, float* out) {
      hashed_rule(row, L, pos, out, kV);
    };
    UnmaskOptions o = llada_opts(8, 4, 4);
    o.temperature = 0.8f;
    o.cfg_scale = cfg;
    o.seed = 4;
    const Tensor prompt = ids_tensor({{3, 4}, {5, 6}});
    const Tensor a = unmask_generate(UnmaskPolicy::Llada, full.fn(), prompt, o);
    const Tensor b = unmask_generate(UnmaskPolicy::Llada, rows.row_fn(), prompt, o);
    EXPECT_EQ(row_of(a, 0), row_of(b, 0));
    EXPECT_EQ(row_of(a, 1), row_of(b, 1));
    ASSERT_EQ(rows.rows_seen.size(), 4u);
    const int64_t L = 10, B = 2;
    for (size_t c = 0; c < 4; ++c) {
      const int64_t lo = 2 + int64_t(c) / 2 * 4;  // 2 steps per block
      std::set<int64_t> want;
      for (int64_t bi = 0; bi < B; ++bi) {
        const auto r = row_of(rows.ids_seen[c], bi);
        for (int64_t p = lo; p < lo + 4; ++p)
          if (r[size_t(p)] == kMask) {
            want.insert(bi * L + p);
            if (cfg > 0) want.insert((B + bi) * L + p);  // the unconditional half
          }
      }
      EXPECT_EQ(rows.rows_seen[c], std::vector<int64_t>(want.begin(), want.end())) << "cfg " << cfg << " call " << c;
    }
  }
}

TEST(LladaSampler, InvalidOptionsNameTheOption) {
  FakeModel m;
  m.rule = [](int64_t, int64_t, const int64_t*, int64_t, float* out) { put_dist(out, kV, {{1, 1.0}}); };
  const Tensor prompt = ids_tensor({{1, 2}});
  auto with = [&](std::function<void(UnmaskOptions&)> edit, const std::string& needle) {
    UnmaskOptions o = llada_opts(8, 4, 8);
    edit(o);
    expect_error([&] { unmask_generate(UnmaskPolicy::Llada, m.fn(), prompt, o); }, needle);
  };
  with([](UnmaskOptions& o) { o.max_new_tokens = 0; }, "max_new_tokens");
  with([](UnmaskOptions& o) { o.block_length = -1; }, "block_length");
  with([](UnmaskOptions& o) { o.block_length = 3; }, "block_length (3) must divide max_new_tokens (8)");
  with([](UnmaskOptions& o) { o.steps = 0; }, "steps");
  with([](UnmaskOptions& o) { o.steps = 5; }, "steps (5) must be divisible by the number of blocks (2");
  with([](UnmaskOptions& o) { o.temperature = -1; }, "temperature");
  with([](UnmaskOptions& o) { o.cfg_scale = -1; }, "cfg_scale");
  expect_error([] { parse_remasking("lowest"); }, "remasking");
  with([](UnmaskOptions& o) { o.mask_token_id = -5; }, "mask_token_id");
  with([](UnmaskOptions& o) { o.threshold = -0.1f; }, "threshold");
  with([](UnmaskOptions& o) { o.tokens_per_step = -1; }, "tokens_per_step");
  with([](UnmaskOptions& o) { o.threshold = 0.9f, o.tokens_per_step = 1; }, "threshold and tokens_per_step");
  with([](UnmaskOptions& o) { o.threshold = 0.9f, o.remasking = Remasking::Random; }, "remasking");
  with([](UnmaskOptions& o) { o.prompt_mask = Tensor::zeros(DType::U8, {1, 3}); }, "prompt_mask");
  UnmaskOptions ok = llada_opts(8, 4, 5);
  ok.tokens_per_step = 3;  // steps are not used when tokens_per_step is set
  EXPECT_NO_THROW(unmask_generate(UnmaskPolicy::Llada, m.fn(), prompt, ok));
  LogitsFn wrong = [](const Tensor& ids, const Tensor&) { return Tensor::zeros(DType::F32, {ids.dim(0) + 1, ids.dim(1), 4}); };
  expect_error([&] { unmask_generate(UnmaskPolicy::Llada, wrong, prompt, llada_opts(8, 4, 8)); }, "logits callback");
}

}  // namespace
}  // namespace dlx
