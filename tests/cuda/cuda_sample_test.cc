// The CUDA row ops of the samplers (gather_rows, sample_rows) against the CPU backend on the same bf16 values
// (fresh random rows each run, the seed printed on failure), and generation with the sampling on the GPU against
// the host sampling path and the CPU backend. Skipped without a usable GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>

#include <fmt/format.h>

#include "core/error.h"
#include "engine/dream_sampler.h"
#include "io/safetensors.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "../test_util.h"
#include "cuda_test_util.h"

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA

namespace {

class CudaSample : public test::CudaTest {
 protected:
  // Host F32 rows rounded to bf16 (what the GPU holds), scaled by `std`; `levels` > 0 rounds further to
  // multiples of 1/levels so that many entries tie.
  Tensor rows(int64_t N, int64_t V, float std, float levels = 0) {
    Tensor t = test::random_tensor(DType::F32, {N, V}, rng_, std);
    for (int64_t i = 0; i < t.numel(); ++i) {
      float& x = t.data<float>()[i];
      if (levels > 0) x = std::round(x * levels) / levels;
      x = bf16_to_f32(f32_to_bf16(x));
    }
    return t;
  }
  void compare(const Tensor& host, const RowSampling& how, const std::vector<RowDraw>& draws, const char* what) {
    const Tensor dev = gpu_->from_host_f32(host);
    const std::vector<TokenChoice> want = cpu_.sample_rows(host, how, draws);
    const std::vector<TokenChoice> got = gpu_->sample_rows(dev, how, draws);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << what << ", seed " << seed_ << ", draw " << i);
      EXPECT_EQ(got[i].token, want[i].token);
      EXPECT_NEAR(got[i].prob, want[i].prob, 1e-5 * std::max(1.0, std::abs(want[i].prob)));
      EXPECT_NEAR(got[i].confidence, want[i].confidence, 1e-4 * std::max(1.0, std::abs(want[i].confidence)));
    }
  }
};

TEST_F(CudaSample, GatherRowsEqualsCpu) {
  for (int64_t H : {896, 37}) {  // 16-byte path and the elementwise path
    Tensor x = rows(50, H, 1.0f);
    const std::vector<int64_t> idx = {49, 3, 3, 0, 17};
    Tensor want = cpu_.empty(DType::F32, {5, H});
    cpu_.gather_rows(x, idx, want);
    Tensor out = gpu_->empty(DType::BF16, {5, H});
    gpu_->gather_rows(gpu_->from_host_f32(x), idx, out);
    Tensor got = gpu_->to_host_f32(out);
    for (int64_t i = 0; i < want.numel(); ++i) ASSERT_EQ(got.data<float>()[i], want.data<float>()[i]) << "H " << H;
  }
  Tensor x = gpu_->empty(DType::BF16, {4, 8}), out = gpu_->empty(DType::BF16, {1, 8});
  EXPECT_THROW(gpu_->gather_rows(x, {4}, out), Error);
}

TEST_F(CudaSample, SiluMulFusedEqualsCpu) {
  for (int64_t I : {int64_t(1024), int64_t(37)}) {  // 16-byte path and the elementwise path
    const int64_t T = 33;
    Tensor gu = rows(T, 2 * I, 2.0f);
    Tensor want = cpu_.empty(DType::F32, {T, I});
    cpu_.silu_mul_fused(gu, want);
    Tensor out = gpu_->empty(DType::BF16, {T, I});
    gpu_->silu_mul_fused(gpu_->from_host_f32(gu), out);
    EXPECT_LT(test::rel_error(gpu_->to_host_f32(out), want), 1e-2) << "I " << I << " seed " << seed_;
  }
}

TEST_F(CudaSample, SplitColumnsEqualsCpu) {
  const int64_t T = 19, a = 3584, b = 512, c = 512;
  Tensor x = rows(T, a + b + c, 1.0f);
  Tensor p = cpu_.empty(DType::F32, {T, a}), q = cpu_.empty(DType::F32, {T, b}), r = cpu_.empty(DType::F32, {T, c});
  cpu_.split_columns(x, {&p, &q, &r});
  Tensor gp = gpu_->empty(DType::BF16, {T, a}), gq = gpu_->empty(DType::BF16, {T, b}), gr = gpu_->empty(DType::BF16, {T, c});
  gpu_->split_columns(gpu_->from_host_f32(x), {&gp, &gq, &gr});
  EXPECT_EQ(test::rel_error(gpu_->to_host_f32(gp), p), 0.0);
  EXPECT_EQ(test::rel_error(gpu_->to_host_f32(gq), q), 0.0);
  EXPECT_EQ(test::rel_error(gpu_->to_host_f32(gr), r), 0.0);
}

// The fused gate/up and q/k/v weights (Model::load on the GPU) give the logits of separate GEMMs.
TEST(CudaFusedGateUp, ForwardMatchesUnfused) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  const std::string dir = test::source_path("models/kjv-dream-tiny");
  LoadOptions lo;
  lo.device = "cuda";
  auto fused = Model::load(dir, lo);
  ::setenv("DIFFULEX_FUSE_GATE_UP", "0", 1);
  ::setenv("DIFFULEX_FUSE_QKV", "0", 1);
  auto apart = Model::load(dir, lo);
  ::unsetenv("DIFFULEX_FUSE_GATE_UP");
  ::unsetenv("DIFFULEX_FUSE_QKV");
  ASSERT_TRUE(fused->layers()[0].gate_up.defined());
  ASSERT_TRUE(fused->layers()[0].qkv.defined());
  EXPECT_EQ(fused->layers()[0].qkv_bias.defined(), fused->config().qkv_bias);
  ASSERT_FALSE(apart->layers()[0].gate_up.defined());
  ASSERT_FALSE(apart->layers()[0].qkv.defined());
  EXPECT_EQ(fused->weight_bytes(), apart->weight_bytes());
  Tensor ids = Tensor::zeros(DType::I64, {2, 24});
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int64_t>()[i] = (i * 37 + 5) % fused->config().vocab_size;
  const Tensor a = fused->forward(ids), b = apart->forward(ids);
  EXPECT_LT(test::rel_error(a, b), 1e-2);
  // The Gate / Up Linear objects still answer for their own halves.
  const Tensor g = fused->layers()[1].linear[int(LinearRole::Gate)]->dequantize();
  const Tensor g2 = apart->layers()[1].linear[int(LinearRole::Gate)]->dequantize();
  EXPECT_EQ(test::rel_error(g, g2), 0.0);
  const Tensor k = fused->layers()[1].linear[int(LinearRole::K)]->dequantize();
  const Tensor k2 = apart->layers()[1].linear[int(LinearRole::K)]->dequantize();
  EXPECT_EQ(test::rel_error(k, k2), 0.0);
  // Each fused layer's own Linear still computes its slice (the view's bias included).
  Tensor x = fused->backend().from_host_f32(Tensor::zeros(DType::F32, {3, fused->config().hidden_size}));
  const Linear& kl = *fused->layers()[1].linear[int(LinearRole::K)];
  Tensor y = fused->backend().empty(DType::BF16, {3, kl.out_features()});
  kl.forward(fused->backend(), x, y);
  const Tensor yh = fused->backend().to_host_f32(y);
  if (fused->config().qkv_bias) {
    const Tensor b = fused->store().get(kl.spec().prefix + ".bias");
    for (int64_t i = 0; i < kl.out_features(); ++i)
      ASSERT_EQ(yh.data<float>()[i], load_as_f32(b.data(), b.dtype(), size_t(i))) << "k bias " << i;
  }
}

// --embed-on-host: the table stays in host memory, each pass's rows are gathered there and copied up; the logits
// are the device table's exactly (the same bf16 rows), and the device holds the table's bytes less.
TEST(CudaEmbedOnHost, ForwardMatchesDeviceTable) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  const std::string dir = test::source_path("models/kjv-dream-tiny");
  LoadOptions lo;
  lo.device = "cuda";
  auto dev = Model::load(dir, lo);
  lo.embed_on_host = true;
  auto host = Model::load(dir, lo);
  const WeightBytes wd = dev->held_weight_bytes(), wh = host->held_weight_bytes();
  const size_t table = size_t(dev->config().vocab_size * dev->config().hidden_size) * 2;
  EXPECT_EQ(wd.embedding, table);
  EXPECT_EQ(wd.host_embedding, 0u);
  EXPECT_EQ(wh.embedding, 0u);
  EXPECT_EQ(wh.host_embedding, table);
  EXPECT_EQ(wd.total() - wh.total(), table);
  Tensor ids = Tensor::zeros(DType::I64, {2, 24});
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int64_t>()[i] = (i * 37 + 5) % dev->config().vocab_size;
  EXPECT_EQ(test::rel_error(host->forward(ids), dev->forward(ids)), 0.0);
  ids.data<int64_t>()[3] = dev->config().vocab_size;  // out of the vocabulary: an error naming the id
  try {
    host->forward(ids);
    ADD_FAILURE() << "an id outside the vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
}

// Packed low-bit q/k/v and gate/up run as one fused W4A16 GEMM each on CUDA (act-order fixture: the three
// share one permutation); the logits equal the unfused model's up to bf16 rounding, and a part used alone (the
// scheduler's path before fusion, the quantizer) still computes its own rows.
TEST(CudaFusedPacked, ForwardMatchesUnfused) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  for (const char* name : {"gptq_sym_g64", "gptq_asym_actorder_g32", "awq_g64"}) {
    SCOPED_TRACE(name);
    const std::string dir = test::source_path(std::string("testdata/fixtures/") + name);
    LoadOptions lo;
    lo.device = "cuda";
    auto fused = Model::load(dir, lo);
    ::setenv("DIFFULEX_FUSE_PACKED", "0", 1);
    auto apart = Model::load(dir, lo);
    ::unsetenv("DIFFULEX_FUSE_PACKED");
    // The act-order fixture gives every layer its own permutation, so nothing there fuses.
    const bool act_order = std::string(name).find("actorder") != std::string::npos;
    EXPECT_EQ(fused->layers()[0].gate_up_packed != nullptr, !act_order);
    EXPECT_EQ(fused->layers()[0].qkv_packed != nullptr, !act_order);
    ASSERT_FALSE(apart->layers()[0].gate_up_packed != nullptr);
    EXPECT_EQ(fused->weight_bytes(), apart->weight_bytes());
    Tensor ids = Tensor::zeros(DType::I64, {2, 24});
    for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int64_t>()[i] = (i * 37 + 5) % fused->config().vocab_size;
    EXPECT_LT(test::rel_error(fused->forward(ids), apart->forward(ids)), 1e-2);
    const Linear& up = *fused->layers()[1].linear[int(LinearRole::Up)];
    std::mt19937_64 rng(7);
    Tensor x = fused->backend().from_host_f32(test::random_tensor(DType::F32, {3, up.in_features()}, rng));
    Tensor y = fused->backend().empty(DType::BF16, {3, up.out_features()});
    Tensor y2 = apart->backend().empty(DType::BF16, {3, up.out_features()});
    up.forward(fused->backend(), x, y);
    apart->layers()[1].linear[int(LinearRole::Up)]->forward(apart->backend(),
                                                            apart->backend().from_host_f32(fused->backend().to_host_f32(x)), y2);
    EXPECT_LT(test::rel_error(fused->backend().to_host_f32(y), apart->backend().to_host_f32(y2)), 1e-2);
  }
}

TEST_F(CudaSample, DreamRuleEqualsCpu) {
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  struct Case {
    float temperature, top_p;
    int64_t top_k;
    Confidence conf;
    float levels;
  };
  const Case cases[] = {
      {0, 1, 0, Confidence::Prob, 0},           {0, 1, 0, Confidence::Margin, 0},
      {0, 1, 0, Confidence::NegEntropy, 0},     {0, 0.95f, 0, Confidence::NegEntropy, 0},
      {0.2f, 0.95f, 0, Confidence::NegEntropy, 0}, {0.7f, 1, 0, Confidence::Prob, 0},
      {1.0f, 0.9f, 0, Confidence::Margin, 4},   {1.0f, 0.5f, 0, Confidence::Prob, 2},
      {0.8f, 1, 50, Confidence::Prob, 0},       {0.6f, 0.9f, 20, Confidence::NegEntropy, 4},
      {0, 1, 7, Confidence::Margin, 1},
  };
  for (int64_t V : {int64_t(152064), int64_t(1000)}) {
    for (const Case& c : cases) {
      const int64_t N = 9;
      Tensor l = rows(N, V, 2.5f, c.levels);
      RowSampling how;
      how.temperature = c.temperature;
      how.top_p = c.top_p;
      how.top_k = c.top_k;
      how.confidence = c.conf;
      how.suppress = {0, 11, V - 1};
      std::vector<RowDraw> draws;
      for (int64_t i = 0; i < 2 * N; ++i) draws.push_back(RowDraw{(i * 4) % N, -1, uni(rng_), {}});
      compare(l, how, draws,
              fmt::format("V {} T {} top_p {} top_k {} conf {} levels {}", V, c.temperature, c.top_p, c.top_k,
                          int(c.conf), c.levels)
                  .c_str());
    }
  }
}

TEST_F(CudaSample, GuidanceAndGumbelRuleEqualCpu) {
  const int64_t N = 5, V = 32000;
  Tensor l = rows(2 * N, V, 2.0f);
  for (float T : {0.0f, 0.8f}) {  // T > 0 takes the host path (sequential noise stream)
    RowSampling how;
    how.rule = RowSampling::Rule::Gumbel;
    how.temperature = T;
    how.cfg_scale = 0.5f;
    how.seed = 4;
    how.suppress = {3};
    std::vector<RowDraw> draws;
    for (int64_t i = 0; i < N; ++i) draws.push_back(RowDraw{i, N + i, 0, {11, 0, 2, uint64_t(i)}});
    compare(l, how, draws, T > 0 ? "gumbel T 0.8" : "gumbel T 0");
  }
  RowSampling dream;
  dream.cfg_scale = 2.0f;
  dream.confidence = Confidence::Margin;
  std::vector<RowDraw> draws;
  for (int64_t i = 0; i < N; ++i) draws.push_back(RowDraw{N + i, i, 0, {}});
  compare(l, dream, draws, "dream cfg");
}

TEST_F(CudaSample, RowWithoutFiniteLogitIsAnError) {
  Tensor l = rows(1, 16, 1.0f);
  RowSampling how;
  for (int64_t v = 0; v < 16; ++v) how.suppress.push_back(v);
  try {
    gpu_->sample_rows(gpu_->from_host_f32(l), how, {RowDraw{}});
    ADD_FAILURE() << "a fully suppressed row was sampled";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sample_rows"), std::string::npos) << e.what();
  }
}

// Times one step's sampling work at Dream-7B's vocabulary: the device op against the host path it replaces
// (logits copied to the host, then the row functions on the thread pool). Printed; the numbers go to
// docs/PERFORMANCE.md.
TEST_F(CudaSample, TimingAtDreamVocabulary) {
  const int64_t V = 152064;
  for (int64_t N : {int64_t(32), int64_t(256)}) {
    Tensor dev = cuda_random_tensor(*gpu_, DType::BF16, {N, V}, 17, 0.0f, 3.0f);
    RowSampling how;
    how.temperature = 0.2f;
    how.top_p = 0.95f;
    how.confidence = Confidence::NegEntropy;
    how.suppress = {151666};
    std::vector<RowDraw> draws;
    for (int64_t i = 0; i < N; ++i) draws.push_back(RowDraw{i, -1, 0.37, {}});
    auto time_ms = [&](auto&& fn) {
      fn();
      std::vector<double> t;
      for (int r = 0; r < 5; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(t.begin(), t.end());
      return t[t.size() / 2];
    };
    const double gpu_ms = time_ms([&] { gpu_->sample_rows(dev, how, draws); });
    const double host_ms = time_ms([&] {
      Tensor h = gpu_->to_host_f32(dev);
      cpu_.sample_rows(h, how, draws);
    });
    std::printf("[timing] sample_rows N=%lld V=%lld (T 0.2, top_p 0.95, entropy): gpu %.3f ms, host path %.3f ms\n",
                (long long)N, (long long)V, gpu_ms, host_ms);
    const std::vector<TokenChoice> a = gpu_->sample_rows(dev, how, draws), b = cpu_.sample_rows(gpu_->to_host_f32(dev), how, draws);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].token, b[i].token) << "N " << N << " draw " << i;
  }
}

// Greedy generation on the shipped tiny Dream model. (1) Sampling on the GPU gives exactly the tokens of the host
// sampling path over the same GPU logits. (2) Against the CPU backend: the GPU forward runs in bf16 (logits within
// ~1e-2 relative of the f32 CPU forward, docs/CUDA.md), so near-tied confidences may order differently and whole
// generations can drift apart; what must agree is the token at every position whose CPU logits have a clear top-1
// (a top1 - top2 gap > 0.5, far above the bf16 error), checked at every step on the canvas the GPU run produced.
TEST(CudaSampleGenerate, GreedyTokensMatchHostPathAndCpu) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  const std::string dir = test::source_path("models/kjv-dream-tiny");
  LoadOptions lo;
  lo.device = "cuda";
  auto gpu = Model::load(dir, lo);
  auto cpu = Model::load(dir);
  Tokenizer tok = Tokenizer::load(dir);
  int64_t compared = 0, positions = 0;
  for (const char* text : {"And it came to pass", "In the beginning God", "The LORD is my shepherd"}) {
    std::vector<int32_t> ids32 = tok.encode(text, false);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    Tensor prompt = Tensor::zeros(DType::I64, {1, int64_t(ids.size())});
    std::copy(ids.begin(), ids.end(), prompt.data<int64_t>());
    UnmaskOptions o;
    o.max_new_tokens = 16;
    o.steps = 16;
    o.mask_token_id = gpu->config().mask_token_id;
    RowLogitsFn host = [&](const Tensor& x, const Tensor& km, const std::vector<int64_t>& r) {
      return gpu->forward(x, km, r);
    };
    RowSampleFn dev = backend_row_sampler(gpu->backend(), [&](const Tensor& x, const Tensor& km,
                                                              const std::vector<int64_t>& r) {
      return gpu->forward_device(x, km, r);
    });
    // (2) runs inside the GPU generation: the CPU forward on the same canvas and rows.
    RowSampleFn checked = [&](const Tensor& x, const Tensor& km, const RowSampling& how,
                              const std::vector<RowDraw>& draws) {
      std::vector<TokenChoice> got = dev(x, km, how, draws);
      std::vector<int64_t> rows;
      for (const RowDraw& d : draws) rows.push_back(d.row);
      std::vector<int64_t> sorted = rows;
      std::sort(sorted.begin(), sorted.end());
      sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
      const Tensor cl = cpu->forward(x, km, sorted);
      const int64_t V = cl.dim(1);
      for (size_t i = 0; i < draws.size(); ++i) {
        const int64_t r = std::lower_bound(sorted.begin(), sorted.end(), draws[i].row) - sorted.begin();
        std::vector<float> row(cl.data<float>() + r * V, cl.data<float>() + (r + 1) * V);
        for (int64_t id : how.suppress)
          if (id >= 0 && id < V) row[size_t(id)] = -INFINITY;
        const int64_t best = argmax(row.data(), V);
        float second = -INFINITY;
        for (int64_t v = 0; v < V; ++v)
          if (v != best) second = std::max(second, row[size_t(v)]);
        ++positions;
        if (row[size_t(best)] - second > 0.5f) {
          ++compared;
          EXPECT_EQ(got[i].token, best) << text << ": logits row " << draws[i].row;
        }
      }
      return got;
    };
    Tensor a = unmask_generate(UnmaskPolicy::Dream, host, prompt, o), b = unmask_generate(UnmaskPolicy::Dream, dev, prompt, o);
    for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(b.data<int64_t>()[i], a.data<int64_t>()[i]) << text << " at " << i;
    Tensor c = unmask_generate(UnmaskPolicy::Dream, checked, prompt, o);
    for (int64_t i = 0; i < a.numel(); ++i) EXPECT_EQ(c.data<int64_t>()[i], a.data<int64_t>()[i]) << text << " at " << i;
  }
  std::printf("[cuda vs cpu] %lld of %lld position-steps had a clear CPU top-1 and were compared\n", (long long)compared,
              (long long)positions);
  EXPECT_GT(compared, positions / 4) << "too few clear positions to compare";
}

}  // namespace

#endif  // DIFFULEX_HAVE_CUDA

}  // namespace dlx
