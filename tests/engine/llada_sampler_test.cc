// The unmasking loop with the LLaDA policy (engine/unmask.h, engine/llada_sampler.h) on hand-built logits functions
// whose outcome is known: the transfer schedule, blocks, Gumbel sampling, remasking, classifier-free guidance,
// parallel decoding, padding, the rows asked for, and the error for each invalid option.
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
#include "engine/llada_sampler.h"
#include "core/rng.h"
#include "sampler_test_util.h"

namespace dlx {
namespace {

using namespace sampler_test;

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
    UnmaskOptions o = llada_opts(1, 0, 1);
    o.temperature = T;
    const int n = 4000;
    const std::vector<int64_t> hits = four_token_counts(UnmaskPolicy::Llada, o, n);
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
  m.rule = prefers_mask_then_3_then_1;
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
