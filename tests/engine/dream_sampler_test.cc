// The unmasking loop with the Dream policy (engine/unmask.h, engine/dream_sampler.h): the schedule against values
// produced by torch 2.11 (CUDA and CPU agree), and generation on hand-built logits functions whose outcome is known:
// which positions are revealed at which step, with which tokens, and the error for each invalid option.
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
#include "core/rng.h"
#include "sampler_test_util.h"

namespace dlx {
namespace {

using namespace sampler_test;

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
    UnmaskOptions o = dream_opts(1, 1);
    o.temperature = c.temperature;
    o.top_p = c.top_p;
    o.top_k = c.top_k;
    const int n = 4000;
    const std::vector<int64_t> hits = four_token_counts(UnmaskPolicy::Dream, o, n);
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
  m.rule = prefers_mask_then_3_then_1;
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

}  // namespace
}  // namespace dlx
