// Shared pieces of the sampler tests (tests/engine/*_sampler_test.cc, sampling_test.cc): fake logits models
// whose outcome is known, distributions, tensors and the expectations they share.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/sampling.h"
#include "engine/unmask.h"

namespace dlx::sampler_test {

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
inline void put_dist(float* out, int64_t V, const std::vector<std::pair<int64_t, double>>& dist) {
  std::fill(out, out + V, kNeg);
  for (auto [tok, p] : dist) out[tok] = float(std::log(p));
}

// Every row: [MASK] most likely, then token 3, then token 1 (the samplers must never emit the mask).
inline void prefers_mask_then_3_then_1(int64_t, int64_t, const int64_t*, int64_t, float* out) {
  std::fill(out, out + kV, kNeg);
  out[kMask] = 5.0f;
  out[3] = 4.0f;
  out[1] = 3.0f;
}

// Token `tok` with probability p and four others (ids 1..4) sharing the rest: maskgit confidence p.
inline std::vector<std::pair<int64_t, double>> peaked(int64_t tok, double p) {
  return {{tok, p}, {1, (1 - p) / 4}, {2, (1 - p) / 4}, {3, (1 - p) / 4}, {4, (1 - p) / 4}};
}

// Logits that depend on the whole row (so every reveal changes later steps) and look random.
inline void hashed_rule(const int64_t* row, int64_t L, int64_t pos, float* out, int64_t V) {
  uint64_t h = 0x12345 + uint64_t(pos) * 1000003ull;
  for (int64_t i = 0; i < L; ++i) h = h * 0x100000001b3ull ^ uint64_t(row[i]);
  for (int64_t v = 0; v < V; ++v) {
    uint64_t z = h + uint64_t(v) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 29)) * 0xbf58476d1ce4e5b9ull;
    z ^= z >> 32;
    out[v] = float(z >> 40) / float(1 << 24) * 4.0f;  // uniform in [0, 4)
  }
}

inline Tensor ids_tensor(const std::vector<std::vector<int64_t>>& rows) {
  const int64_t B = int64_t(rows.size()), P = int64_t(rows[0].size());
  Tensor t = Tensor::zeros(DType::I64, {B, P});
  for (int64_t b = 0; b < B; ++b) std::copy(rows[b].begin(), rows[b].end(), t.data<int64_t>() + b * P);
  return t;
}

inline std::vector<int64_t> row_of(const Tensor& t, int64_t b) {
  const int64_t L = t.dim(1);
  return std::vector<int64_t>(t.data<int64_t>() + b * L, t.data<int64_t>() + (b + 1) * L);
}

// Positions (relative to `offset`) masked in `before` and not in `after`, for one row.
inline std::set<int64_t> revealed_between(const Tensor& before, const Tensor& after, int64_t mask, int64_t offset,
                                   int64_t b = 0) {
  std::set<int64_t> out;
  const auto x = row_of(before, b), y = row_of(after, b);
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] == mask && y[i] != mask) out.insert(int64_t(i) - offset);
  return out;
}

// The reveal sets of each forward pass: snapshots are the ids of each call, then the final output.
inline std::vector<std::set<int64_t>> reveal_sets(const FakeModel& m, const Tensor& out, int64_t mask, int64_t offset,
                                           int64_t b = 0) {
  std::vector<std::set<int64_t>> sets;
  for (size_t c = 0; c < m.ids_seen.size(); ++c)
    sets.push_back(revealed_between(m.ids_seen[c], c + 1 < m.ids_seen.size() ? m.ids_seen[c + 1] : out, mask,
                                    offset, b));
  return sets;
}

inline int64_t count_of(const std::vector<int64_t>& v, int64_t x) { return int64_t(std::count(v.begin(), v.end(), x)); }

// |freq - p| within 5 standard deviations of a binomial proportion (plus a little slack).
inline void expect_frequency(int64_t hits, int64_t n, double p, const std::string& what) {
  const double f = double(hits) / double(n), tol = 5 * std::sqrt(p * (1 - p) / double(n)) + 2e-3;
  EXPECT_NEAR(f, p, tol) << what;
}

template <typename F>
inline void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}


// One new token after the prompt {1}, with seeds 0..n-1, from a model whose every row is the distribution
// 0.1, 0.2, 0.3, 0.4 over tokens 10..13: how often each of the four came (any other token fails the test).
inline std::vector<int64_t> four_token_counts(UnmaskPolicy policy, UnmaskOptions o, int n) {
  FakeModel m;
  m.V = 16;
  m.rule = [](int64_t, int64_t, const int64_t*, int64_t, float* out) {
    put_dist(out, 16, {{10, 0.1}, {11, 0.2}, {12, 0.3}, {13, 0.4}});
  };
  std::vector<int64_t> hits(4);
  for (int s = 0; s < n; ++s) {
    o.seed = uint64_t(s);
    const int64_t tok = unmask_generate(policy, m.fn(), ids_tensor({{1}}), o).data<int64_t>()[1];
    if (tok < 10 || tok > 13) {
      ADD_FAILURE() << "seed " << s << " gave token " << tok << ", outside 10..13";
      return hits;
    }
    ++hits[size_t(tok - 10)];
  }
  return hits;
}

}  // namespace dlx::sampler_test
