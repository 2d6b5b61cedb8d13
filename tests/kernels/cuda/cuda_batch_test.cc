// Continuous batching and the fp8 KV cache on the CUDA backend, and `diffulex bench decode` on the CPU (and on
// the GPU when there is one). bf16 activations and cuBLASLt's per-shape algorithm choice make CUDA results equal
// to the solo runs only up to rounding, so the CUDA checks bound the differences instead of asking for bits.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "engine/batch_scheduler.h"
#include "io/safetensors.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "test_util.h"

namespace dlx {

namespace {

nlohmann::json check_decode_bench_json(const std::string& device, const std::string& quant = "none",
                                       bool quant_head = false) {
  auto r = test::run_cli("bench decode --device " + device +
                         " --random-config dream-tiny --batch 1,3 --cache none,dual --tokens-per-step 1,2 "
                         "--gen-length 16 --block 8 --prompt-length 5 --blocks 1 --kv-dtype fp8 --quant " + quant +
                         (quant == "none" ? "" : " --group-size 32") + (quant_head ? " --quant-head" : ""));
  EXPECT_EQ(r.status, 0) << r.output;
  const size_t brace = r.output.find("{\n");  // the per-configuration lines go to stderr first
  if (r.status != 0 || brace == std::string::npos) {
    ADD_FAILURE() << r.output;
    return {};
  }
  nlohmann::json j = nlohmann::json::parse(r.output.substr(brace));
  EXPECT_EQ(j["mode"], "decode");
  EXPECT_EQ(j["quant"], quant);
  EXPECT_EQ(j["runs"].size(), 2u * 2u * 2u);
  for (const auto& run : j["runs"]) {
    const int64_t B = run["batch"], tps = run["tokens_per_step"];
    EXPECT_EQ(run["steps_timed"].get<int64_t>(), 8 / tps) << run.dump();  // one block
    EXPECT_EQ(run["tokens_timed"].get<int64_t>(), 8 * B) << run.dump();
    EXPECT_GT(run["step_ms_mean"].get<double>(), 0.0);
    EXPECT_GT(run["tokens_per_s"].get<double>(), 0.0);
    EXPECT_EQ(run["kv_dtype"], run["cache"] == "none" ? "bf16" : "fp8");
    if (run["cache"] == "dual") {
      EXPECT_GT(run["speedup_vs_none"].get<double>(), 0.0);
    }
  }
  return j;
}

}  // namespace

TEST(BenchDecodeCli, CpuTinyPresetPrintsJson) { check_decode_bench_json("cpu"); }

// Random packed 4-bit linears: the same decode steps on a model whose transformer weights take about a quarter of
// the bytes (the bf16 embedding and LM head are the same in both).
TEST(BenchDecodeCli, CpuTinyPresetW4A16) {
  const nlohmann::json dense = check_decode_bench_json("cpu"), packed = check_decode_bench_json("cpu", "w4a16");
  if (dense.empty() || packed.empty()) return;
  EXPECT_LT(packed["weight_bytes"].get<int64_t>(), dense["weight_bytes"].get<int64_t>());
  EXPECT_EQ(packed["held_weight_bytes"]["total"], packed["weight_bytes"]);
  EXPECT_EQ(packed["held_weight_bytes"]["head"], dense["held_weight_bytes"]["head"]);
  // --quant-head: the LM head packed too.
  const nlohmann::json head = check_decode_bench_json("cpu", "w4a16", true);
  if (head.empty()) return;
  EXPECT_EQ(head["quant_head"], true);
  EXPECT_LT(head["held_weight_bytes"]["head"].get<int64_t>(), packed["held_weight_bytes"]["head"].get<int64_t>());
  EXPECT_EQ(head["held_weight_bytes"]["packed_linears"], packed["held_weight_bytes"]["packed_linears"]);
}

TEST(BenchDecodeCli, RejectsBadOptions) {
  EXPECT_EQ(test::run_cli("bench decode --random-config dream-tiny --block 8 --tokens-per-step 3").status, 1);
  EXPECT_EQ(test::run_cli("bench decode --random-config dream-tiny --gen-length 20 --block 8").status, 1);
  EXPECT_EQ(test::run_cli("bench decode --random-config dream-tiny --cache full").status, 1);
}

#ifdef DIFFULEX_HAVE_CUDA

TEST(BenchDecodeCli, CudaTinyPresetPrintsJson) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  check_decode_bench_json("cuda");
}

// The CUDA kernels quantize as the CPU backend: same scales, codes at most one step apart (rounding of ties).
TEST(CudaFp8Kv, OpsMatchCpu) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  auto cuda = make_cuda_backend();
  CpuBackend cpu;
  const int64_t N = 300, heads = 4, D = 128;
  Tensor x = Tensor::zeros(DType::F32, {N, heads * D});
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0, 1);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = bf16_to_f32(f32_to_bf16(nd(rng) * std::exp(nd(rng))));
  Tensor q = Tensor::zeros(DType::F8_E4M3, {N, heads * D}), sc = Tensor::zeros(DType::F32, {N, heads});
  cpu.kv_quantize_fp8(x, heads, q, sc);
  Tensor xd = cuda->from_host_f32(x);
  Tensor qd = cuda->empty(DType::F8_E4M3, {N, heads * D}), scd = cuda->empty(DType::F32, {N, heads});
  cuda->kv_quantize_fp8(xd, heads, qd, scd);
  Tensor yd = cuda->empty(DType::BF16, {N, heads * D});
  cuda->kv_dequantize_fp8(qd, scd, heads, yd);
  Tensor y = cuda->to_host_f32(yd);
  Tensor gscale = cuda->to_host_f32(scd);  // F32 on the device: copied as is
  // The GPU's codes are read through its dequantized output: bf16(scale * e4m3) against the CPU's codes.
  int64_t off = 0;
  for (int64_t r = 0; r < N * heads; ++r) {
    ASSERT_EQ(gscale.data<float>()[r], sc.data<float>()[r]) << "row " << r;
    for (int64_t d = 0; d < D; ++d) {
      const int64_t i = r * D + d;
      const float want = bf16_to_f32(f32_to_bf16(sc.data<float>()[r] * fp8e4m3_to_f32(q.data<uint8_t>()[i])));
      off += y.data<float>()[i] != want;
      // Round trip within half an e4m3 step (plus bf16 rounding of the output).
      const float v = x.data<float>()[i], s = sc.data<float>()[r];
      EXPECT_LE(std::fabs(y.data<float>()[i] - v), std::fabs(v) / 16 + s / 1024 + std::fabs(v) / 128);
    }
  }
  const int64_t off_by_one = off;
  EXPECT_LE(off_by_one, N * heads * D / 1000);
}

// fp8 cache on CUDA: refresh logits within a few percent of the exact forward; the batched ragged pass equals the
// per-sequence passes up to bf16 GEMM rounding.
TEST(CudaFp8Kv, RefreshErrorBoundedAndSlotsMatch) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  std::string dir = test::source_path("testdata/fixtures/dream_tiny");
  Tensor ids = TensorStore::open_file(dir + "/reference.safetensors")->get("input_ids");
  LoadOptions lo;
  lo.device = "cuda";
  auto model = Model::load(dir, lo);
  const int64_t L = ids.dim(1);
  Tensor full = model->forward(ids);
  KvCache cache;
  cache.fp8 = true;
  const double err = test::rel_error(model->forward_window(ids, {}, cache, 0, L), full);
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 0.05);
  for (bool fp8 : {false, true}) {
    Tensor a = Tensor::zeros(DType::I64, {1, L}), b = Tensor::zeros(DType::I64, {1, L - 3});
    for (int64_t l = 0; l < L; ++l) a.data<int64_t>()[l] = ids.data<int64_t>()[l];
    for (int64_t l = 0; l < L - 3; ++l) b.data<int64_t>()[l] = ids.data<int64_t>()[L + l];
    KvCache ca, cb, ca2, cb2;
    ca.fp8 = cb.fp8 = ca2.fp8 = cb2.fp8 = fp8;
    std::vector<SlotPass> refresh(2);
    refresh[0].ids = a, refresh[0].cache = &ca;
    refresh[1].ids = b, refresh[1].cache = &cb;
    auto r = model->forward_slots(refresh);  // logits on the device
    for (Tensor& t : r) t = model->backend().to_host_f32(t);
    EXPECT_LT(test::rel_error(r[0], model->forward_window(a, {}, ca2, 0, L)), 1e-2);
    EXPECT_LT(test::rel_error(r[1], model->forward_window(b, {}, cb2, 0, L - 3)), 1e-2);
    std::vector<SlotPass> win(2);
    win[0].ids = a, win[0].cache = &ca, win[0].begin = 2, win[0].end = 6;
    win[1].ids = b, win[1].cache = &cb, win[1].begin = 1, win[1].end = 3, win[1].logit_rows = {2};
    auto w = model->forward_slots(win);
    for (Tensor& t : w) t = model->backend().to_host_f32(t);
    EXPECT_LT(test::rel_error(w[0], model->forward_window(a, {}, ca2, 2, 6)), 1e-2) << "fp8 " << fp8;
    EXPECT_LT(test::rel_error(w[1], model->forward_window(b, {}, cb2, 1, 3, {2})), 1e-2) << "fp8 " << fp8;
  }
}

// The native ragged attention (DIFFULEX_SLOT_ATTENTION=1) inside whole ragged passes: three slots (two cached, of
// different lengths and windows, one with a key mask; one without a cache), a refresh pass then a window pass, on
// a bidirectional model (dream_tiny) and a block-causal one (sdar_tiny, block 4), against the per-slot path. The
// GEMMs are the same calls in both runs and the attention kernel does the same math per slot, so the logits should
// agree bit for bit; the check allows bf16 rounding (1e-2) and prints whether they do.
TEST(CudaContinuousBatch, NativeSlotAttentionMatchesPerSlotPath) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  const test::ScopedEnv restore("DIFFULEX_SLOT_ATTENTION", "0");  // whatever ends the test, the old value back
  for (const char* fixture : {"dream_tiny", "sdar_tiny"}) {
    LoadOptions lo;
    lo.device = "cuda";
    auto model = Model::load(test::source_path(std::string("testdata/fixtures/") + fixture), lo);
    std::mt19937_64 rng(5);
    auto row = [&](int64_t len) {
      Tensor t = Tensor::zeros(DType::I64, {1, len});
      for (int64_t l = 0; l < len; ++l) t.data<int64_t>()[l] = int64_t(rng() % uint64_t(model->config().vocab_size));
      return t;
    };
    const Tensor a = row(20), b = row(13), c = row(9);
    Tensor mask_b = Tensor::zeros(DType::U8, {1, 13});
    for (int64_t l = 2; l < 13; ++l) mask_b.data<uint8_t>()[l] = 1;  // a left-padded prompt
    auto passes = [&](const char* flag) {
      setenv("DIFFULEX_SLOT_ATTENTION", flag, 1);
      KvCache ca, cb;
      std::vector<SlotPass> refresh(3);
      refresh[0].ids = a, refresh[0].cache = &ca;
      refresh[1].ids = b, refresh[1].cache = &cb, refresh[1].key_mask = mask_b;
      refresh[2].ids = c;
      std::vector<Tensor> out = model->forward_slots(refresh);
      std::vector<SlotPass> win(3);
      win[0].ids = a, win[0].cache = &ca, win[0].begin = 8, win[0].end = 12;
      win[1].ids = b, win[1].cache = &cb, win[1].key_mask = mask_b, win[1].begin = 4, win[1].end = 8;
      win[1].logit_rows = {5};
      win[2].ids = c;
      for (const Tensor& t : model->forward_slots(win)) out.push_back(t);
      for (Tensor& t : out) t = model->backend().to_host_f32(t);
      return out;
    };
    passes("0");  // the GEMMs' one-time algorithm choice happens here, outside the comparison
    const std::vector<Tensor> want = passes("0"), got = passes("1");
    ASSERT_EQ(got.size(), want.size());
    int exact = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_LT(test::rel_error(got[i], want[i]), 1e-2) << fixture << " logits " << i;
      exact += got[i].nbytes() == want[i].nbytes() && std::memcmp(got[i].data(), want[i].data(), got[i].nbytes()) == 0;
    }
    std::printf("%s: %d of %zu logit tensors bit-identical to the per-slot path\n", fixture, exact, got.size());
  }
}

// The scheduler on CUDA: every request completes; tokens agree with the solo CUDA runs except where bf16 rounding
// of a different batch shape flips a near tie (counted and bounded).
TEST(CudaContinuousBatch, MatchesSoloRunsUpToRounding) {
  std::string why;
  if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  std::string dir = test::source_path("models/kjv-dream-tiny");
  LoadOptions lo;
  lo.device = "cuda";
  auto model = Model::load(dir, lo);
  Tokenizer tok = Tokenizer::load(dir);
  std::vector<std::vector<int64_t>> prompts;
  for (const char* p : {"In the beginning", "And Ruth said unto Naomi, Intreat me not", "Blessed", "The LORD is my shepherd"})
    prompts.push_back(format_prompt(tok, p, false));
  for (const char* cache : {"none", "dual"}) {
    GenerationOptions o;
    o.max_new_tokens = 16;
    o.block_length = 8;
    o.cache = parse_cache_mode(cache);
    SchedulerOptions so;
    so.max_batch = 3;
    std::vector<GenerationResult> got = generate_continuous(*model, tok, prompts, o, so);
    int64_t same = 0, total = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      GenerationResult solo = generate(*model, tok, prompts[i], o);
      for (size_t t = 0; t < solo.new_ids.size() && t < got[i].new_ids.size(); ++t) same += solo.new_ids[t] == got[i].new_ids[t];
      total += int64_t(solo.new_ids.size());
    }
    std::printf("cache %s: %lld of %lld tokens equal to the solo CUDA runs\n", cache, (long long)same, (long long)total);
    EXPECT_GE(double(same), 0.75 * double(total)) << cache;
  }
}

#endif

}  // namespace dlx
