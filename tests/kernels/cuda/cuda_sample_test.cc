// CUDA-only checks around the samplers: the sampling timing at Dream-7B's vocabulary, generation with the sampling
// on the GPU against the host sampling path and the CPU backend, and the fused / host-embedding forwards. The row
// ops themselves run on every backend in tests/engine/sample_rows_test.cc. Skipped without a usable GPU.
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
#include "test_util.h"
#include "cuda_test_util.h"

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA

namespace {

using CudaSample = test::CudaTest;

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
