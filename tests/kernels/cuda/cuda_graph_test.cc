// The decoding step's fused kernels against their unfused sequences (bit for bit: add_rmsnorm = add + rmsnorm,
// qkv_rope = split_columns + rope), and CUDA graph replay of the layer stack (Model::run_body) against eager
// execution: the same generated ids for fixed seeds on every sampler mode, cache mode and KV dtype, with the inputs
// of a replay changing between replays. Skipped without a usable GPU.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "engine/generate.h"
#include "kernels/cuda/cuda_backend.h"
#include "model/model.h"
#include "test_util.h"
#include "cuda_test_util.h"

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA

namespace {

class CudaFused : public test::CudaTest {
 protected:
  // Element-for-element equality of two device bf16 tensors.
  void expect_same(const Tensor& a, const Tensor& b, const char* what) {
    const Tensor ha = gpu_->to_host_f32(a), hb = gpu_->to_host_f32(b);
    ASSERT_EQ(ha.numel(), hb.numel()) << what;
    int64_t diff = 0;
    for (int64_t i = 0; i < ha.numel(); ++i) diff += ha.data<float>()[i] != hb.data<float>()[i];
    EXPECT_EQ(diff, 0) << what << " (" << trace() << ")";
  }
};

TEST_F(CudaFused, AddRmsNormEqualsAddThenRmsNorm) {
  // H % 8 == 0 takes the 16-byte path, H = 100 the scalar one.
  for (const auto& [T, H] : std::vector<std::pair<int64_t, int64_t>>{{7, 3584}, {5, 256}, {3, 100}}) {
    SCOPED_TRACE(fmt::format("T {} H {}", T, H));
    const Tensor h = rand_bf16_f32({T, H}), y = rand_bf16_f32({T, H}, 0.5f);
    const Tensor w = gpu_->upload(rand_bf16_f32({H}));
    Tensor h1 = gpu_->from_host_f32(h), h2 = gpu_->from_host_f32(h), yd = gpu_->from_host_f32(y);
    Tensor o1 = gpu_->empty(DType::BF16, {T, H}), o2 = gpu_->empty(DType::BF16, {T, H});
    gpu_->add(h1, yd);
    gpu_->rmsnorm(h1, w, 1e-6f, o1);
    gpu_->add_rmsnorm(h2, yd, w, 1e-6f, o2);
    expect_same(h1, h2, "h");
    expect_same(o1, o2, "out");
    // And the CPU's f32 add + norm, up to bf16 rounding.
    Tensor hc = h, oc = cpu_.empty(DType::F32, {T, H});
    Tensor wc = gpu_->to_host_f32(w);
    cpu_.add_rmsnorm(hc, y, wc, 1e-6f, oc);
    EXPECT_LT(test::rel_error(gpu_->to_host_f32(o2), oc), 1e-2) << trace();
  }
  // The output may not alias h.
  Tensor h = gpu_->from_host_f32(rand_bf16_f32({2, 64})), y = gpu_->from_host_f32(rand_bf16_f32({2, 64}));
  EXPECT_THROW(gpu_->add_rmsnorm(h, y, gpu_->upload(rand_bf16_f32({64})), 1e-6f, h), Error);
}

TEST_F(CudaFused, QkvRopeEqualsSplitThenRope) {
  struct Case {
    int64_t T, Hq, Hkv, D;
  };
  // (a block rotates 4 heads: the q/k boundary inside a block, a partial last block, D = 256, the widest)
  for (const Case c : {Case{13, 28, 4, 128}, Case{9, 4, 2, 64}, Case{5, 4, 4, 16}, Case{3, 2, 1, 6}, Case{6, 5, 3, 32},
                       Case{3, 2, 1, 256}}) {
    SCOPED_TRACE(fmt::format("T {} Hq {} Hkv {} D {}", c.T, c.Hq, c.Hkv, c.D));
    const int64_t Nq = c.Hq * c.D, Nkv = c.Hkv * c.D;
    Tensor qkv = gpu_->from_host_f32(rand_bf16_f32({c.T, Nq + 2 * Nkv}));
    Tensor pos = Tensor::zeros(DType::I64, {c.T});
    for (int64_t t = 0; t < c.T; ++t) pos.data<int64_t>()[t] = int64_t(rng_() % 4096);
    Tensor q1 = gpu_->empty(DType::BF16, {c.T, c.Hq, c.D}), k1 = gpu_->empty(DType::BF16, {c.T, c.Hkv, c.D});
    Tensor v1 = gpu_->empty(DType::BF16, {c.T, Nkv});
    gpu_->split_columns(qkv, {&q1, &k1, &v1});
    gpu_->rope(q1, pos, 10000.0);
    gpu_->rope(k1, pos, 10000.0);
    Tensor q2 = gpu_->empty(DType::BF16, {c.T, c.Hq, c.D}), k2 = gpu_->empty(DType::BF16, {c.T, c.Hkv, c.D});
    Tensor v2 = gpu_->empty(DType::BF16, {c.T, Nkv});
    gpu_->qkv_rope(qkv, pos, 10000.0, q2, k2, v2);
    expect_same(q1, q2, "q");
    expect_same(k1, k2, "k");
    expect_same(v1, v2, "v");
    // Positions in device memory (a captured layer stack's) give the same rotation.
    Tensor dpos = gpu_->empty(DType::I64, {c.T});
    gpu_->copy_from_host(pos, dpos);
    Tensor q3 = gpu_->empty(DType::BF16, {c.T, c.Hq, c.D}), k3 = gpu_->empty(DType::BF16, {c.T, c.Hkv, c.D});
    Tensor v3 = gpu_->empty(DType::BF16, {c.T, Nkv});
    gpu_->qkv_rope(qkv, dpos, 10000.0, q3, k3, v3);
    expect_same(q1, q3, "q (device positions)");
    expect_same(k1, k3, "k (device positions)");
  }
}

// Generation with graphs off, then on, on one model (one backend, so the same tuned GEMM algorithms): the same
// canvas. Each configuration runs twice with graphs on (the second generation replays the graphs captured in
// the first) and on a second prompt set of the same shapes (new inputs in the same graphs).
void expect_graphs_match_eager(Model& m, const std::vector<std::vector<std::vector<int64_t>>>& prompt_sets,
                               const GenerationOptions& o, const std::string& what) {
  for (size_t set = 0; set < prompt_sets.size(); ++set) {
    SCOPED_TRACE(fmt::format("{}, prompt set {}", what, set));
    m.set_graphs(false);
    int eager_steps = 0, graph_steps = 0;
    const Tensor eager = generate_canvas(m, prompt_sets[set], o, {}, nullptr, &eager_steps);
    m.set_graphs(true);
    for (int rep = 0; rep < 2; ++rep) {
      const Tensor graphed = generate_canvas(m, prompt_sets[set], o, {}, nullptr, &graph_steps);
      ASSERT_EQ(graphed.shape(), eager.shape());
      EXPECT_EQ(graph_steps, eager_steps);
      int64_t diff = 0;
      for (int64_t i = 0; i < eager.numel(); ++i) diff += graphed.data<int64_t>()[i] != eager.data<int64_t>()[i];
      EXPECT_EQ(diff, 0) << "ids differ (repetition " << rep << ")";
    }
  }
  EXPECT_GT(m.captured_graphs(), 0u) << what;
}

std::vector<std::vector<std::vector<int64_t>>> prompt_sets(int64_t vocab, int64_t mask_id) {
  auto ids = [&](int64_t n, int64_t salt) {
    std::vector<int64_t> p;
    for (int64_t i = 0; i < n; ++i) {
      int64_t id = (i * 131 + salt * 977 + 7) % vocab;
      p.push_back(id == mask_id ? id + 1 : id);
    }
    return p;
  };
  // Two rows of different lengths (left padding: a key mask), then the same lengths with other ids.
  return {{ids(9, 1), ids(6, 2)}, {ids(9, 3), ids(6, 4)}};
}

// cuda_graph_time_ms (the W4A16 tuner's and the kernel bench's timer): captured calls give a positive time per call
// that grows with the work, the calls really run (a counter of host calls: once in the capture, replays do not call
// back), and it refuses to run inside another capture.
TEST_F(CudaFused, GraphTimingTimesCapturedCalls) {
  const Tensor a = gpu_->from_host_f32(rand_bf16_f32({256, 4096})), b = gpu_->from_host_f32(rand_bf16_f32({4096, 4096}));
  Tensor y = gpu_->empty(DType::BF16, {256, 4096});
  gpu_->matmul(a, b, nullptr, y);  // the GEMM tuner chooses eagerly
  int host_calls = 0;
  bool graphed = false;
  const double ms = cuda_graph_time_ms(
      *gpu_, [&](int) { ++host_calls, gpu_->matmul(a, b, nullptr, y); }, 4, 5, &graphed);
  EXPECT_TRUE(graphed);
  EXPECT_EQ(host_calls, 4);  // captured once, replayed by the device
  EXPECT_GT(ms, 0.0);
  EXPECT_LT(ms, 100.0);
  // 8.6 GFLOP a call: at most ~1000 TFLOP/s (no call skipped) on any GPU this runs on.
  EXPECT_GT(ms, 2.0 * 256 * 4096 * 4096 / 1e15 * 1e3);
  auto graph = gpu_->capture([&] {
    EXPECT_THROW(cuda_graph_time_ms(*gpu_, [&](int) { gpu_->matmul(a, b, nullptr, y); }, 1, 1), Error);
  });
  EXPECT_NE(graph, nullptr);
}

TEST(CudaGraphs, DreamGenerationMatchesEager) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  LoadOptions lo;
  lo.device = "cuda";
  auto m = Model::load(test::source_path("models/kjv-dream-tiny"), lo);
  const auto sets = prompt_sets(m->config().vocab_size, m->config().mask_token_id);
  struct Mode {
    const char* name;
    GenerationOptions o;
  };
  std::vector<Mode> modes;
  auto base = [] {
    GenerationOptions o;
    o.max_new_tokens = 32;
    o.block_length = 8;
    o.steps = 16;
    o.seed = 5;
    return o;
  };
  for (const char* cache : {"none", "prefix", "dual"}) {
    for (const char* alg : {"entropy", "maskgit_plus", "topk_margin", "origin"}) {
      GenerationOptions o = base();
      o.cache = parse_cache_mode(cache), o.alg = parse_dream_alg(alg);
      modes.push_back({"schedule", o});
    }
    GenerationOptions s = base();
    s.cache = parse_cache_mode(cache), s.temperature = 0.7f, s.top_p = 0.9f, s.top_k = 50, s.alg_temp = 0.5f;
    modes.push_back({"sampled", s});
    GenerationOptions t = base();
    t.cache = parse_cache_mode(cache), t.threshold = 0.9f;
    modes.push_back({"threshold", t});
    GenerationOptions k = base();
    k.cache = parse_cache_mode(cache), k.tokens_per_step = 2;
    modes.push_back({"tokens_per_step", k});
    if (std::string(cache) != "none") {
      GenerationOptions f = base();
      f.cache = parse_cache_mode(cache), f.kv_dtype = KvDtype::FP8, f.threshold = 0.9f;
      modes.push_back({"fp8", f});
    }
  }
  for (const Mode& md : modes)
    expect_graphs_match_eager(*m, sets, md.o, fmt::format("{} cache {} alg {}", md.name, to_string(md.o.cache), to_string(md.o.alg)));
}

TEST(CudaGraphs, LladaGenerationMatchesEager) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  LoadOptions lo;
  lo.device = "cuda";
  auto m = Model::load(test::source_path("testdata/fixtures/llada_tiny"), lo);
  const auto sets = prompt_sets(m->config().vocab_size, m->config().mask_token_id);
  for (const char* cache : {"none", "dual"})
    for (const char* remasking : {"low_confidence", "random"})
      for (int variant = 0; variant < 3; ++variant) {
        GenerationOptions o;
        o.max_new_tokens = 16;
        o.block_length = 8;
        o.steps = 8;
        o.seed = 3;
        o.cache = parse_cache_mode(cache);
        o.remasking = parse_remasking(remasking);
        if (variant == 1 && o.remasking == Remasking::Random) continue;  // a threshold compares confidences
        if (variant == 1) o.threshold = 0.5f;
        if (variant == 2) o.tokens_per_step = 2, o.cfg_scale = 1.0f;  // CFG: 2B rows a pass
        expect_graphs_match_eager(*m, sets, o, fmt::format("cache {} remasking {} variant {}", cache, remasking, variant));
      }
}

// Batches of other sizes between replays (requests finishing and joining): every batch shape keeps its own graphs,
// and a batch after others still equals its eager run.
TEST(CudaGraphs, ChangingBatchesStayExact) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  LoadOptions lo;
  lo.device = "cuda";
  auto m = Model::load(test::source_path("models/kjv-dream-tiny"), lo);
  const auto sets = prompt_sets(m->config().vocab_size, m->config().mask_token_id);
  GenerationOptions o;
  o.max_new_tokens = 16;
  o.block_length = 8;
  o.cache = CacheMode::Dual;
  o.threshold = 0.8f;
  const std::vector<std::vector<std::vector<int64_t>>> batches = {
      sets[0], {sets[0][0]}, {sets[1][1], sets[0][0], sets[1][0]}, sets[1], {sets[0][1]}, sets[0]};
  std::vector<Tensor> eager;
  m->set_graphs(false);
  for (const auto& b : batches) eager.push_back(generate_canvas(*m, b, o));
  m->set_graphs(true);
  for (int rep = 0; rep < 2; ++rep)
    for (size_t i = 0; i < batches.size(); ++i) {
      const Tensor g = generate_canvas(*m, batches[i], o);
      ASSERT_EQ(g.shape(), eager[i].shape());
      for (int64_t j = 0; j < g.numel(); ++j)
        ASSERT_EQ(g.data<int64_t>()[j], eager[i].data<int64_t>()[j]) << "batch " << i << " rep " << rep << " at " << j;
    }
  EXPECT_GT(m->captured_graphs(), 0u);
}

}  // namespace

#endif  // DIFFULEX_HAVE_CUDA

}  // namespace dlx
