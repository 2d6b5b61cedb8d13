// Block-diffusion models (SDAR, Fast-dLLM v2; docs/BLOCK_DIFFUSION.md): configs, the block-causal forward against
// HF transformers (testdata/fixtures/{sdar,fast_dllm_v2}_tiny, tools/make_block_fixtures.py), the exact block KV
// cache against the uncached forward, the block decoder against the fixtures' reference decodes, batching and
// continuous batching against solo runs, and GPTQ / AWQ quantization of the Qwen3 layout.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include "core/error.h"
#include "engine/batch_scheduler.h"
#include "engine/block_sampler.h"
#include "engine/generate.h"
#include "io/safetensors.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/model.h"
#include "quant/quantizer.h"
#include "../test_util.h"
#include "backends.h"
#include "tokenizer/tokenizer.h"

namespace dlx {

namespace {

std::string fixture(const std::string& name) { return test::source_path("testdata/fixtures/" + name); }

std::vector<int64_t> to_vec(const Tensor& t) { return {t.data<int64_t>(), t.data<int64_t>() + t.numel()}; }

}  // namespace

TEST(BlockConfig, SdarAndFastDllmV2Fields) {
  ModelConfig s = load_model_config(fixture("sdar_tiny"));
  EXPECT_EQ(s.arch, Arch::SDAR);
  EXPECT_TRUE(s.qk_norm);
  EXPECT_FALSE(s.qkv_bias);
  EXPECT_EQ(s.block_size, 4);
  EXPECT_EQ(s.head_dim, 16);
  EXPECT_EQ(s.mask_token_id, 319);
  EXPECT_FALSE(s.shift_logits());
  ModelConfig f = load_model_config(fixture("fast_dllm_v2_tiny"));
  EXPECT_EQ(f.arch, Arch::FastDLLMv2);
  EXPECT_FALSE(f.qk_norm);
  EXPECT_TRUE(f.qkv_bias);
  EXPECT_EQ(f.block_size, 4);
  EXPECT_EQ(f.sub_block_size, 4);  // min(8, bd_size)
  EXPECT_TRUE(f.shift_logits());

  // Fast_dLLM_v2_7B's config.json has no mask_token_id: modeling.py's 151665 when the vocabulary holds it.
  nlohmann::json j = {{"model_type", "Fast_dLLM_Qwen"}, {"hidden_size", 64}, {"intermediate_size", 128},
                      {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"vocab_size", 152064}, {"bd_size", 32}};
  ModelConfig g = parse_model_config(j, "f.json");
  EXPECT_EQ(g.mask_token_id, 151665);
  EXPECT_EQ(g.sub_block_size, 8);
  j["vocab_size"] = 1000;
  EXPECT_THROW(parse_model_config(j, "f.json"), Error);
  j["vocab_size"] = 152064;
  j["small_block_size"] = 5;
  try {
    parse_model_config(j, "f.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("small_block_size"), std::string::npos) << e.what();
  }
  nlohmann::json sd = {{"model_type", "sdar"}, {"hidden_size", 64}, {"intermediate_size", 128},
                       {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"vocab_size", 1000}};
  try {
    parse_model_config(sd, "s.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mask_token_id"), std::string::npos) << e.what();
  }
  sd["mask_token_id"] = 999;
  sd["attention_bias"] = true;
  EXPECT_THROW(parse_model_config(sd, "s.json"), Error);
}

// The generic block-causal attention equals a plain per-query reference with the mask written out.
TEST(BlockAttention, MatchesMaskedReference) {
  auto be = make_backend("cpu");
  std::mt19937_64 rng(7);
  const int64_t B = 2, S = 11, Hq = 4, Hkv = 2, D = 8, block = 3;
  for (int64_t q_offset : {int64_t(0), int64_t(4)}) {
    const int64_t Lq = S - q_offset;
    Tensor q = test::random_tensor(DType::F32, {B, Lq, Hq, D}, rng), k = test::random_tensor(DType::F32, {B, S, Hkv, D}, rng);
    Tensor v = test::random_tensor(DType::F32, {B, S, Hkv, D}, rng), out = Tensor::zeros(DType::F32, {B, Lq, Hq, D});
    Tensor km = Tensor::zeros(DType::U8, {B, S});
    for (int64_t i = 0; i < B * S; ++i) km.data<uint8_t>()[i] = i != 1;  // one masked key
    be->attention_block_causal(q, k, v, &km, block, q_offset, out);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Lq; ++i)
        for (int64_t h = 0; h < Hq; ++h) {
          const int64_t lim = ((q_offset + i) / block + 1) * block;
          std::vector<double> w;
          double mx = -INFINITY;
          for (int64_t j = 0; j < S; ++j) {
            double s = -INFINITY;
            if (j < lim && km.data<uint8_t>()[b * S + j]) {
              s = 0;
              for (int64_t d = 0; d < D; ++d)
                s += double(q.data<float>()[((b * Lq + i) * Hq + h) * D + d]) *
                     k.data<float>()[((b * S + j) * Hkv + h / 2) * D + d];
              s /= std::sqrt(double(D));
            }
            w.push_back(s);
            mx = std::max(mx, s);
          }
          double den = 0;
          for (double& x : w) den += (x = std::isinf(x) ? 0 : std::exp(x - mx));
          for (int64_t d = 0; d < D; ++d) {
            double o = 0;
            for (int64_t j = 0; j < S; ++j) o += w[size_t(j)] * v.data<float>()[((b * S + j) * Hkv + h / 2) * D + d];
            EXPECT_NEAR(out.data<float>()[((b * Lq + i) * Hq + h) * D + d], o / den, 1e-5);
          }
        }
  }
}

// The two fixtures on every backend (CPU; CUDA where built and usable): logits against transformers, and the block
// cache against the full forward. CUDA computes with bf16 activations, so its bounds are those of the other CUDA
// golden and KV-cache tests.
class BlockGoldenBackends : public test::BackendTest {};
const char* const kBlockFixtures[] = {"sdar_tiny", "fast_dllm_v2_tiny"};

// The block-causal forward equals transformers' Qwen3 / Qwen2 with the block-causal 4D mask.
TEST_P(BlockGoldenBackends, ForwardMatchesTransformers) {
  for (const char* name : kBlockFixtures) {
    const std::string dir = fixture(name);
    auto ref = TensorStore::open_file(dir + "/reference.safetensors");
    auto model = Model::load(dir, load_options());
    Tensor got = model->forward(ref->get("input_ids"));
    ASSERT_EQ(got.shape(), ref->get("logits").shape()) << name;
    const double err = test::rel_error(got, ref->get("logits"));
    EXPECT_LT(err, logits_tol()) << name;
    if (!on_cpu()) std::printf("[ cuda golden ] %-24s rel error %.2e\n", name, err);
  }
}

// The exact block cache: prefill of whole blocks, then block windows through the cache, equals the full
// block-causal forward at every position (to rounding), whatever the cache held past the window before.
TEST_P(BlockGoldenBackends, CachedBlocksEqualFullForward) {
  const double tol = on_cpu() ? 1e-5 : 1e-2;
  for (const char* name : kBlockFixtures) {
    const std::string dir = fixture(name);
    auto ref = TensorStore::open_file(dir + "/reference.safetensors");
    auto model = Model::load(dir, load_options());
    const Tensor ids = ref->get("input_ids");
    const int64_t B = ids.dim(0), L = ids.dim(1), V = model->config().vocab_size, bs = model->config().block_size;
    Tensor full = model->forward(ids);
    KvCache cache;
    std::vector<Tensor> parts;
    parts.push_back(model->forward_window(ids, {}, cache, 0, bs));  // prefill of block 0 into an empty cache
    for (int64_t s = bs; s < L; s += bs) {
      // A stale pass over the next block with other tokens first: the window's own pass rewrites it.
      Tensor junk = Tensor::zeros(DType::I64, ids.shape());
      std::copy(ids.data<int64_t>(), ids.data<int64_t>() + ids.numel(), junk.data<int64_t>());
      for (int64_t b = 0; b < B; ++b) junk.data<int64_t>()[b * L + s] = (junk.data<int64_t>()[b * L + s] + 7) % V;
      model->forward_window(junk, {}, cache, s, s + bs);
      parts.push_back(model->forward_window(ids, {}, cache, s, s + bs));
    }
    for (int64_t b = 0; b < B; ++b)
      for (int64_t l = 0; l < L; ++l) {
        const float* want = full.data<float>() + (b * L + l) * V;
        const float* got = parts[size_t(l / bs)].data<float>() + (b * bs + l % bs) * V;
        double num = 0, den = 0;
        for (int64_t v = 0; v < V; ++v) num += (got[v] - want[v]) * (got[v] - want[v]), den += want[v] * want[v];
        EXPECT_LT(std::sqrt(num / den), tol) << name << " row " << b << " pos " << l;
      }
    // An empty cache accepts a first window on a block boundary only.
    KvCache fresh;
    EXPECT_THROW(model->forward_window(ids, {}, fresh, 0, bs + 1), Error) << name;
    EXPECT_THROW(model->forward_window(ids, {}, fresh, bs, 2 * bs), Error) << name;
  }
}

DLX_INSTANTIATE_OVER_BACKENDS(BlockGoldenBackends);

class BlockGolden : public ::testing::TestWithParam<const char*> {};

// The cached decoder (prefill, block steps, commit passes) reproduces the fixture's reference decodes, made by an
// uncached transcription of the public decoders on transformers (greedy, the fixture's threshold / steps /
// sub-blocks), up to the first stop token; alone and with every case in one batch (different prompt lengths, so
// rows in different phases share passes).
TEST_P(BlockGolden, DecoderMatchesReferenceDecodes) {
  const std::string dir = fixture(GetParam());
  SafetensorsFile ref(dir + "/reference.safetensors");
  auto model = Model::load(dir);
  const auto& meta = ref.metadata();
  const int cases = std::stoi(meta.at("cases"));
  ASSERT_GT(cases, 0);
  const int64_t stop = model->config().eos_token_id;
  GenerationOptions o;
  o.steps = std::stoi(meta.at("steps"));
  o.threshold = std::stof(meta.at("threshold"));
  o.sub_block = std::stoll(meta.at("sub_block"));
  std::vector<std::vector<int64_t>> prompts;
  int64_t min_new = 1 << 20;
  auto expect_prefix = [&](const int64_t* got, int64_t n, int c, const std::string& what) {
    const std::vector<int64_t> want = to_vec(ref.get("decode_out_" + std::to_string(c)));
    ASSERT_LE(n, int64_t(want.size())) << what;
    const int64_t P = int64_t(prompts[size_t(c)].size());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i], want[size_t(i)]) << GetParam() << " case " << c << " position " << i << " " << what;
      if (i >= P && got[i] == stop) break;  // the decoder stops a row at its first stop token
    }
  };
  for (int c = 0; c < cases; ++c) {
    prompts.push_back(to_vec(ref.get("decode_prompt_" + std::to_string(c))));
    o.max_new_tokens = std::stoll(meta.at("new_tokens_" + std::to_string(c)));
    min_new = std::min(min_new, o.max_new_tokens);
    int passes = 0;
    Tensor canvas = generate_canvas(*model, {prompts.back()}, o, {}, nullptr, &passes, {stop});
    expect_prefix(canvas.data<int64_t>(), canvas.numel(), c, "solo");
    EXPECT_GT(passes, 0);
  }
  // Batched (the smaller new-token count: block-causal, so each row is a prefix of its solo decode).
  o.max_new_tokens = min_new;
  Tensor canvas = generate_canvas(*model, prompts, o, {}, nullptr, nullptr, {stop});
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max<int64_t>(P, int64_t(p.size()));
  for (int c = 0; c < cases; ++c) {
    const int64_t pad = P - int64_t(prompts[size_t(c)].size());
    expect_prefix(canvas.data<int64_t>() + c * canvas.dim(1) + pad, canvas.dim(1) - pad, c, "batched");
  }
}

INSTANTIATE_TEST_SUITE_P(Models, BlockGolden, ::testing::Values("sdar_tiny", "fast_dllm_v2_tiny"));

// Continuous batching (the scheduler, one thread per slot, passes merged into one forward_slots) and static batches:
// every request equals its solo run, with sampling on (each row's random stream is its own).
TEST(BlockDecoder, ContinuousAndStaticBatchesEqualSolo) {
  auto model = Model::load(fixture("sdar_tiny"));
  // Any tokenizer whose vocabulary covers the tiny model's 320 ids serves for stop ids and text.
  Tokenizer tok = Tokenizer::load(test::source_path("models/kjv-dream-tiny"));
  const std::vector<std::vector<int64_t>> prompts = {{5, 6, 7}, {10, 11, 12, 13, 14, 15, 16, 17, 18}, {40}, {3, 3, 3, 3, 3}};
  GenerationOptions o;
  o.max_new_tokens = 11;
  o.temperature = 0.8f;
  o.top_p = 0.9f;
  o.seed = 5;
  o.threshold = 0.2f;
  SchedulerOptions so;
  so.max_batch = 3;
  BatchScheduler s(*model, tok, so);
  for (const auto& p : prompts) s.submit(p, o);
  std::vector<GenerationResult> got(prompts.size());
  s.run([&](FinishedRequest&& f) {
    ASSERT_TRUE(f.error.empty()) << f.error;
    got[size_t(f.id)] = std::move(f.result);
  });
  EXPECT_EQ(s.max_active(), 3);
  const std::vector<GenerationResult> batch = generate_batch(*model, tok, prompts, o);
  int solo_passes = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const GenerationResult solo = generate(*model, tok, prompts[i], o);
    solo_passes += solo.steps_run;
    EXPECT_EQ(got[i].new_ids, solo.new_ids) << "request " << i;
    EXPECT_EQ(got[i].steps_run, solo.steps_run) << "request " << i;
    EXPECT_EQ(batch[i].new_ids, solo.new_ids) << "request " << i;
  }
  EXPECT_LT(s.forwards(), solo_passes);
  // The scheduler reserves each request's cache over whole blocks.
  EXPECT_EQ(request_kv_bytes(*model, 3, o), kv_cache_bytes(model->config(), model->backend().act_dtype(), 1, 16, false));
}

TEST(BlockDecoder, OptionErrors) {
  auto model = Model::load(fixture("fast_dllm_v2_tiny"));
  GenerationOptions o;
  o.block_length = 8;
  EXPECT_THROW(generate_canvas(*model, {{1, 2, 3}}, o), Error);
  o.block_length = 0;
  o.sub_block = 3;
  EXPECT_THROW(generate_canvas(*model, {{1, 2, 3}}, o), Error);
  o.sub_block = 0;
  EXPECT_THROW(generate_canvas(*model, {{}}, o), Error);
  o.max_new_tokens = 0;
  EXPECT_THROW(generate_canvas(*model, {{1}}, o), Error);
}

// GPTQ and AWQ checkpoints of the Qwen3 layout: the q/k norms stay dense, the linears are packed, the model
// loads and stays close to the float one, block-causal.
TEST(BlockQuant, GptqAndAwqOfSdar) {
  for (const char* fmt : {"gptq", "awq"}) {
    test::TempDir tmp;
    QuantizeOptions q;
    q.model_path = fixture("sdar_tiny");
    q.output_path = tmp / "out";
    q.format = fmt;
    q.group_size = 32;
    q.calib.ids_path = fixture("sdar_tiny") + "/reference.safetensors";
    q.calib.samples = 2;
    q.calib.seq_len = 12;
    quantize_model(q);
    // The output directory's tensors, wherever the writer put them (quantized file, shards, index).
    auto f = TensorStore::open_dir(tmp / "out");
    EXPECT_TRUE(f->has("model.layers.0.self_attn.q_norm.weight")) << fmt;
    EXPECT_TRUE(f->has("model.layers.1.self_attn.k_norm.weight")) << fmt;
    EXPECT_TRUE(f->has("model.layers.0.self_attn.q_proj.qweight")) << fmt;
    auto qm = Model::load(tmp / "out");
    EXPECT_EQ(qm->layers()[0].linear[int(LinearRole::Q)]->info().bits, 4) << fmt;
    auto fm = Model::load(fixture("sdar_tiny"));
    auto ref = TensorStore::open_file(fixture("sdar_tiny") + "/reference.safetensors");
    const Tensor ids = ref->get("input_ids");
    const double e = test::rel_error(qm->forward(ids), fm->forward(ids));
    EXPECT_LT(e, 0.3) << fmt;
    EXPECT_GT(e, 1e-4) << fmt;
    GenerationOptions o;
    o.max_new_tokens = 6;
    Tensor c = generate_canvas(*qm, {{1, 2, 3, 4, 5}}, o);
    EXPECT_EQ(c.dim(1), 11) << fmt;
  }
}

TEST(BlockCli, InspectAndGenerate) {
  auto r = test::run_cli("inspect --model " + fixture("sdar_tiny"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("SDAR"), std::string::npos) << r.output;
  // `generate` picks the block decoder from the architecture: the tiny checkpoints with the KJV model's tokenizer
  // (4k ids, so every id the 320-id models produce decodes; the prompt is one whose ids are all below 320).
  for (const char* name : {"sdar_tiny", "fast_dllm_v2_tiny"}) {
    test::TempDir tmp;
    for (const char* f : {"config.json", "model.safetensors"})
      std::filesystem::copy_file(fixture(name) + "/" + f, tmp / f);
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
      std::filesystem::copy_file(test::source_path("models/kjv-dream-tiny/") + f, tmp / f);
    auto g = test::run_cli("generate --model " + tmp.str() + " --prompt xyzqxyzq --max-new-tokens 9");
    EXPECT_EQ(g.status, 0) << name << ": " << g.output;
    auto far = test::run_cli("generate --model " + tmp.str() + " --prompt 'In the beginning'");
    EXPECT_EQ(far.status, 1) << far.output;  // KJV ids past the tiny vocabulary: named, not a crash
    EXPECT_NE(far.output.find("outside the vocabulary [0, 320)"), std::string::npos) << far.output;
    auto bad = test::run_cli("generate --model " + tmp.str() + " --prompt xyzq --sub-block 3");
    EXPECT_EQ(bad.status, 1) << name << ": " << bad.output;
    EXPECT_NE(bad.output.find("error: sub block 3 must divide"), std::string::npos) << bad.output;
  }
}

}  // namespace dlx
