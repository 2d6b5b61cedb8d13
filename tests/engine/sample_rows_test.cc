// The backend row ops the samplers use (gather_rows, sample_rows, and the row ops beside them: silu_mul_fused,
// split_columns) on every backend (tests/engine/backends.h) against plain references written here (full sorts,
// no quickselect), on fresh random rows rounded to bf16 (what a GPU holds) with the seed in every failure; and the
// samplers through backend_row_sampler giving the same tokens as through host logits callbacks.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>

#include <fmt/format.h>

#include "core/error.h"
#include "engine/unmask.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/model.h"
#include "backends.h"
#include "../test_util.h"

namespace dlx {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The Dream row pipeline written out plainly: full sort for top-p and top-k, double softmax. filtered() gives
// the distribution of a row (and its order, largest first, ties by index), choose() the draw with uniform u.
struct RefRow {
  std::vector<double> p;   // the distribution in double
  std::vector<float> pf;   // as the samplers hold it (engine/sampling.h softmax): float exp, double sum, float
  int64_t argmax;
};
RefRow reference_dream_row(std::vector<float> x, const RowSampling& how) {
  const int64_t V = int64_t(x.size());
  for (int64_t id : how.suppress)
    if (id >= 0 && id < V) x[size_t(id)] = kNegInf;
  if (how.temperature > 0)
    for (float& v : x) v /= how.temperature;
  int64_t first_max = 0;
  for (int64_t i = 1; i < V; ++i)
    if (x[size_t(i)] > x[size_t(first_max)]) first_max = i;
  const float m = x[size_t(first_max)];
  if (how.top_p < 1) {
    std::vector<int64_t> order(static_cast<size_t>(V), 0);
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[size_t(a)] > x[size_t(b)]; });
    double total = 0;
    for (float v : x) total += std::exp(v - m);
    double acc = 0;
    size_t cut = order.size();
    for (size_t j = 0; j < order.size(); ++j) {
      acc += std::exp(x[size_t(order[j])] - m);
      if (acc > how.top_p * total) {
        cut = j + 1;
        break;
      }
    }
    for (size_t j = cut; j < order.size(); ++j) x[size_t(order[j])] = kNegInf;
  }
  if (how.top_k > 0 && how.top_k < V) {
    std::vector<float> sorted = x;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    const float kth = sorted[size_t(how.top_k - 1)];
    for (float& v : x)
      if (v < kth) v = kNegInf;
  }
  RefRow r{std::vector<double>(static_cast<size_t>(V)), std::vector<float>(static_cast<size_t>(V)), first_max};
  double sum = 0, sum_f = 0;
  for (int64_t i = 0; i < V; ++i) {
    sum += r.p[size_t(i)] = std::exp(double(x[size_t(i)]) - double(m));
    sum_f += r.pf[size_t(i)] = std::exp(x[size_t(i)] - m);
  }
  for (double& v : r.p) v /= sum;
  for (float& v : r.pf) v = float(v * (1.0 / sum_f));
  return r;
}

struct RefChoice {
  int64_t token;
  double prob, confidence;
};
RefChoice reference_dream(const RefRow& row, const RowSampling& how, double u) {
  const std::vector<double>& p = row.p;
  const int64_t V = int64_t(p.size());
  int64_t token = 0;
  if (how.temperature > 0) {
    // The inverse CDF over the float probabilities the samplers draw from: at Dream-7B's vocabulary a flat
    // distribution's double and float cumulative sums differ by ~1e-9, more than the spacing of some boundaries.
    const std::vector<float>& pf = row.pf;
    double total = 0, cum = 0;
    for (float v : pf) total += v;
    token = -1;
    for (int64_t i = 0; i < V; ++i) {
      if (pf[size_t(i)] <= 0) continue;
      cum += pf[size_t(i)];
      token = i;
      if (cum > u * total) break;
    }
  } else {
    token = row.argmax;
  }
  double conf = p[size_t(token)];
  if (how.confidence == Confidence::Margin) {
    std::vector<double> s = p;
    std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<double>());
    conf = s[0] - s[1];
  } else if (how.confidence == Confidence::NegEntropy) {
    conf = 0;
    for (double v : p)
      if (v > 0) conf += v * std::log(v + 1e-10);
  }
  return {token, p[size_t(token)], conf};
}

// Classifier-free guidance as the samplers define it (engine/sampling.h cfg_combine, in float).
std::vector<float> reference_cfg(const float* cond, const float* uncond, int64_t V, float scale) {
  std::vector<float> x(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) x[size_t(v)] = uncond[v] + (scale + 1.0f) * (cond[v] - uncond[v]);
  return x;
}

class SampleRows : public test::BackendTest {
 protected:
  void SetUp() override {
    test::BackendTest::SetUp();
    seed_ = std::random_device{}();
    rng_.seed(seed_);
  }
  // Host F32 rows of normal values scaled by `std`, rounded to bf16 so that every backend holds the same values;
  // `levels` > 0 rounds further to multiples of 1/levels so that many entries tie.
  Tensor rows(int64_t N, int64_t V, float std, float levels = 0) {
    Tensor t = test::random_tensor(DType::F32, {N, V}, rng_, std);
    for (int64_t i = 0; i < t.numel(); ++i) {
      float& x = t.data<float>()[i];
      if (levels > 0) x = std::round(x * levels) / levels;
      x = bf16_to_f32(f32_to_bf16(x));
    }
    return t;
  }
  Tensor up(const Tensor& host) { return be_->from_host_f32(host); }
  Tensor down(const Tensor& t) { return be_->to_host_f32(t); }
  std::string trace() const { return fmt::format("{} backend, seed {}", GetParam(), seed_); }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_P(SampleRows, GatherRowsPicksTheListedRows) {
  struct Case {
    int64_t T, H;  // H 896: the CUDA kernel's 16-byte path; 33, 37: the elementwise path
    std::vector<int64_t> rows;
  };
  for (const Case& c : {Case{9, 33, {7, 0, 7, 3}}, Case{50, 896, {49, 3, 3, 0, 17}}, Case{50, 37, {49, 3, 3, 0, 17}}}) {
    Tensor x = rows(c.T, c.H, 1.0f);
    const int64_t R = int64_t(c.rows.size());
    Tensor out = be_->empty(be_->act_dtype(), {R, c.H});
    be_->gather_rows(up(x), c.rows, out);
    const Tensor got = down(out);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t h = 0; h < c.H; ++h)
        ASSERT_EQ(got.data<float>()[r * c.H + h], x.data<float>()[c.rows[size_t(r)] * c.H + h])
            << "H " << c.H << ", " << trace();
  }
  Tensor x = up(rows(9, 33, 1.0f));
  Tensor bad = be_->empty(be_->act_dtype(), {1, 33});
  try {
    be_->gather_rows(x, {9}, bad);
    ADD_FAILURE() << "row 9 of 9 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gather_rows"), std::string::npos) << e.what();
  }
}

TEST_P(SampleRows, SiluMulFusedMatchesReference) {
  for (auto [T, I] : {std::pair<int64_t, int64_t>{7, 45}, {33, 1024}, {33, 37}}) {
    Tensor gu = rows(T, 2 * I, 2.0f);
    Tensor want = Tensor::zeros(DType::F32, {T, I});
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < I; ++i) {
        const double g = gu.data<float>()[t * 2 * I + i], u = gu.data<float>()[t * 2 * I + I + i];
        want.data<float>()[t * I + i] = float(g / (1 + std::exp(-g)) * u);
      }
    Tensor out = be_->empty(be_->act_dtype(), {T, I});
    be_->silu_mul_fused(up(gu), out);
    const Tensor got = down(out);
    if (on_cpu()) {  // f32: each element
      for (int64_t j = 0; j < T * I; ++j) {
        const double g = gu.data<float>()[(j / I) * 2 * I + j % I], u = gu.data<float>()[(j / I) * 2 * I + I + j % I];
        ASSERT_NEAR(got.data<float>()[j], want.data<float>()[j], 1e-5 * (1 + std::abs(g * u))) << trace();
      }
    } else {  // bf16 output
      EXPECT_LT(test::rel_error(got, want), 1e-2) << "I " << I << ", " << trace();
    }
  }
  Tensor odd = be_->empty(be_->act_dtype(), {7, 2 * 45 + 1}), o2 = be_->empty(be_->act_dtype(), {7, 45});
  EXPECT_THROW(be_->silu_mul_fused(odd, o2), Error);
}

TEST_P(SampleRows, SplitColumnsCopiesTheBlocksInOrder) {
  for (auto [T, a, b, c] : {std::array<int64_t, 4>{5, 7, 3, 6}, {19, 3584, 512, 512}}) {
    Tensor x = rows(T, a + b + c, 1.0f);
    const DType dt = be_->act_dtype();
    Tensor p = be_->empty(dt, {T, a}), q = be_->empty(dt, {T, 1, b}), r = be_->empty(dt, {T, c});
    be_->split_columns(up(x), {&p, &q, &r});
    const Tensor hp = down(p), hq = down(q), hr = down(r);
    for (int64_t t = 0; t < T; ++t) {
      const float* row = x.data<float>() + t * (a + b + c);
      for (int64_t i = 0; i < a; ++i) ASSERT_EQ(hp.data<float>()[t * a + i], row[i]) << trace();
      for (int64_t i = 0; i < b; ++i) ASSERT_EQ(hq.data<float>()[t * b + i], row[a + i]) << trace();
      for (int64_t i = 0; i < c; ++i) ASSERT_EQ(hr.data<float>()[t * c + i], row[a + b + i]) << trace();
    }
    Tensor small = be_->empty(dt, {T, c - 1});
    EXPECT_THROW(be_->split_columns(up(x), {&p, &q, &small}), Error);
  }
}

TEST_P(SampleRows, DreamRuleMatchesPlainReference) {
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  struct Case {
    float temperature, top_p;
    int64_t top_k;
    Confidence conf;
    float levels;  // > 0: many tied logits
  };
  // Continuous rows at a small vocabulary, and rows at Dream-7B's vocabulary (some with ties).
  const Case small[] = {{0, 1, 0, Confidence::Prob, 0},        {0, 1, 0, Confidence::Margin, 0},
                        {0, 1, 0, Confidence::NegEntropy, 0},  {0, 0.9f, 0, Confidence::NegEntropy, 0},
                        {0.7f, 1, 0, Confidence::Prob, 0},     {0.7f, 0.8f, 0, Confidence::Margin, 0},
                        {1.3f, 1, 40, Confidence::Prob, 0},    {0.5f, 0.95f, 100, Confidence::NegEntropy, 0}};
  const Case large[] = {
      {0, 1, 0, Confidence::Prob, 0},           {0, 1, 0, Confidence::Margin, 0},
      {0, 1, 0, Confidence::NegEntropy, 0},     {0, 0.95f, 0, Confidence::NegEntropy, 0},
      {0.2f, 0.95f, 0, Confidence::NegEntropy, 0}, {0.7f, 1, 0, Confidence::Prob, 0},
      {1.0f, 0.9f, 0, Confidence::Margin, 4},   {1.0f, 0.5f, 0, Confidence::Prob, 2},
      {0.8f, 1, 50, Confidence::Prob, 0},       {0.6f, 0.9f, 20, Confidence::NegEntropy, 4},
      {0, 1, 7, Confidence::Margin, 1},         {0, 1, 0, Confidence::Margin, 1},
      {0, 1, 0, Confidence::Prob, 2},
  };
  struct Set {
    int64_t N, V;
    float std;
    std::vector<Case> cases;
    std::vector<int64_t> suppress;
    int64_t draws, stride;  // draw i reads row (i * stride) % N
  };
  const Set sets[] = {{12, 3001, 3.0f, {std::begin(small), std::end(small)}, {5, 17, 3001 + 3}, 12, 5},
                      {9, 152064, 2.5f, {std::begin(large), std::end(large)}, {0, 11, 152064 - 1}, 18, 4},
                      {9, 1000, 2.5f, {std::begin(large), std::end(large)}, {0, 11, 1000 - 1}, 18, 4}};
  for (const Set& set : sets) {
    std::map<float, Tensor> logits;  // one fresh set of rows per tie level, shared by the cases
    for (const Case& c : set.cases) {
      const int64_t N = set.N, V = set.V;
      if (!logits.count(c.levels)) logits[c.levels] = rows(N, V, set.std, c.levels);
      const Tensor& l = logits[c.levels];
      const RowSampling how{.temperature = c.temperature, .top_p = c.top_p, .top_k = c.top_k, .confidence = c.conf,
                            .suppress = set.suppress};
      std::vector<RowDraw> draws;
      for (int64_t i = 0; i < set.draws; ++i) draws.push_back(RowDraw{(i * set.stride) % N, -1, uni(rng_), {}});
      const std::vector<TokenChoice> got = be_->sample_rows(up(l), how, draws);
      ASSERT_EQ(got.size(), draws.size());
      std::vector<RefRow> ref;
      for (int64_t r = 0; r < N; ++r)
        ref.push_back(reference_dream_row(std::vector<float>(l.data<float>() + r * V, l.data<float>() + (r + 1) * V), how));
      for (size_t i = 0; i < draws.size(); ++i) {
        const RefChoice want = reference_dream(ref[size_t(draws[i].row)], how, draws[i].u);
        SCOPED_TRACE(::testing::Message() << trace() << " V " << V << " T " << c.temperature << " top_p " << c.top_p
                                          << " top_k " << c.top_k << " conf " << int(c.conf) << " levels "
                                          << c.levels << " draw " << i);
        EXPECT_EQ(got[i].token, want.token);
        for (int64_t id : set.suppress) EXPECT_NE(got[i].token, id);
        EXPECT_NEAR(got[i].prob, want.prob, 1e-5 * std::max(1.0, want.prob));
        EXPECT_NEAR(got[i].confidence, want.confidence, 1e-4 * std::max(1.0, std::abs(want.confidence)));
      }
    }
  }
}

TEST_P(SampleRows, GumbelRuleAndGuidanceMatchPlainReference) {
  struct Case {
    int64_t N, V;
    float cfg_scale;
    uint64_t seed;
    std::vector<int64_t> suppress;
    float temperatures[2];
  };
  for (const Case& c : {Case{6, 999, 1.5f, 99, {}, {0.0f, 0.9f}}, Case{5, 32000, 0.5f, 4, {3}, {0.0f, 0.8f}}}) {
    const int64_t N = c.N, V = c.V;
    Tensor l = rows(2 * N, V, 2.0f);
    RowSampling how;
    how.rule = RowSampling::Rule::Gumbel;
    how.cfg_scale = c.cfg_scale;
    how.seed = c.seed;
    how.suppress = c.suppress;
    std::vector<RowDraw> draws;
    for (int64_t i = 0; i < N; ++i) draws.push_back(RowDraw{i, N + i, 0, {11, 0, 3, uint64_t(i)}});
    for (float T : c.temperatures) {  // on CUDA, T > 0 takes the host path (sequential noise stream)
      how.temperature = T;
      const std::vector<TokenChoice> got = be_->sample_rows(up(l), how, draws);
      for (size_t i = 0; i < draws.size(); ++i) {
        std::vector<float> xf = reference_cfg(l.data<float>() + draws[i].row * V, l.data<float>() + draws[i].uncond_row * V,
                                              V, c.cfg_scale);
        for (int64_t id : c.suppress) xf[size_t(id)] = kNegInf;
        std::vector<double> x(xf.begin(), xf.end());
        Rng noise = Rng::keyed(c.seed, {11, 0, 3, uint64_t(i)});
        int64_t best = 0;
        double best_score = -1e300;
        for (int64_t v = 0; v < V; ++v) {
          const double score = T > 0 ? x[size_t(v)] - T * std::log(-std::log(noise.uniform_open())) : x[size_t(v)];
          if (score > best_score) best_score = score, best = v;
        }
        const double m = *std::max_element(x.begin(), x.end());
        double sum = 0;
        for (double v : x) sum += std::exp(v - m);
        EXPECT_EQ(got[i].token, best) << trace() << " V " << V << " T " << T << " draw " << i;
        EXPECT_NEAR(got[i].prob, std::exp(x[size_t(best)] - m) / sum, 1e-5);
        EXPECT_EQ(got[i].confidence, got[i].prob);
      }
    }
  }
  // The Dream rule reads guidance the same way (conditional row N + i, unconditional row i here).
  const int64_t N = 5, V = 32000;
  Tensor l = rows(2 * N, V, 2.0f);
  RowSampling dream;
  dream.cfg_scale = 2.0f;
  dream.confidence = Confidence::Margin;
  std::vector<RowDraw> draws;
  for (int64_t i = 0; i < N; ++i) draws.push_back(RowDraw{N + i, i, 0, {}});
  const std::vector<TokenChoice> got = be_->sample_rows(up(l), dream, draws);
  for (size_t i = 0; i < draws.size(); ++i) {
    const RefRow row = reference_dream_row(
        reference_cfg(l.data<float>() + draws[i].row * V, l.data<float>() + draws[i].uncond_row * V, V, 2.0f), dream);
    const RefChoice want = reference_dream(row, dream, 0);
    EXPECT_EQ(got[i].token, want.token) << trace() << " dream cfg draw " << i;
    EXPECT_NEAR(got[i].prob, want.prob, 1e-5 * std::max(1.0, want.prob)) << trace();
    EXPECT_NEAR(got[i].confidence, want.confidence, 1e-4) << trace();
  }
}

// Rows longer than one chunk of the CUDA backend's split greedy path (16,384 entries): the first maximum when equal
// maxima sit in different chunks, a row whose only finite logit is in its last chunk, and one with none.
TEST_P(SampleRows, GreedyRowsAcrossChunks) {
  const int64_t V = 3 * 16384 + 5;
  Tensor l = Tensor::zeros(DType::F32, {3, V});
  float* x = l.data<float>();
  for (int64_t v = 0; v < V; ++v) {
    x[v] = float(v % 97) * 0.01f;  // maximum 0.96 at v % 97 == 96, first at v = 96
    x[V + v] = kNegInf;
    x[2 * V + v] = kNegInf;
  }
  x[20000] = 5.0f;
  x[40000] = 5.0f;
  x[V + V - 2] = 1.0f;
  for (Confidence conf : {Confidence::Prob, Confidence::Margin, Confidence::NegEntropy}) {
    SCOPED_TRACE(::testing::Message() << trace() << " conf " << int(conf));
    const RowSampling how{.confidence = conf, .suppress = {3, V - 1}};
    const std::vector<TokenChoice> got = be_->sample_rows(up(l), how, {RowDraw{0, -1, 0, {}}, RowDraw{1, -1, 0, {}}});
    ASSERT_EQ(got.size(), 2u);
    for (int r = 0; r < 2; ++r) {
      const RefChoice want =
          reference_dream(reference_dream_row(std::vector<float>(x + r * V, x + (r + 1) * V), how), how, 0);
      EXPECT_EQ(got[size_t(r)].token, want.token) << "row " << r;
      EXPECT_NEAR(got[size_t(r)].prob, want.prob, 1e-5 * std::max(1.0, want.prob)) << "row " << r;
      EXPECT_NEAR(got[size_t(r)].confidence, want.confidence, 1e-4 * std::max(1.0, std::abs(want.confidence)));
    }
    EXPECT_EQ(got[0].token, 20000);
    EXPECT_EQ(got[1].token, V - 2);
    EXPECT_THROW(be_->sample_rows(up(l), how, {RowDraw{2, -1, 0, {}}}), Error);
  }
}

// A NaN or +inf logit anywhere in a row is an error naming it on every backend and every path (greedy rows longer
// than one chunk of the CUDA split path, with each confidence kind; the one-block path with temperature, top-p and
// top-k; the Gumbel rule), wherever it sits (first entry, middle, last chunk); at a suppressed id it is not one (it
// becomes -inf).
TEST_P(SampleRows, NonFiniteLogitIsAnErrorOnEveryPath) {
  struct Case {
    float bad;
    int64_t V, at;
  };
  std::vector<Case> cases;
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()})
    for (const int64_t V : {int64_t(1000), int64_t(3 * 16384 + 5)})
      for (const int64_t at : {int64_t(0), V / 2 + 7, V - 1}) cases.push_back({bad, V, at});
  RowSampling greedy, margin, hot, gumbel;
  margin.confidence = Confidence::Margin;
  hot.temperature = 0.8f, hot.top_p = 0.9f, hot.top_k = 20;
  gumbel.rule = RowSampling::Rule::Gumbel;
  for (const Case& c : cases) {
    Tensor l = rows(1, c.V, 1.0f);
    l.data<float>()[c.at] = c.bad;
    for (const RowSampling* how : {&greedy, &margin, &hot, &gumbel}) {
      SCOPED_TRACE(::testing::Message() << trace() << " V " << c.V << " " << c.bad << " at " << c.at
                                        << " temperature " << how->temperature << " rule " << int(how->rule)
                                        << " confidence " << int(how->confidence));
      try {
        const std::vector<TokenChoice> got = be_->sample_rows(up(l), *how, {RowDraw{0, -1, 0.5, {}}});
        ADD_FAILURE() << "sampled token " << (got.empty() ? -1 : got[0].token) << " from a row with " << c.bad;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("finite"), std::string::npos) << e.what();
      }
      RowSampling suppressed = *how;
      suppressed.suppress = {c.at};
      const std::vector<TokenChoice> got = be_->sample_rows(up(l), suppressed, {RowDraw{0, -1, 0.5, {}}});
      ASSERT_EQ(got.size(), 1u);
      EXPECT_NE(got[0].token, c.at);
      EXPECT_TRUE(std::isfinite(got[0].prob) && std::isfinite(got[0].confidence));
    }
  }
}

TEST_P(SampleRows, RejectsBadDrawsNamingTheOp) {
  Tensor l = up(rows(2, 10, 1.0f));
  RowSampling how;
  auto expect_error = [&](const RowSampling& h, const std::vector<RowDraw>& d, const char* what) {
    try {
      be_->sample_rows(l, h, d);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("sample_rows"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error(how, {RowDraw{2, -1, 0, {}}}, "row 2");
  RowSampling cfg = how;
  cfg.cfg_scale = 1;
  expect_error(cfg, {RowDraw{0, -1, 0, {}}}, "unconditional");
  RowSampling hot = how;
  hot.temperature = 1;
  expect_error(hot, {RowDraw{0, -1, 1.0, {}}}, "uniform");
  RowSampling p = how;
  p.top_p = 0;
  expect_error(p, {RowDraw{0, -1, 0, {}}}, "top_p");
  // A row with no finite logit left (every token suppressed) is an error naming that, not a token.
  RowSampling none = how;
  for (int64_t v = 0; v < 10; ++v) none.suppress.push_back(v);
  try {
    be_->sample_rows(l, none, {RowDraw{}});
    ADD_FAILURE() << "a fully suppressed row was sampled";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("finite logit"), std::string::npos) << e.what();
    if (!on_cpu()) {
      EXPECT_NE(std::string(e.what()).find("sample_rows"), std::string::npos) << e.what();
    }
  }
}

DLX_INSTANTIATE_OVER_BACKENDS(SampleRows);

// The samplers give the same tokens through the backend's sample_rows (logits kept by the backend) as through
// host logits callbacks: greedy and sampled, Dream on the shipped tiny model.
TEST(SampleRowsSampler, DreamBackendSamplerEqualsHostLogitsPath) {
  auto model = Model::load(test::source_path("models/kjv-dream-tiny"));
  Tensor prompt = Tensor::zeros(DType::I64, {2, 5});
  for (int64_t i = 0; i < 10; ++i) prompt.data<int64_t>()[i] = 40 + 7 * i;
  RowLogitsFn host = [&](const Tensor& ids, const Tensor& km, const std::vector<int64_t>& rows) {
    return model->forward(ids, km, rows);
  };
  RowSampleFn dev = backend_row_sampler(model->backend(), [&](const Tensor& ids, const Tensor& km,
                                                              const std::vector<int64_t>& rows) {
    return model->forward_device(ids, km, rows);
  });
  for (float T : {0.0f, 0.9f}) {
    UnmaskOptions o;
    o.max_new_tokens = 12;
    o.steps = 6;
    o.temperature = T;
    o.top_p = T > 0 ? 0.9f : 1.0f;
    o.mask_token_id = model->config().mask_token_id;
    o.seed = 5;
    Tensor a = unmask_generate(UnmaskPolicy::Dream, host, prompt, o), b = unmask_generate(UnmaskPolicy::Dream, dev, prompt, o);
    ASSERT_EQ(a.numel(), b.numel());
    for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a.data<int64_t>()[i], b.data<int64_t>()[i]) << "T " << T;
  }
}

// LLaDA with classifier-free guidance over synthetic logits: the backend path pairs each row with its
// unconditional row as the host path does.
TEST(SampleRowsSampler, LladaGuidanceBackendSamplerEqualsHostLogitsPath) {
  const int64_t V = 64, mask = 63;
  CpuBackend be;
  auto synth = [&](const Tensor& ids, const std::vector<int64_t>& rows) {
    const int64_t L = ids.dim(1);
    Tensor out = Tensor::zeros(DType::F32, {int64_t(rows.size()), V});
    for (size_t r = 0; r < rows.size(); ++r) {
      uint64_t h = uint64_t(rows[r]) * 0x9e3779b97f4a7c15ull;
      for (int64_t l = 0; l < L; ++l) h = (h ^ uint64_t(ids.data<int64_t>()[(rows[r] / L) * L + l])) * 1099511628211ull;
      for (int64_t v = 0; v < V; ++v) {
        uint64_t z = h + uint64_t(v) * 0xbf58476d1ce4e5b9ull;
        z ^= z >> 31;
        out.data<float>()[int64_t(r) * V + v] = float(int64_t(z % 1000) - 500) / 100.0f;
      }
    }
    return out;
  };
  RowLogitsFn host = [&](const Tensor& ids, const Tensor&, const std::vector<int64_t>& rows) { return synth(ids, rows); };
  RowSampleFn dev = backend_row_sampler(be, [&](const Tensor& ids, const Tensor&, const std::vector<int64_t>& rows) {
    return synth(ids, rows);
  });
  Tensor prompt = Tensor::zeros(DType::I64, {2, 3});
  for (int64_t i = 0; i < 6; ++i) prompt.data<int64_t>()[i] = i + 1;
  for (float T : {0.0f, 0.7f}) {
    UnmaskOptions o;
    o.max_new_tokens = 8;
    o.steps = 4;
    o.cfg_scale = 1.0f;
    o.temperature = T;
    o.mask_token_id = mask;
    o.seed = 3;
    Tensor a = unmask_generate(UnmaskPolicy::Llada, host, prompt, o), b = unmask_generate(UnmaskPolicy::Llada, dev, prompt, o);
    for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(a.data<int64_t>()[i], b.data<int64_t>()[i]) << "T " << T;
  }
}

}  // namespace

}  // namespace dlx
