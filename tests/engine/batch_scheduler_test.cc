// Continuous batching (engine/batch_scheduler.h) and the fp8 KV cache: the scheduler's results equal solo runs,
// the batched ragged pass equals per-sequence passes, the KV budget limits admission, and fp8 error is bounded.
#include <gtest/gtest.h>

#include <atomic>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "core/error.h"
#include "engine/batch_scheduler.h"
#include "io/safetensors.h"
#include "kernels/cpu/cpu_backend.h"
#include "test_util.h"

namespace dlx {

namespace {

std::vector<std::vector<int64_t>> kjv_prompts(const Tokenizer& tok) {
  return {format_prompt(tok, "In the beginning", false), format_prompt(tok, "And Ruth said unto Naomi, Intreat me not", false),
          format_prompt(tok, "Blessed", false), format_prompt(tok, "The LORD is my shepherd; I shall not", false)};
}

// Requests with different lengths and seeds, so they finish at different steps and slots are refilled mid-run.
GenerationOptions request_opts(GenerationOptions o, size_t i) {
  o.max_new_tokens = i % 2 ? 16 : 8;
  o.seed = 100 + i;
  return o;
}

void expect_continuous_equals_solo(Model& model, const Tokenizer& tok, const std::vector<std::vector<int64_t>>& prompts,
                                   const GenerationOptions& base, int64_t max_batch, const std::string& what) {
  SchedulerOptions so;
  so.max_batch = max_batch;
  BatchScheduler s(model, tok, so);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(s.submit(prompts[i], request_opts(base, i)), i);
  std::vector<GenerationResult> got(prompts.size());
  std::vector<size_t> order;
  s.run([&](FinishedRequest&& f) {
    ASSERT_TRUE(f.error.empty()) << what << ": " << f.error;
    order.push_back(size_t(f.id));
    got[size_t(f.id)] = std::move(f.result);
  });
  ASSERT_EQ(order.size(), prompts.size()) << what;
  EXPECT_EQ(s.max_active(), std::min<int64_t>(max_batch, int64_t(prompts.size()))) << what;
  int solo_steps = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationResult solo = generate(model, tok, prompts[i], request_opts(base, i));
    solo_steps += solo.steps_run;
    EXPECT_EQ(got[i].new_ids, solo.new_ids) << what << ", request " << i;
    EXPECT_EQ(got[i].steps_run, solo.steps_run) << what << ", request " << i;
    EXPECT_EQ(got[i].text, solo.text) << what << ", request " << i;
  }
  // Batched: fewer forwards than the solo runs' steps together (a refresh or window pass each step).
  EXPECT_LT(s.forwards(), solo_steps) << what;
  EXPECT_TRUE(s.idle());
}

}  // namespace

TEST(ContinuousBatch, DreamEqualsSoloRuns) {
  std::string dir = test::source_path("models/kjv-dream-tiny");
  auto model = Model::load(dir);
  Tokenizer tok = Tokenizer::load(dir);
  const auto prompts = kjv_prompts(tok);
  for (const char* cache : {"none", "prefix", "dual"}) {
    GenerationOptions o;
    o.temperature = 0.7f;
    o.top_p = 0.9f;
    o.block_length = 4;
    o.cache = parse_cache_mode(cache);
    expect_continuous_equals_solo(*model, tok, prompts, o, 2, std::string("dream cache ") + cache);
  }
  GenerationOptions t;  // parallel decoding with a threshold, fp8 cache, 3 slots
  t.block_length = 4;
  t.threshold = 0.5f;
  t.cache = CacheMode::Dual;
  t.kv_dtype = KvDtype::FP8;
  expect_continuous_equals_solo(*model, tok, prompts, t, 3, "dream threshold, dual fp8");
}

TEST(ContinuousBatch, LladaEqualsSoloRuns) {
  auto model = Model::load(test::source_path("testdata/fixtures/llada_tiny"));
  Tokenizer tok = Tokenizer::load(test::source_path("models/kjv-dream-tiny"));  // only decodes ids < 320 here
  std::mt19937_64 rng(5);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t len : {3, 9, 5, 12}) {
    std::vector<int64_t> p;
    for (int64_t i = 0; i < len; ++i) p.push_back(3 + int64_t(rng() % 300));
    prompts.push_back(p);
  }
  for (const char* cache : {"none", "prefix", "dual"}) {
    GenerationOptions o;
    o.temperature = 0.5f;
    o.block_length = 8;
    o.tokens_per_step = 2;
    o.cache = parse_cache_mode(cache);
    expect_continuous_equals_solo(*model, tok, prompts, o, 3, std::string("llada cache ") + cache);
  }
}

TEST(ContinuousBatch, KvBudgetLimitsAdmission) {
  std::string dir = test::source_path("models/kjv-dream-tiny");
  auto model = Model::load(dir);
  Tokenizer tok = Tokenizer::load(dir);
  auto prompts = kjv_prompts(tok);
  prompts.resize(3);
  GenerationOptions o;
  o.cache = CacheMode::Prefix;
  o.block_length = 8;
  o.max_new_tokens = 16;
  size_t biggest = 0, smallest = SIZE_MAX;
  for (const auto& p : prompts) {
    biggest = std::max(biggest, request_kv_bytes(*model, int64_t(p.size()), o));
    smallest = std::min(smallest, request_kv_bytes(*model, int64_t(p.size()), o));
  }
  ASSERT_GT(2 * smallest, biggest);
  EXPECT_EQ(request_kv_bytes(*model, 10, o), kv_cache_bytes(model->config(), DType::F32, 1, 26, false));
  SchedulerOptions so;
  so.max_batch = 4;
  so.kv_budget_bytes = biggest;  // room for one request at a time
  BatchScheduler s(*model, tok, so);
  for (const auto& p : prompts) s.submit(p, o);
  std::vector<GenerationResult> got(prompts.size());
  s.run([&](FinishedRequest&& f) {
    EXPECT_LE(s.kv_bytes_in_use(), so.kv_budget_bytes);
    got[size_t(f.id)] = std::move(f.result);
  });
  EXPECT_EQ(s.max_active(), 1);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i].new_ids, generate(*model, tok, prompts[i], o).new_ids);
  // A request that cannot fit even alone is refused with a clear error.
  SchedulerOptions tiny;
  tiny.kv_budget_bytes = biggest / 4;
  BatchScheduler t(*model, tok, tiny);
  try {
    t.submit(prompts[1], o);
    ADD_FAILURE() << "expected the budget error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV budget"), std::string::npos) << e.what();
  }
  o.cache = CacheMode::None;
  o.kv_dtype = KvDtype::FP8;
  EXPECT_THROW(t.submit(prompts[0], o), Error);  // fp8 needs a cache
  EXPECT_THROW(t.submit({1, 2, model->config().vocab_size}, GenerationOptions()), Error);  // id outside the vocabulary
}

// cancel(): a running request stops before its next model call and a queued one leaves the queue; both come back
// as "cancelled" from the next step with their slot and KV bytes free, and the others still equal their solo runs.
// on_step sees each request's own canvas, whose revealed positions already hold the final tokens.
TEST(ContinuousBatch, CancelFreesSlotAndKvBytes) {
  std::string dir = test::source_path("models/kjv-dream-tiny");
  auto model = Model::load(dir);
  Tokenizer tok = Tokenizer::load(dir);
  const auto prompts = kjv_prompts(tok);
  GenerationOptions o;
  o.cache = CacheMode::Dual;
  o.block_length = 8;
  o.max_new_tokens = 32;
  SchedulerOptions so;
  so.max_batch = 1;
  BatchScheduler s(*model, tok, so);
  // The step callbacks run on the slot's thread, after the pass that step() ran: a counter read here is atomic.
  std::atomic<int> a_steps{0};
  std::vector<std::vector<int64_t>> c_canvases;
  const uint64_t a = s.submit(prompts[0], o, [&](int, int, int64_t, const Tensor&) { ++a_steps; });
  const uint64_t b = s.submit(prompts[1], o);
  const uint64_t c = s.submit(prompts[2], o, [&](int, int, int64_t, const Tensor& canvas) {
    EXPECT_EQ(canvas.dim(0), 1);
    c_canvases.emplace_back(canvas.data<int64_t>(), canvas.data<int64_t>() + canvas.numel());
  });
  s.cancel(b);
  std::vector<FinishedRequest> done = s.step();  // b comes back at once; a is admitted and runs its first pass
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].id, b);
  EXPECT_EQ(done[0].error, "cancelled");
  while (a_steps < 3) ASSERT_TRUE(s.step().empty());
  EXPECT_EQ(s.active(), 1);
  EXPECT_EQ(s.kv_bytes_in_use(), request_kv_bytes(*model, int64_t(prompts[0].size()), o));
  s.cancel(a);
  s.cancel(a);     // twice: counted once
  s.cancel(1000);  // unknown: ignored
  const int a_steps_at_cancel = a_steps;
  std::vector<FinishedRequest> rest;
  while (!s.idle())
    for (FinishedRequest& f : s.step()) {
      if (f.id == a) {  // the step that retired a admitted c into its slot, with c's bytes alone
        EXPECT_EQ(s.active(), 1);
        EXPECT_EQ(s.kv_bytes_in_use(), request_kv_bytes(*model, int64_t(prompts[2].size()), o));
      }
      rest.push_back(std::move(f));
    }
  // No model pass after cancel(): at most the callback of the pass that step() had already run (its slot thread
  // may not have reported it yet when cancel() was called).
  EXPECT_LE(a_steps.load(), a_steps_at_cancel + 1);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].id, a);
  EXPECT_EQ(rest[0].error, "cancelled");
  EXPECT_EQ(rest[1].id, c);
  ASSERT_TRUE(rest[1].error.empty()) << rest[1].error;
  EXPECT_EQ(s.cancelled(), 2);
  EXPECT_EQ(s.kv_bytes_in_use(), 0u);
  const GenerationResult solo = generate(*model, tok, prompts[2], o);
  EXPECT_EQ(rest[1].result.new_ids, solo.new_ids);
  ASSERT_EQ(int(c_canvases.size()), solo.steps_run);
  const size_t P = prompts[2].size();
  for (const auto& cv : c_canvases)
    for (size_t k = 0; k < solo.new_ids.size(); ++k)
      if (cv[P + k] != model->config().mask_token_id) {
        EXPECT_EQ(cv[P + k], solo.new_ids[k]);
      }
}

// The ragged batched pass: each slot's logits (left in the backend's memory) equal its own forward_device /
// forward_window_device, bit for bit on the CPU.
TEST(ContinuousBatch, ForwardSlotsEqualsPerSequencePasses) {
  std::string dir = test::source_path("testdata/fixtures/dream_tiny");
  auto model = Model::load(dir);
  Tensor ids = TensorStore::open_file(dir + "/reference.safetensors")->get("input_ids");
  const int64_t L = ids.dim(1), V = model->config().vocab_size;
  auto row = [&](int64_t b, int64_t len) {
    Tensor t = Tensor::zeros(DType::I64, {1, len});
    for (int64_t l = 0; l < len; ++l) t.data<int64_t>()[l] = ids.data<int64_t>()[b * L + l % L];
    return t;
  };
  for (bool fp8 : {false, true}) {
    Tensor a = row(0, L), b = row(1, L - 2), c = row(2, L + 3);
    KvCache ca, cb, ca2, cb2;
    ca.fp8 = cb.fp8 = ca2.fp8 = cb2.fp8 = fp8;
    // Refresh a's and b's caches in one batched pass with c uncached, then windows at different offsets.
    std::vector<SlotPass> refresh(3);
    refresh[0].ids = a, refresh[0].cache = &ca;
    refresh[1].ids = b, refresh[1].cache = &cb, refresh[1].logit_rows = {1, 4};
    refresh[2].ids = c;
    std::vector<Tensor> r = model->forward_slots(refresh);
    EXPECT_EQ(r[0].shape(), (Shape{L, V}));
    EXPECT_EQ(r[1].shape(), (Shape{2, V}));
    EXPECT_EQ(test::rel_error(r[0], model->forward_window_device(a, {}, ca2, 0, L)), 0.0);
    EXPECT_EQ(test::rel_error(r[1], model->forward_window_device(b, {}, cb2, 0, L - 2, {1, 4})), 0.0);
    EXPECT_EQ(test::rel_error(r[2], model->forward_device(c)), 0.0);
    std::vector<SlotPass> win(2);
    win[0].ids = a, win[0].cache = &ca, win[0].begin = 2, win[0].end = 5, win[0].logit_rows = {2, 4};
    win[1].ids = b, win[1].cache = &cb, win[1].begin = 4, win[1].end = L - 2;
    std::vector<Tensor> w = model->forward_slots(win);
    EXPECT_EQ(test::rel_error(w[0], model->forward_window_device(a, {}, ca2, 2, 5, {2, 4})), 0.0) << "fp8 " << fp8;
    EXPECT_EQ(test::rel_error(w[1], model->forward_window_device(b, {}, cb2, 4, L - 2)), 0.0) << "fp8 " << fp8;
    std::vector<SlotPass> bad(1);
    bad[0].ids = a, bad[0].begin = 1, bad[0].end = 3;
    EXPECT_THROW(model->forward_slots(bad), Error);  // a window needs a cache
  }
}

// fp8 e4m3 with per-(position, head) scales: codes are the nearest e4m3 values of x * 448 / max|x| and the
// round trip is within half a step: |x - x~| <= |x| / 16 + scale / 1024.
TEST(Fp8KvCache, QuantizationErrorIsBounded) {
  CpuBackend be;
  const int64_t N = 37, heads = 3, D = 16;
  Tensor x = Tensor::zeros(DType::F32, {N, heads * D});
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0, 1);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = nd(rng) * std::exp(nd(rng));
  for (int64_t d = 0; d < D; ++d) x.data<float>()[5 * heads * D + D + d] = 0;  // an all-zero head
  Tensor q = Tensor::zeros(DType::F8_E4M3, {N, heads * D}), sc = Tensor::zeros(DType::F32, {N, heads});
  Tensor y = Tensor::zeros(DType::F32, {N, heads * D});
  be.kv_quantize_fp8(x, heads, q, sc);
  be.kv_dequantize_fp8(q, sc, heads, y);
  for (int64_t r = 0; r < N * heads; ++r) {
    float amax = 0;
    for (int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(x.data<float>()[r * D + d]));
    ASSERT_EQ(sc.data<float>()[r], amax / 448.0f);
    for (int64_t d = 0; d < D; ++d) {
      const float v = x.data<float>()[r * D + d], s = sc.data<float>()[r];
      const float scaled = amax > 0 ? v * (448.0f / amax) : 0.0f;
      ASSERT_EQ(q.data<uint8_t>()[r * D + d], f32_to_fp8e4m3(scaled)) << "value " << scaled;
      EXPECT_LE(std::fabs(y.data<float>()[r * D + d] - v), std::fabs(v) / 16 + s / 1024 + 1e-6f * std::fabs(v));
    }
  }
  EXPECT_THROW(be.kv_quantize_fp8(x, heads, y, sc), Error);  // dst must be F8_E4M3
  // Scales that do not cover whole heads: an error naming the op and the shapes.
  Tensor sc_bad = Tensor::zeros(DType::F32, {N, heads + 1});
  try {
    be.kv_dequantize_fp8(q, sc_bad, heads, y);
    ADD_FAILURE() << "scales [N, heads + 1] were accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cpu kv_dequantize_fp8: src"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("heads"), std::string::npos) << e.what();
  }
}

// The model with an fp8 cache: the refresh pass differs from the exact forward only by the fp8 rounding of keys
// and values (a few percent of the logits at most), and fp8 cached generation runs end to end.
TEST(Fp8KvCache, RefreshLogitErrorIsBounded) {
  for (const char* name : {"dream_tiny", "llada_tiny"}) {
    std::string dir = test::source_path(std::string("testdata/fixtures/") + name);
    Tensor ids = TensorStore::open_file(dir + "/reference.safetensors")->get("input_ids");
    auto model = Model::load(dir);
    const int64_t L = ids.dim(1);
    Tensor full = model->forward(ids);
    KvCache cache;
    cache.fp8 = true;
    Tensor got = model->forward_window(ids, {}, cache, 0, L);
    const double err = test::rel_error(got, full);
    EXPECT_GT(err, 0.0) << name;  // the fp8 path really ran
    EXPECT_LT(err, 0.05) << name;
    EXPECT_EQ(cache.bytes(), kv_cache_bytes(model->config(), DType::F32, ids.dim(0), L, true));
    EXPECT_EQ(cache.k[0].dtype(), DType::F8_E4M3);
  }
}

// The CLI: one JSON line per request, in input order or as they finish, each equal to the library's solo run with
// the same options (the checkpoint's generation_config.json defaults plus the flags).
TEST(ContinuousBatchCli, PrintsOneJsonLinePerRequest) {
  const std::string dir = test::source_path("models/kjv-dream-tiny");
  test::TempDir tmp;
  const std::vector<std::string> texts = {"In the beginning", "And Ruth said,", "Blessed are"};
  {
    std::ofstream f(tmp / "p.txt");
    for (const auto& t : texts) f << "{\"prompt\": \"" << t << "\"}\n";
  }
  auto model = Model::load(dir);
  Tokenizer tok = Tokenizer::load(dir);
  GenerationOptions o = generation_defaults(dir);
  o.max_new_tokens = 8;
  o.block_length = 4;
  o.cache = CacheMode::Dual;
  o.kv_dtype = KvDtype::FP8;
  const std::string flags = " --max-new-tokens 8 --block-length 4 --cache dual --kv-dtype fp8 --max-batch 2";
  for (const char* order : {"input", "completion"}) {
    auto r = test::run_cli("generate --model " + dir + " --prompts-file " + (tmp / "p.txt") + flags + " --order " + order);
    ASSERT_EQ(r.status, 0) << r.output;
    std::istringstream lines(r.output);
    std::string line;
    std::vector<size_t> seen;
    while (std::getline(lines, line)) {
      if (line.empty() || line[0] != '{') continue;  // log lines
      auto j = nlohmann::json::parse(line);
      const size_t i = j["index"].get<size_t>();
      ASSERT_LT(i, texts.size());
      seen.push_back(i);
      GenerationResult solo = generate(*model, tok, format_prompt(tok, texts[i], false), o);
      EXPECT_EQ(j["ids"].get<std::vector<int64_t>>(), solo.new_ids) << order << " request " << i;
      EXPECT_EQ(j["text"].get<std::string>(), solo.text);
    }
    ASSERT_EQ(seen.size(), texts.size()) << r.output;
    EXPECT_EQ(std::set<size_t>(seen.begin(), seen.end()).size(), texts.size());
    if (std::string(order) == "input") {
      EXPECT_EQ(seen, (std::vector<size_t>{0, 1, 2}));
    }
  }
  auto small = test::run_cli("generate --model " + dir + " --prompts-file " + (tmp / "p.txt") + flags + " --kv-budget 1K");
  EXPECT_EQ(small.status, 1);
  EXPECT_NE(small.output.find("KV budget"), std::string::npos) << small.output;
  auto bad = test::run_cli("generate --model " + dir + " --prompts-file " + (tmp / "p.txt") + flags + " --order random");
  EXPECT_EQ(bad.status, 1);
}

}  // namespace dlx
