// Block KV cache: the window pass is exact when the cached keys/values are current (on every backend,
// tests/engine/backends.h), and cached generation runs end to end (its results are approximate by design, so only
// determinism and sanity are asserted there).
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "engine/generate.h"
#include "io/safetensors.h"
#include "backends.h"
#include "../test_util.h"

namespace dlx {

namespace {
Tensor rows_of(const Tensor& logits, int64_t V, const std::vector<int64_t>& rows) {
  Tensor out = Tensor::zeros(DType::F32, {int64_t(rows.size()), V});
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy_n(logits.data<float>() + rows[i] * V, V, out.data<float>() + int64_t(i) * V);
  return out;
}

using KvCacheWindow = test::BackendTest;

// Against the same backend's full forward: exact up to f32 summation order on the CPU; CUDA's bf16 activations
// round the cached keys and values.
TEST_P(KvCacheWindow, RefreshAndWindowMatchFullForward) {
  const double refresh_tol = on_cpu() ? 1e-6 : 1e-3, window_tol = on_cpu() ? 1e-5 : 1e-2;
  for (const char* name : {"dream_tiny", "llada_tiny"}) {
    std::string dir = test::source_path(std::string("testdata/fixtures/") + name);
    auto ref = TensorStore::open_file(dir + "/reference.safetensors");
    Tensor ids = ref->get("input_ids");
    auto model = Model::load(dir, load_options());
    const int64_t B = ids.dim(0), L = ids.dim(1), V = model->config().vocab_size;
    Tensor full = model->forward(ids);
    KvCache cache;
    Tensor refreshed = model->forward_window(ids, {}, cache, 0, L);
    EXPECT_LT(test::rel_error(refreshed, full), refresh_tol) << name;
    // With current keys/values, recomputing any window gives the full forward's logits for its rows.
    std::vector<int64_t> rows = {3, 4, 5, L + 3, L + 6, 2 * L + 4};
    Tensor win = model->forward_window(ids, {}, cache, 3, 7, rows);
    EXPECT_LT(test::rel_error(win, rows_of(full.reshape({B * L, V}), V, rows)), window_tol) << name;
    EXPECT_THROW(model->forward_window(ids, {}, cache, 3, 7, {2}), Error);  // row outside the window
    KvCache empty;
    EXPECT_THROW(model->forward_window(ids, {}, empty, 3, 7), Error);  // an empty cache must be refreshed first
  }
}

// One sequence's window (B = 1) has its keys and values produced straight into the cache rows
// (Model::cache_window_rows), a batch's through a copy: after a token of the window changed, both must attend to the
// window's new keys and values, so the B = 1 logits equal row 0 of the same sequence twice in a batch; a window that
// leaves the changed token out (its stale cached entries read) differs, which shows the check can fail.
TEST_P(KvCacheWindow, OneSequenceWindowWritesTheCacheInPlace) {
  const double tol = on_cpu() ? 1e-5 : 1e-2;
  // The shipped model: its key/value rows (2 heads x 64) are 256-byte multiples in bf16 and f32, which the in-place
  // path asks (the 16-wide heads of the tiny fixtures are not).
  auto model = Model::load(test::source_path("models/kjv-dream-tiny"), load_options());
  const int64_t L = 24, V = model->config().vocab_size;
  std::vector<int64_t> all(size_t(L), 0);
  for (int64_t l = 0; l < L; ++l) all[size_t(l)] = (l * 37 + 11) % V;
  Tensor one = Tensor::zeros(DType::I64, {1, L}), two = Tensor::zeros(DType::I64, {2, L});
  for (int64_t l = 0; l < L; ++l)
    one.data<int64_t>()[l] = two.data<int64_t>()[l] = two.data<int64_t>()[L + l] = all[size_t(l)];
  KvCache c1, c2;
  model->forward_window(one, {}, c1, 0, L);
  model->forward_window(two, {}, c2, 0, L);
  for (Tensor* t : {&one, &two})
    for (int64_t b = 0; b < t->dim(0); ++b) t->data<int64_t>()[b * L + 4] = (t->data<int64_t>()[b * L + 4] + 7) % V;
  Tensor w1 = model->forward_window(one, {}, c1, 3, 7, {5, 6});
  Tensor w2 = model->forward_window(two, {}, c2, 3, 7, {5, 6});
  EXPECT_LT(test::rel_error(w1, w2), tol);
  KvCache c3;
  for (int64_t l = 0; l < L; ++l) one.data<int64_t>()[l] = all[size_t(l)];
  model->forward_window(one, {}, c3, 0, L);  // the old ids
  one.data<int64_t>()[4] = (one.data<int64_t>()[4] + 7) % V;
  Tensor stale = model->forward_window(one, {}, c3, 5, 7, {5, 6});  // row 4's cached entries are the old token's
  const double moved = test::rel_error(stale, w1);
  std::printf("[ kv_cache ] stale window vs fresh: relative difference %.3g (tolerance %.0e)\n", moved, tol);
  EXPECT_GT(moved, 5 * tol);
}

DLX_INSTANTIATE_OVER_BACKENDS(KvCacheWindow);

}  // namespace

TEST(KvCache, StaleEntriesAreUsedUntilRefresh) {
  std::string dir = test::source_path("testdata/fixtures/dream_tiny");
  Tensor ids = TensorStore::open_file(dir + "/reference.safetensors")->get("input_ids");
  Tensor changed = Tensor::from_data(DType::I64, ids.shape(), ids.data());
  changed.data<int64_t>()[8] = (changed.data<int64_t>()[8] + 1) % 300;  // row 0, last position
  auto model = Model::load(dir);
  KvCache cache;
  model->forward_window(ids, {}, cache, 0, ids.dim(1));
  // Position 8 changed but the window [0, 4) reads its cached (old) key/value: same as the old full forward.
  Tensor win = model->forward_window(changed, {}, cache, 0, 4, {0});
  Tensor old_full = model->forward(ids, {}, {0});
  Tensor new_full = model->forward(changed, {}, {0});
  EXPECT_LT(test::rel_error(win, old_full), 1e-5);
  EXPECT_GT(test::rel_error(win, new_full), 1e-4);
}

TEST(KvCache, CachedGenerationIsDeterministic) {
  std::string dir = test::source_path("models/kjv-dream-tiny");
  auto model = Model::load(dir);
  Tokenizer tok = Tokenizer::load(dir);
  std::vector<int64_t> prompt = format_prompt(tok, "And the LORD said unto Moses,", false);
  for (const char* mode : {"prefix", "dual"}) {
    GenerationOptions o;
    o.max_new_tokens = 32;
    o.block_length = 8;
    o.steps = 16;
    o.cache = parse_cache_mode(mode);
    GenerationResult a = generate(*model, tok, prompt, o), b = generate(*model, tok, prompt, o);
    EXPECT_EQ(a.new_ids, b.new_ids) << mode;
    EXPECT_GT(a.text.size(), 20u) << mode;
  }
  EXPECT_THROW(parse_cache_mode("all"), Error);
}

}  // namespace dlx

namespace dlx {

// Ragged batches: each row's result equals generating that prompt alone with the same seed.
TEST(GenerateBatch, EachRowEqualsItsSoloRun) {
  std::string dir = test::source_path("models/kjv-dream-tiny");
  auto model = Model::load(dir);
  Tokenizer tok = Tokenizer::load(dir);
  std::vector<std::vector<int64_t>> prompts = {format_prompt(tok, "In the beginning", false),
                                               format_prompt(tok, "And Ruth said unto Naomi, Intreat me not", false),
                                               format_prompt(tok, "Blessed", false)};
  GenerationOptions o;
  o.max_new_tokens = 24;
  o.steps = 12;
  o.temperature = 0.7f;
  o.top_p = 0.9f;
  o.seed = 11;
  std::vector<GenerationResult> batch = generate_batch(*model, tok, prompts, o);
  ASSERT_EQ(batch.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationResult solo = generate(*model, tok, prompts[i], o);
    EXPECT_EQ(batch[i].new_ids, solo.new_ids) << "row " << i;
    EXPECT_EQ(batch[i].prompt_ids, prompts[i]);
  }
}

}  // namespace dlx
