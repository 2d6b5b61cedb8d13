// diffulex quantize: GPTQ / AWQ / RTN algorithms on single linears, AWQ folding exactness on the real KJV tiny
// model, the written checkpoints (read back with an independent implementation of the public dequantization
// rules, loaded by the engine, listed by inspect), sharding, and that failed / interrupted / refused runs leave
// nothing behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/error.h"
#include "formats/gptq.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "quant/checkpoint_writer.h"
#include "quant/methods/awq.h"
#include "quant/methods/gptq.h"
#include "quant/methods/hessian.h"
#include "quant/methods/rtn.h"
#include "quant/quantizer.h"
#include "quant/running_linear.h"
#include "test_util.h"

namespace dlx {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::TempDir;

const std::string kModel = test::source_path("models/kjv-dream-tiny");

// Inputs with strongly correlated channels of very different sizes (as real activations have): x = z A D.
Tensor correlated_inputs(int64_t rows, int64_t k, std::mt19937_64& rng) {
  Tensor z = test::random_tensor(DType::F32, {rows, k}, rng);
  Tensor a = test::random_tensor(DType::F32, {k, k}, rng, 1.0f / std::sqrt(float(k)));
  std::vector<float> d(static_cast<size_t>(k));
  std::lognormal_distribution<float> ln(0.0f, 1.0f);
  for (auto& v : d) v = ln(rng);
  Tensor x = Tensor::zeros(DType::F32, {rows, k});
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0.3 * z.data<float>()[t * k + j];
      for (int64_t i = 0; i < k; ++i) s += double(z.data<float>()[t * k + i]) * a.data<float>()[i * k + j];
      x.data<float>()[t * k + j] = float(s) * d[size_t(j)];
    }
  return x;
}

// ||X W'^T - X W^T|| / ||X W^T||, computed directly on X (independent of the Hessian shortcut).
double direct_rel_error(const Tensor& x, const Tensor& wq, const Tensor& w) {
  const int64_t T = x.dim(0), K = x.dim(1), N = w.dim(0);
  double num = 0, den = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double a = 0, b = 0;
      for (int64_t k = 0; k < K; ++k) {
        a += double(x.data<float>()[t * K + k]) * wq.data<float>()[n * K + k];
        b += double(x.data<float>()[t * K + k]) * w.data<float>()[n * K + k];
      }
      num += (a - b) * (a - b);
      den += b * b;
    }
  return std::sqrt(num / den);
}

Backend& cpu() {
  static std::unique_ptr<Backend> be = make_backend("cpu");
  return *be;
}

std::vector<double> hessian_of(const Tensor& x) {
  HessianAccumulator acc(cpu(), x.dim(1));
  acc.add(x);
  return acc.finish();
}

// A linear's problem: a random weight [N, K] (std 0.05), T correlated inputs and their Hessian, drawn in that order
// from one seed.
struct LinearProblem {
  Tensor w, x;
  std::vector<double> h;
};
LinearProblem linear_problem(uint64_t seed, int64_t N, int64_t K, int64_t T) {
  std::mt19937_64 rng(seed);
  LinearProblem p;
  p.w = test::random_tensor(DType::F32, {N, K}, rng, 0.05f);
  p.x = correlated_inputs(T, K, rng);
  p.h = hessian_of(p.x);
  return p;
}

TEST(QuantizerGptq, BeatsRtnOnCorrelatedInputs) {
  const int64_t N = 48, K = 128;
  const LinearProblem p = linear_problem(7, N, K, 1024);
  const Tensor &w = p.w, &x = p.x;
  const std::vector<double>& h = p.h;
  for (bool sym : {true, false}) {
    GptqOptions o;
    o.scheme.bits = 4;
    o.scheme.group_size = 32;
    o.scheme.sym = sym;
    o.scheme.min_zero = sym ? 0 : 1;
    GptqResult g = gptq_quantize(cpu(), w.data<float>(), N, K, h, o);
    Tensor wg = codes_to_dense(g.codes);
    Tensor wr = codes_to_dense(rtn_quantize(w.data<float>(), N, K, o.scheme));
    const double eg = direct_rel_error(x, wg, w), er = direct_rel_error(x, wr, w);
    EXPECT_LT(eg, 0.8 * er) << "sym=" << sym << " gptq " << eg << " rtn " << er;
    // The Hessian shortcut used for the reports gives the same number as the direct computation.
    EXPECT_NEAR(rel_output_error(cpu(), h, wg.data<float>(), w.data<float>(), N, K), eg, 1e-4 * eg + 1e-7);
    for (uint8_t z : g.codes.zero) EXPECT_GE(z, sym ? 8 : 1);  // v1-storable zeros
  }
}

TEST(QuantizerGptq, ActOrderAndStaticGroups) {
  const int64_t N = 32, K = 128, gs = 32;
  const LinearProblem p = linear_problem(11, N, K, 768);
  const Tensor &w = p.w, &x = p.x;
  const std::vector<double>& h = p.h;
  GptqOptions o;
  o.scheme.group_size = gs;
  const double er = direct_rel_error(x, codes_to_dense(rtn_quantize(w.data<float>(), N, K, o.scheme)), w);

  o.act_order = true;
  GptqResult g = gptq_quantize(cpu(), w.data<float>(), N, K, h, o);
  ASSERT_EQ(g.codes.g_idx.size(), size_t(K));
  std::vector<int> per_group(K / gs, 0);
  for (int32_t gi : g.codes.g_idx) ++per_group[size_t(gi)];
  for (int c : per_group) EXPECT_EQ(c, gs);
  // The first group holds the inputs with the largest Hessian diagonal.
  int64_t top = 0;
  for (int64_t i = 1; i < K; ++i)
    if (h[size_t(i * K + i)] > h[size_t(top * K + top)]) top = i;
  EXPECT_EQ(g.codes.g_idx[size_t(top)], 0);
  Tensor wg = codes_to_dense(g.codes);
  EXPECT_LT(direct_rel_error(x, wg, w), 0.7 * er);

  // Through the checkpoint layout and back, and through the engine's packed kernel (act-order permutation).
  GptqTensors t = pack_gptq(g.codes, true);
  QuantCodes back = unpack_gptq(t, 4, gs, true);
  EXPECT_EQ(back.q, g.codes.q);
  EXPECT_EQ(back.g_idx, g.codes.g_idx);
  auto be = make_backend("cpu");
  auto store = TensorStore::open_dir(kModel);
  LinearSpec spec{"test", K, N, false};
  auto lin = make_running_linear(*be, *store, spec, g.codes, Tensor(), {}, "gptq_w4a16");
  EXPECT_TRUE(lin->info().act_order);
  Tensor xs = x.slice_rows(0, 16);
  Tensor y = Tensor::zeros(DType::F32, {16, N});
  lin->forward(*be, xs, y);
  Tensor ref = Tensor::zeros(DType::F32, {16, N});
  make_dense_linear(spec, wg, Tensor(), *be)->forward(*be, xs, ref);
  EXPECT_LT(test::rel_error(y, ref), 1e-5);

  // Static groups: parameters fixed before the updates, groups stay sequential.
  o.static_groups = true;
  GptqResult s = gptq_quantize(cpu(), w.data<float>(), N, K, h, o);
  EXPECT_TRUE(s.codes.g_idx.empty());
  EXPECT_LT(direct_rel_error(x, codes_to_dense(s.codes), w), 0.8 * er);
}

// One group per row (group size -1, gs == K) with K spanning several of GPTQ's 128-column blocks: each row's
// parameters come from its original weights, once (AutoGPTQ's groupsize -1), so the result equals static groups;
// it used to read a block's columns past their end and use unset parameters from the second block on.
TEST(QuantizerGptq, OneGroupPerRowAcrossBlocks) {
  const int64_t N = 24, K = 320;
  const LinearProblem p = linear_problem(12, N, K, 640);
  const Tensor &w = p.w, &x = p.x;
  const std::vector<double>& h = p.h;
  for (int bits : {4, 8}) {
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.scheme.bits = bits;
      o.scheme.group_size = K;
      o.act_order = act_order;
      const GptqResult g = gptq_quantize(cpu(), w.data<float>(), N, K, h, o);
      o.static_groups = true;
      const GptqResult st = gptq_quantize(cpu(), w.data<float>(), N, K, h, o);
      EXPECT_EQ(g.codes.q, st.codes.q) << bits << " bits, act_order " << act_order;
      EXPECT_EQ(g.codes.scale, st.codes.scale);
      EXPECT_EQ(g.codes.zero, st.codes.zero);
      for (float sc : g.codes.scale) EXPECT_TRUE(std::isfinite(sc) && sc > 0.0f);
      const double er = direct_rel_error(x, codes_to_dense(rtn_quantize(w.data<float>(), N, K, o.scheme)), w);
      EXPECT_LT(direct_rel_error(x, codes_to_dense(g.codes), w), er) << bits << " bits, act_order " << act_order;
    }
  }
}

TEST(QuantizerAwq, ScaleSearchAndClipNeverWorseThanRtn) {
  const int64_t N = 64, K = 128;
  const LinearProblem p = linear_problem(5, N, K, 512);
  const Tensor &w = p.w, &x = p.x;
  const std::vector<double>& h = p.h;
  QuantScheme sc;
  sc.group_size = 64;
  sc.sym = false;
  sc.include_zero = false;
  auto loss = [&](const std::vector<float>& s) {
    Tensor e = fake_quant_scaled(w, s, sc);
    return sq_output_error(cpu(), h, e.data<float>(), w.data<float>(), N, K);
  };
  ScaleSearch ss = awq_search_scales(mean_abs_columns({x}), awq_weight_mean({&w}, sc.group_size), 20, loss);
  EXPECT_LE(ss.loss, ss.identity_loss);
  EXPECT_LT(ss.loss, 0.9 * ss.identity_loss);  // activation-aware scales help on channels of unequal size
  Tensor ws = scale_weight(w, ss.scales);
  std::vector<float> inv(ss.scales.size());
  for (size_t i = 0; i < inv.size(); ++i) inv[i] = 1.0f / ss.scales[i];
  std::vector<double> hs = scale_hessian(h, inv);
  Tensor plain = codes_to_dense(quantize_clipped(ws, {}, sc));
  Tensor clipped = codes_to_dense(quantize_clipped(ws, awq_search_clip(ws, OutputError(cpu(), hs, K), sc), sc));
  EXPECT_LE(sq_output_error(cpu(), hs, clipped.data<float>(), ws.data<float>(), N, K),
            sq_output_error(cpu(), hs, plain.data<float>(), ws.data<float>(), N, K) * (1 + 1e-9));
}

// Random ordinary token ids [B, L] (no special tokens).
Tensor random_ids(const Model& m, int64_t B, int64_t L) {
  Tensor ids = Tensor::zeros(DType::I64, {B, L});
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int64_t> tok(3, m.config().vocab_size - 1);
  for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int64_t>()[i] = tok(rng);
  return ids;
}

TEST(QuantizerAwq, FoldingKeepsTheFloatModel) {
  // Fold random AWQ scales into every layer of the real model (norms rounded to fp16 as the quantizer stores
  // them, linears in fp32), write that as a dense checkpoint, load it with the engine: same logits.
  auto m = Model::load(kModel);
  const ModelConfig& c = m->config();
  const ArchNames& names = arch_names(c.arch);
  const TensorStore& store = m->store();
  std::mt19937_64 rng(17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto rand_scales = [&](int64_t n) {
    std::vector<float> s(static_cast<size_t>(n));
    for (auto& v : s) v = std::exp(u(rng));  // 0.37 .. 2.7
    return s;
  };
  std::map<std::string, Tensor> out;
  for (const auto& n : store.names()) out[n] = store.get(n);
  auto vec = [&](const std::string& name) {
    Tensor t = store.get(name);
    std::vector<float> v(static_cast<size_t>(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) v[size_t(i)] = load_as_f32(t.data(), t.dtype(), size_t(i));
    return v;
  };
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string lp = fmt::format(fmt::runtime(names.layer_prefix), i);
    std::array<Tensor, 7> w;
    for (LinearRole r : kLinearRoles) w[size_t(r)] = m->layers()[size_t(i)].linear[int(r)]->dequantize();
    const std::string vb = lp + names.linear[int(LinearRole::V)] + ".bias";
    std::vector<float> vbias = vec(vb);
    Tensor vbt = Tensor::from_data(DType::F32, {int64_t(vbias.size())}, vbias.data());
    AwqLayerScales s{rand_scales(c.hidden_size), rand_scales(c.num_kv_heads * c.head_dim), rand_scales(c.hidden_size),
                     rand_scales(c.intermediate_size)};
    AwqFolded f = awq_fold(w, vbt, vec(lp + names.attn_norm), vec(lp + names.ffn_norm), s, c.num_heads,
                           c.num_kv_heads, c.head_dim, DType::F16);
    for (LinearRole r : kLinearRoles) out[lp + names.linear[int(r)] + ".weight"] = f.w[size_t(r)];
    out[vb] = f.v_bias;
    Tensor n1 = Tensor::zeros(DType::F16, {c.hidden_size}), n2 = Tensor::zeros(DType::F16, {c.hidden_size});
    for (int64_t j = 0; j < c.hidden_size; ++j) {
      n1.data<uint16_t>()[j] = f32_to_f16(f.attn_norm[size_t(j)]);
      n2.data<uint16_t>()[j] = f32_to_f16(f.ffn_norm[size_t(j)]);
      EXPECT_EQ(f16_to_f32(n1.data<uint16_t>()[j]), f.attn_norm[size_t(j)]);  // already fp16 values
    }
    out[lp + names.attn_norm] = n1;
    out[lp + names.ffn_norm] = n2;
  }
  TempDir dir;
  fs::copy_file(kModel + "/config.json", dir / "config.json");
  write_safetensors(dir / "model.safetensors", std::vector<std::pair<std::string, Tensor>>(out.begin(), out.end()));
  auto folded = Model::load(dir.str());
  Tensor ids = random_ids(*m, 2, 48);
  Tensor a = m->forward(ids), b = folded->forward(ids);
  EXPECT_LT(test::rel_error(b, a), 2e-5);

  // A control: the same norms without the folding of the weights change the logits a lot.
  out = {};
  for (const auto& n : store.names()) out[n] = store.get(n);
  const std::string n0 = fmt::format(fmt::runtime(names.layer_prefix), 0) + names.attn_norm;
  Tensor half = Tensor::zeros(DType::F32, {c.hidden_size});
  std::vector<float> n0v = vec(n0);
  for (int64_t j = 0; j < c.hidden_size; ++j) half.data<float>()[j] = n0v[size_t(j)] * (j % 2 ? 0.5f : 2.0f);
  out[n0] = half;
  TempDir dir2;
  fs::copy_file(kModel + "/config.json", dir2 / "config.json");
  write_safetensors(dir2 / "model.safetensors", std::vector<std::pair<std::string, Tensor>>(out.begin(), out.end()));
  EXPECT_GT(test::rel_error(Model::load(dir2.str())->forward(ids), a), 1e-2);
}

// --- written checkpoints --------------------------------------------------------------------------------------

// A calibration text disjoint from the eval split: the first verses of testdata/kjv/heldout.txt (Ruth 1).
std::string calib_file(const TempDir& dir, int lines) {
  std::ofstream(dir / "calib.txt") << test::kjv_heldout_lines(0, lines);
  return dir / "calib.txt";
}

QuantizeOptions small_run(const TempDir& dir, const std::string& format, const std::string& out) {
  QuantizeOptions o;
  o.model_path = kModel;
  o.output_path = out;
  o.format = format;
  o.calib.text_path = calib_file(dir, 30);
  o.calib.samples = 6;
  o.calib.seq_len = 64;
  return o;
}

// The public dequantization rules, written out here from docs/QUANTIZED_CHECKPOINTS.md independently of src/formats.
Tensor dequant_gptq_v1(const TensorStore& f, const std::string& p, int64_t N, int64_t K) {
  const int32_t* qw = f.get(p + ".qweight").data<int32_t>();
  const int32_t* qz = f.get(p + ".qzeros").data<int32_t>();
  const int32_t* gi = f.get(p + ".g_idx").data<int32_t>();
  Tensor sc = f.get(p + ".scales");
  EXPECT_EQ(sc.dtype(), DType::F16);
  Tensor w = Tensor::zeros(DType::F32, {N, K});
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) {
      const uint32_t q = (uint32_t(qw[(k / 8) * N + n]) >> (4 * (k % 8))) & 15u;
      const int64_t g = gi[k];
      const uint32_t z = ((uint32_t(qz[g * (N / 8) + n / 8]) >> (4 * (n % 8))) & 15u) + 1u;
      const float s = f16_to_f32(sc.data<uint16_t>()[g * N + n]);
      w.data<float>()[n * K + k] = s * (float(q) - float(z));
    }
  return w;
}

Tensor dequant_awq(const TensorStore& f, const std::string& p, int64_t N, int64_t K, int64_t gs) {
  static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // nibble j holds column 8c + order[j]
  const int32_t* qw = f.get(p + ".qweight").data<int32_t>();
  const int32_t* qz = f.get(p + ".qzeros").data<int32_t>();
  Tensor sc = f.get(p + ".scales");
  Tensor w = Tensor::zeros(DType::F32, {N, K});
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < N / 8; ++c)
      for (int j = 0; j < 8; ++j) {
        const int64_t n = 8 * c + order[j], g = k / gs;
        const uint32_t q = (uint32_t(qw[k * (N / 8) + c]) >> (4 * j)) & 15u;
        const uint32_t z = (uint32_t(qz[g * (N / 8) + c]) >> (4 * j)) & 15u;
        w.data<float>()[n * K + k] = f16_to_f32(sc.data<uint16_t>()[g * N + n]) * (float(q) - float(z));
      }
  return w;
}

double rel_diff(const Tensor& a, const Tensor& b) { return test::rel_error(a, b); }

TEST(QuantizerCheckpoint, GptqRoundTrip) {
  TempDir dir;
  const std::string out = dir / "gptq";
  QuantizeReport r = quantize_model(small_run(dir, "gptq", out));
  ASSERT_EQ(r.linears.size(), 42u);
  double e = 0, er = 0;
  for (const auto& l : r.linears) e += l.error, er += l.error_rtn;
  EXPECT_LT(e, 0.85 * er);  // GPTQ's output error on its calibration inputs, summed over all linears

  json cfg = json::parse(std::ifstream(out + "/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "gptq");
  EXPECT_EQ(cfg["quantization_config"]["bits"], 4);
  EXPECT_EQ(cfg["quantization_config"]["group_size"], 128);
  EXPECT_EQ(cfg["quantization_config"]["sym"], true);
  EXPECT_EQ(cfg["quantization_config"]["checkpoint_format"], "gptq");
  EXPECT_EQ(cfg["torch_dtype"], "float16");
  EXPECT_EQ(json::parse(std::ifstream(out + "/quantize_config.json")), cfg["quantization_config"]);
  json meta = json::parse(std::ifstream(out + "/quantization_metadata_gptq.json"));
  EXPECT_EQ(meta["method"], "gptq");
  EXPECT_EQ(meta["layers"].size(), 42u);
  EXPECT_TRUE(fs::exists(out + "/tokenizer.json"));
  EXPECT_TRUE(fs::exists(out + "/generation_config.json"));

  auto src = Model::load(kModel);
  auto q = Model::load(out);
  // The Diffulex layout: the quantized linears in model_quantized_gptq.safetensors, the rest in shards, one index.
  SafetensorsFile qf(out + "/model_quantized_gptq.safetensors");
  EXPECT_TRUE(qf.has("model.layers.0.self_attn.q_proj.qweight"));
  EXPECT_FALSE(qf.has("model.embed_tokens.weight"));
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));  // HF loaders would read it instead of the index
  json idx = json::parse(std::ifstream(out + "/model.safetensors.index.json"));
  EXPECT_EQ(idx["weight_map"]["model.layers.0.self_attn.q_proj.qweight"], "model_quantized_gptq.safetensors");
  EXPECT_EQ(idx["weight_map"]["model.embed_tokens.weight"], "model-00001-of-00001.safetensors");
  EXPECT_EQ(meta["quant_format"], "gptq");
  EXPECT_EQ(meta["quantized_modules"].size(), 42u);
  EXPECT_EQ(meta["quantized_modules"][0]["in_features"], 256);
  std::shared_ptr<TensorStore> store = TensorStore::open_dir(out);
  const TensorStore& f = *store;
  EXPECT_EQ(f.get("model.embed_tokens.weight").dtype(), DType::F16);
  EXPECT_EQ(f.get("model.layers.0.self_attn.q_proj.bias").dtype(), DType::F16);
  EXPECT_FALSE(f.has("model.layers.0.self_attn.q_proj.weight"));
  for (int64_t i = 0; i < 6; ++i)
    for (LinearRole role : kLinearRoles) {
      const Linear& lin = *q->layers()[size_t(i)].linear[int(role)];
      EXPECT_EQ(lin.info().kind, "gptq_w4a16");
      // Independent dequantization == the engine's loader, and close to the source weight.
      Tensor mine = dequant_gptq_v1(f, lin.spec().prefix, lin.out_features(), lin.in_features());
      EXPECT_LT(rel_diff(lin.dequantize(), mine), 1e-6) << lin.spec().prefix;
      // (GPTQ moves weights away from their nearest grid points on purpose: weight error ~RTN's or a bit above.)
      EXPECT_LT(rel_diff(mine, src->layers()[size_t(i)].linear[int(role)]->dequantize()), 0.3) << lin.spec().prefix;
    }
  Tensor ids = random_ids(*src, 2, 40);
  const double le = rel_diff(q->forward(ids), src->forward(ids));
  // Relative logit error of the whole 4-bit model on random tokens (measured ~0.22 for 6 x 64 calibration
  // tokens; the quality comparison on real text is in eval_test.cc).
  EXPECT_LT(le, 0.35);
  EXPECT_GT(le, 1e-3);  // it is quantized

  test::CmdResult ins = test::run_cli("inspect --model " + out + " --list-layers");
  EXPECT_EQ(ins.status, 0) << ins.output;
  EXPECT_NE(ins.output.find("quantization:  gptq 4-bit, group 128"), std::string::npos) << ins.output;
  EXPECT_NE(ins.output.find("gptq_w4a16"), std::string::npos);
}

TEST(QuantizerCheckpoint, AwqRoundTrip) {
  TempDir dir;
  const std::string out = dir / "awq";
  QuantizeOptions o = small_run(dir, "awq", out);
  o.group_size = 64;
  QuantizeReport r = quantize_model(o);
  double e = 0, er = 0;
  for (const auto& l : r.linears) e += l.error, er += l.error_rtn;
  EXPECT_LT(e, er);

  json cfg = json::parse(std::ifstream(out + "/config.json"));
  EXPECT_EQ(cfg["quantization_config"], (json{{"quant_method", "awq"}, {"bits", 4}, {"group_size", 64},
                                              {"zero_point", true}, {"version", "gemm"},
                                              {"modules_to_not_convert", nullptr}}));
  EXPECT_FALSE(fs::exists(out + "/quantize_config.json"));
  EXPECT_TRUE(fs::exists(out + "/quantization_metadata_awq.json"));

  auto src = Model::load(kModel);
  auto q = Model::load(out);
  std::shared_ptr<TensorStore> store = TensorStore::open_dir(out);
  const TensorStore& f = *store;
  SafetensorsFile sf(kModel + "/model.safetensors");
  EXPECT_FALSE(f.has("model.layers.0.self_attn.q_proj.g_idx"));
  for (int64_t i = 0; i < 6; ++i) {
    for (LinearRole role : kLinearRoles) {
      const Linear& lin = *q->layers()[size_t(i)].linear[int(role)];
      EXPECT_EQ(lin.info().kind, "awq_w4a16");
      Tensor mine = dequant_awq(f, lin.spec().prefix, lin.out_features(), lin.in_features(), 64);
      EXPECT_LT(rel_diff(lin.dequantize(), mine), 1e-6) << lin.spec().prefix;
    }
    // q_proj holds W diag(s) with s = (source norm) / (written norm): undo it and compare with the source.
    const std::string lp = "model.layers." + std::to_string(i) + ".";
    Tensor n_src = sf.get(lp + "input_layernorm.weight"), n_out = f.get(lp + "input_layernorm.weight");
    EXPECT_EQ(n_out.dtype(), DType::F16);
    const Linear& ql = *q->layers()[size_t(i)].linear[0];
    Tensor w = dequant_awq(f, ql.spec().prefix, 256, 256, 64);
    for (int64_t n = 0; n < 256; ++n)
      for (int64_t k = 0; k < 256; ++k)
        w.data<float>()[n * 256 + k] *= f16_to_f32(n_out.data<uint16_t>()[k]) / bf16_to_f32(n_src.data<uint16_t>()[k]);
    EXPECT_LT(rel_diff(w, src->layers()[size_t(i)].linear[0]->dequantize()), 0.2);
  }
  Tensor ids = random_ids(*src, 2, 40);
  EXPECT_LT(rel_diff(q->forward(ids), src->forward(ids)), 0.35);
}

// --awq-scales-from: a run with an earlier run's scale exponents reproduces it (the same calibration, so the same
// clip search and codes: byte-identical linears, the same report), records where the exponents came from and
// searches nothing (no grid losses).
TEST(QuantizerAwq, ScalesFromAnEarlierRunReproduceIt) {
  TempDir dir;
  QuantizeOptions a = small_run(dir, "awq", dir / "a");
  a.group_size = 64;
  const QuantizeReport ra = quantize_model(a);
  const std::string meta = dir / "a/quantization_metadata_awq.json";
  const json ja = json::parse(std::ifstream(meta));
  ASSERT_EQ(ja["layer_notes"].size(), 6u);
  EXPECT_EQ(ja["layer_notes"][0]["notes"]["scales"]["norm_qkv"]["grid_losses"].size(), 20u);
  QuantizeOptions b = a;
  b.output_path = dir / "b";
  b.awq_scales_from = meta;
  const QuantizeReport rb = quantize_model(b);
  ASSERT_EQ(rb.linears.size(), ra.linears.size());
  for (size_t i = 0; i < ra.linears.size(); ++i) {
    EXPECT_EQ(rb.linears[i].error, ra.linears[i].error) << ra.linears[i].name;
    EXPECT_EQ(rb.linears[i].error_rtn, ra.linears[i].error_rtn) << ra.linears[i].name;
  }
  const std::string file = "/" + quantized_file_name("awq");
  std::ifstream fa(dir / "a" + file, std::ios::binary), fb(dir / "b" + file, std::ios::binary);
  ASSERT_TRUE(fa && fb);
  EXPECT_GT(fs::file_size(dir / "a" + file), 0u);
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(fa), {}, std::istreambuf_iterator<char>(fb), {}));
  const json jb = json::parse(std::ifstream(dir / "b/quantization_metadata_awq.json"));
  EXPECT_EQ(jb["awq"]["scales_from"], meta);
  for (size_t l = 0; l < 6; ++l)
    for (const char* pair : {"norm_qkv", "v_o", "norm_gate_up", "up_down"}) {
      const json& x = ja["layer_notes"][l]["notes"]["scales"][pair];
      const json& y = jb["layer_notes"][l]["notes"]["scales"][pair];
      EXPECT_EQ(y["ratio"], x["ratio"]) << l << " " << pair;
      EXPECT_EQ(y["loss"], x["loss"]) << l << " " << pair;
      EXPECT_TRUE(y["grid_losses"].empty()) << l << " " << pair;
    }
  // Another exponent for layer 0's attention pair is used as given: its loss is that grid point's, and q_proj's error
  // changes with it.
  json jc = ja;
  const json& qkv = ja["layer_notes"][0]["notes"]["scales"]["norm_qkv"];
  const int other = qkv["ratio"].get<double>() == 0.5 ? 2 : 10;  // grid point 2/20 or 10/20
  jc["layer_notes"][0]["notes"]["scales"]["norm_qkv"]["ratio"] = other / 20.0;
  std::ofstream(dir / "c.json") << jc.dump();
  QuantizeOptions c = a;
  c.output_path = dir / "c";
  c.awq_scales_from = dir / "c.json";
  const QuantizeReport rc = quantize_model(c);
  const json jc_out = json::parse(std::ifstream(dir / "c/quantization_metadata_awq.json"));
  const json& got = jc_out["layer_notes"][0]["notes"]["scales"]["norm_qkv"];
  EXPECT_EQ(got["ratio"].get<double>(), other / 20.0);
  EXPECT_EQ(got["loss"].get<double>(), qkv["grid_losses"][size_t(other)].get<double>());
  EXPECT_NE(rc.linears[0].error, ra.linears[0].error);
}

// Bad --awq-scales-from files: an error naming the file and what is wrong, before anything is written.
TEST(QuantizerAwq, ScalesFromRejectsBadFiles) {
  TempDir dir;
  QuantizeOptions a = small_run(dir, "awq", dir / "a");
  a.group_size = 64;
  quantize_model(a);
  const json good = json::parse(std::ifstream(dir / "a/quantization_metadata_awq.json"));
  // The run fails with an Error holding every needle, and leaves no output.
  auto expect_error = [&](QuantizeOptions o, const std::vector<std::string>& needles) {
    o.output_path = dir / "out";
    try {
      quantize_model(o);
      ADD_FAILURE() << "accepted: " << needles.back();
    } catch (const Error& e) {
      for (const std::string& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir / "out")) << needles.back();
  };
  int n = 0;
  auto expect_refused = [&](const json& doc, const std::string& what, QuantizeOptions o) {
    o.awq_scales_from = dir / ("bad" + std::to_string(n++) + ".json");
    std::ofstream(o.awq_scales_from) << doc.dump();
    expect_error(o, {o.awq_scales_from, what});
  };
  json j = good;
  j["method"] = "gptq";
  expect_refused(j, "not the metadata of an AWQ run", a);
  j = good;
  j["layer_notes"][2]["notes"]["scales"]["up_down"]["ratio"] = 1.5;
  expect_refused(j, "layer 2 up_down: ratio 1.5", a);
  j = good;
  j["layer_notes"][1]["notes"]["scales"].erase("norm_gate_up");
  expect_refused(j, "layer 1 has no norm_gate_up scale", a);
  j = good;
  j["layer_notes"].erase(3);
  expect_refused(j, "no entry for layer 3", a);
  j = good;
  j["layer_notes"].erase(5);
  expect_refused(j, "scale exponents for 5 layers, the model has 6", a);
  j = good;
  j["layer_notes"][4]["layer"] = 0;
  expect_refused(j, "layer 0 twice", a);
  QuantizeOptions no_vo = a;
  no_vo.awq_fold_vo = false;
  expect_refused(good, "this run has --awq-no-vo-fold", no_vo);
  QuantizeOptions gptq = a;
  gptq.format = "gptq";
  gptq.awq_scales_from = dir / "a/quantization_metadata_awq.json";
  expect_error(gptq, {"--awq-scales-from needs method awq"});
  QuantizeOptions missing = a;
  missing.awq_scales_from = dir / "nowhere.json";
  expect_error(missing, {missing.awq_scales_from});
}

TEST(QuantizerCheckpoint, ActOrderThroughCliAndShards) {
  TempDir dir;
  const std::string calib = calib_file(dir, 30), out = dir / "act";
  test::CmdResult r = test::run_cli("quantize --model-path " + kModel + " --output-path " + out +
                                    " --quant-format gptq --group-size 64 --desc-act --calib-text " + calib +
                                    " --calib-samples 4 --calib-seq-len 64 --max-shard-size 2MB");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("relative output error"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(out + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(out + "/model.safetensors"));
  json idx = json::parse(std::ifstream(out + "/model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [name, file] : idx["weight_map"].items()) shards.insert(file.get<std::string>());
  EXPECT_GE(shards.size(), 3u);  // 2 MB shards of a 6.5 MB checkpoint
  int64_t total = 0;
  for (const auto& s : shards) {
    EXPECT_TRUE(fs::exists(out + "/" + s)) << s;
    SafetensorsFile shard(out + "/" + s);
    for (const auto& [name, info] : shard.tensors()) {
      EXPECT_EQ(idx["weight_map"][name], s);
      total += int64_t(info.end - info.begin);
    }
  }
  EXPECT_EQ(idx["metadata"]["total_size"], total);
  test::CmdResult ins = test::run_cli("inspect --model " + out + " --list-layers");
  EXPECT_EQ(ins.status, 0) << ins.output;
  EXPECT_NE(ins.output.find("act_order=yes"), std::string::npos) << ins.output;
  EXPECT_NE(ins.output.find("desc_act=true"), std::string::npos) << ins.output;
  auto q = Model::load(out);
  auto src = Model::load(kModel);
  Tensor ids = random_ids(*src, 1, 40);
  EXPECT_LT(rel_diff(q->forward(ids), src->forward(ids)), 0.35);
}

// --- nothing half-written -------------------------------------------------------------------------------------

// Entries of `dir` whose names start with '.' (the writer's temporary and old directories).
int hidden_entries(const std::string& dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().filename().string()[0] == '.';
  return n;
}

TEST(QuantizerCheckpoint, ExistingOutputRefusedUnlessOverwrite) {
  TempDir dir;
  const std::string out = dir / "out";
  fs::create_directories(out);
  std::ofstream(out + "/keep.txt") << "x";
  QuantizeOptions o;
  o.model_path = kModel;
  o.output_path = out;
  o.method = "rtn";  // no calibration: fast
  try {
    quantize_model(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overwrite option"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(out + "/keep.txt"));
  o.output_path = kModel;
  EXPECT_THROW(quantize_model(o), Error);  // never over the source
  o.output_path = out;
  o.overwrite = true;
  QuantizeReport r = quantize_model(o);
  EXPECT_FALSE(fs::exists(out + "/keep.txt"));
  EXPECT_TRUE(fs::exists(out + "/model_quantized_gptq.safetensors"));
  EXPECT_EQ(r.linears[0].error, -1);  // RTN without calibration has no error statistics
  EXPECT_EQ(hidden_entries(dir.str()), 0);
  EXPECT_EQ(Model::load(out)->layers()[0].linear[0]->info().kind, "gptq_w4a16");
}

TEST(QuantizerCheckpoint, FailedOrInterruptedRunsLeaveNothing) {
  TempDir dir;
  // A cancelled write (the writer polls between files): no output, no temporary directory.
  CheckpointFiles files;
  files.source_dir = kModel;
  files.output_dir = dir / "cancelled";
  files.config = json{{"model_type", "Dream"}};
  files.tensors = {{"x", Tensor::zeros(DType::F32, {4})}, {"y", Tensor::zeros(DType::F32, {4})}};
  files.max_shard_bytes = 16;  // two shards: a cancel point between them
  int polls = 0;
  files.cancelled = [&] { return ++polls >= 2; };
  EXPECT_THROW(dlx::write_checkpoint(files), Error);
  EXPECT_FALSE(fs::exists(dir / "cancelled"));
  EXPECT_EQ(hidden_entries(dir.str()), 0);

  // An invalid run fails before writing anything.
  QuantizeOptions o;
  o.model_path = kModel;
  o.output_path = dir / "bad";
  o.method = "rtn";
  o.group_size = 100;  // does not divide 256
  EXPECT_THROW(quantize_model(o), Error);
  EXPECT_FALSE(fs::exists(dir / "bad"));

  // Ctrl-C in the middle of a GPTQ run (several seconds of work): non-zero exit, no output, no temporary
  // directory. (A background job of a non-interactive shell starts with SIGINT ignored; the command installs
  // its own handler at once.)
  const std::string calib = calib_file(dir, 85);
  test::CmdResult r = test::run_cli("quantize --model-path " + kModel + " --output-path " + (dir / "int") +
                                    " --quant-format gptq --calib-text " + calib + " --calib-seq-len 128 & pid=$!; "
                                    "sleep 2; kill -INT $pid; wait $pid");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir / "int")) << r.output;
  EXPECT_EQ(hidden_entries(dir.str()), 0);
}

}  // namespace
}  // namespace dlx
