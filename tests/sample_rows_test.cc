// The backend row ops the samplers use: gather_rows and sample_rows (the host implementation, which the CPU
// backend runs) against plain references written here (full sorts, no quickselect), on fresh random rows; and the
// samplers through backend_row_sampler giving the same tokens as through host logits callbacks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "core/error.h"
#include "engine/dream_sampler.h"
#include "engine/llada_sampler.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/model.h"
#include "test_util.h"

namespace dlx {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The Dream row pipeline written out plainly: full sort for top-p and top-k, double softmax.
struct RefChoice {
  int64_t token;
  double prob, confidence;
};
RefChoice reference_dream(std::vector<float> x, const RowSampling& how, double u) {
  const int64_t V = int64_t(x.size());
  for (int64_t id : how.suppress)
    if (id >= 0 && id < V) x[size_t(id)] = kNegInf;
  if (how.temperature > 0)
    for (float& v : x) v /= how.temperature;
  std::vector<int64_t> order(static_cast<size_t>(V), 0);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return x[size_t(a)] > x[size_t(b)]; });
  const float m = x[size_t(order[0])];
  if (how.top_p < 1) {
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
  std::vector<double> p(static_cast<size_t>(V));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += p[size_t(i)] = std::exp(double(x[size_t(i)]) - double(m));
  for (double& v : p) v /= sum;
  int64_t token = 0;
  if (how.temperature > 0) {
    double cum = 0;
    token = -1;
    for (int64_t i = 0; i < V; ++i) {
      if (p[size_t(i)] <= 0) continue;
      cum += p[size_t(i)];
      token = i;
      if (cum > u) break;
    }
  } else {
    token = order[0];
  }
  double conf = p[size_t(token)];
  if (how.confidence == Confidence::Margin) {
    std::vector<double> s = p;
    std::sort(s.begin(), s.end(), std::greater<double>());
    conf = s[0] - s[1];
  } else if (how.confidence == Confidence::NegEntropy) {
    conf = 0;
    for (double v : p)
      if (v > 0) conf += v * std::log(v + 1e-10);
  }
  return {token, p[size_t(token)], conf};
}

class SampleRows : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = std::random_device{}();
    rng_.seed(seed_);
  }
  Tensor logits(int64_t N, int64_t V, float std) { return test::random_tensor(DType::F32, {N, V}, rng_, std); }
  CpuBackend be_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(SampleRows, GatherRowsPicksTheListedRows) {
  Tensor x = logits(9, 33, 1.0f);
  const std::vector<int64_t> rows = {7, 0, 7, 3};
  Tensor out = be_.empty(DType::F32, {4, 33});
  be_.gather_rows(x, rows, out);
  for (size_t r = 0; r < rows.size(); ++r)
    for (int64_t h = 0; h < 33; ++h)
      ASSERT_EQ(out.data<float>()[int64_t(r) * 33 + h], x.data<float>()[rows[r] * 33 + h]) << "seed " << seed_;
  Tensor bad = be_.empty(DType::F32, {1, 33});
  try {
    be_.gather_rows(x, {9}, bad);
    ADD_FAILURE() << "row 9 of 9 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gather_rows"), std::string::npos) << e.what();
  }
}

TEST_F(SampleRows, SiluMulFusedMatchesReference) {
  const int64_t T = 7, I = 45;
  Tensor gu = logits(T, 2 * I, 2.0f);
  Tensor out = be_.empty(DType::F32, {T, I});
  be_.silu_mul_fused(gu, out);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const double g = gu.data<float>()[t * 2 * I + i], u = gu.data<float>()[t * 2 * I + I + i];
      ASSERT_NEAR(out.data<float>()[t * I + i], g / (1 + std::exp(-g)) * u, 1e-5 * (1 + std::abs(g * u)))
          << "seed " << seed_;
    }
  Tensor odd = be_.empty(DType::F32, {T, 2 * I + 1}), o2 = be_.empty(DType::F32, {T, I});
  EXPECT_THROW(be_.silu_mul_fused(odd, o2), Error);
}

TEST_F(SampleRows, SplitColumnsCopiesTheBlocksInOrder) {
  const int64_t T = 5, a = 7, b = 3, c = 6;
  Tensor x = logits(T, a + b + c, 1.0f);
  Tensor p = be_.empty(DType::F32, {T, a}), q = be_.empty(DType::F32, {T, 1, b}), r = be_.empty(DType::F32, {T, c});
  be_.split_columns(x, {&p, &q, &r});
  for (int64_t t = 0; t < T; ++t) {
    const float* row = x.data<float>() + t * (a + b + c);
    for (int64_t i = 0; i < a; ++i) ASSERT_EQ(p.data<float>()[t * a + i], row[i]);
    for (int64_t i = 0; i < b; ++i) ASSERT_EQ(q.data<float>()[t * b + i], row[a + i]);
    for (int64_t i = 0; i < c; ++i) ASSERT_EQ(r.data<float>()[t * c + i], row[a + b + i]);
  }
  Tensor small = be_.empty(DType::F32, {T, c - 1});
  EXPECT_THROW(be_.split_columns(x, {&p, &q, &small}), Error);
}

TEST_F(SampleRows, DreamRuleMatchesPlainReference) {
  const int64_t N = 12, V = 3001;
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  struct Case {
    float temperature, top_p;
    int64_t top_k;
    Confidence conf;
  };
  const Case cases[] = {{0, 1, 0, Confidence::Prob},        {0, 1, 0, Confidence::Margin},
                        {0, 1, 0, Confidence::NegEntropy},  {0, 0.9f, 0, Confidence::NegEntropy},
                        {0.7f, 1, 0, Confidence::Prob},     {0.7f, 0.8f, 0, Confidence::Margin},
                        {1.3f, 1, 40, Confidence::Prob},    {0.5f, 0.95f, 100, Confidence::NegEntropy}};
  for (const Case& c : cases) {
    Tensor l = logits(N, V, 3.0f);
    RowSampling how;
    how.temperature = c.temperature;
    how.top_p = c.top_p;
    how.top_k = c.top_k;
    how.confidence = c.conf;
    how.suppress = {5, 17, V + 3};
    std::vector<RowDraw> draws;
    for (int64_t i = 0; i < N; ++i) draws.push_back(RowDraw{(i * 5) % N, -1, uni(rng_), {}});
    const std::vector<TokenChoice> got = be_.sample_rows(l, how, draws);
    ASSERT_EQ(got.size(), draws.size());
    for (size_t i = 0; i < draws.size(); ++i) {
      const float* row = l.data<float>() + draws[i].row * V;
      const RefChoice want = reference_dream(std::vector<float>(row, row + V), how, draws[i].u);
      SCOPED_TRACE(::testing::Message() << "seed " << seed_ << " T " << c.temperature << " top_p " << c.top_p
                                        << " top_k " << c.top_k << " draw " << i);
      EXPECT_EQ(got[i].token, want.token);
      EXPECT_NE(got[i].token, 5);
      EXPECT_NE(got[i].token, 17);
      EXPECT_NEAR(got[i].prob, want.prob, 1e-5 * std::max(1.0, want.prob));
      EXPECT_NEAR(got[i].confidence, want.confidence, 1e-4 * std::max(1.0, std::abs(want.confidence)));
    }
  }
}

TEST_F(SampleRows, GumbelRuleAndGuidanceMatchPlainReference) {
  const int64_t N = 6, V = 999;
  Tensor l = logits(2 * N, V, 2.0f);
  RowSampling how;
  how.rule = RowSampling::Rule::Gumbel;
  how.cfg_scale = 1.5f;
  how.seed = 99;
  std::vector<RowDraw> draws;
  for (int64_t i = 0; i < N; ++i) draws.push_back(RowDraw{i, N + i, 0, {11, 0, 3, uint64_t(i)}});
  for (float T : {0.0f, 0.9f}) {
    how.temperature = T;
    const std::vector<TokenChoice> got = be_.sample_rows(l, how, draws);
    for (size_t i = 0; i < draws.size(); ++i) {
      std::vector<double> x(static_cast<size_t>(V));
      for (int64_t v = 0; v < V; ++v) {
        const double c = l.data<float>()[draws[i].row * V + v], u = l.data<float>()[draws[i].uncond_row * V + v];
        x[size_t(v)] = u + 2.5 * (c - u);
      }
      Rng noise = Rng::keyed(99, {11, 0, 3, uint64_t(i)});
      int64_t best = 0;
      double best_score = -1e300;
      for (int64_t v = 0; v < V; ++v) {
        const double score = T > 0 ? x[size_t(v)] - T * std::log(-std::log(noise.uniform_open())) : x[size_t(v)];
        if (score > best_score) best_score = score, best = v;
      }
      const double m = *std::max_element(x.begin(), x.end());
      double sum = 0;
      for (double v : x) sum += std::exp(v - m);
      EXPECT_EQ(got[i].token, best) << "seed " << seed_ << " T " << T << " draw " << i;
      EXPECT_NEAR(got[i].prob, std::exp(x[size_t(best)] - m) / sum, 1e-5);
      EXPECT_EQ(got[i].confidence, got[i].prob);
    }
  }
}

TEST_F(SampleRows, RejectsBadDrawsNamingTheOp) {
  Tensor l = logits(2, 10, 1.0f);
  RowSampling how;
  auto expect_error = [&](const RowSampling& h, const std::vector<RowDraw>& d, const char* what) {
    try {
      be_.sample_rows(l, h, d);
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
}

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
