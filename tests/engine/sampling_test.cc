// engine/sampling.h: the one-row helpers of the samplers (softmax, filters, draws, confidences, position selection,
// stop-token truncation) against plain references and hand-computed values.
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
#include "core/rng.h"
#include "engine/sampling.h"
#include "sampler_test_util.h"

namespace dlx {
namespace {

using namespace sampler_test;

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

}  // namespace
}  // namespace dlx
