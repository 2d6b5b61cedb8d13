// Loading quantized linears through the kinds table (formats/linear.h): small checkpoints in each format are
// written with the layout writers, loaded with load_linear, and compared with the codes they came from
// (dequantize() and forward against a double-precision reference). Broken checkpoints must fail with an
// Error that names the tensor and the file.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "formats/awq.h"
#include "formats/diffulex_int8.h"
#include "formats/gptq.h"
#include "formats/linear.h"
#include "formats/packed_linear.h"
#include "formats/quant_config.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "model/random_init.h"
#include "quant_test_util.h"

namespace dlx {

namespace {

using Tensors = std::vector<std::pair<std::string, Tensor>>;
const std::string kPrefix = "model.layers.0.mlp.up_proj";

Backend& cpu() {
  static std::unique_ptr<Backend> be = make_backend("cpu");
  return *be;
}

LinearSpec spec_of(int64_t n, int64_t k, bool bias = false) {
  LinearSpec s;
  s.prefix = kPrefix;
  s.out_features = n;
  s.in_features = k;
  s.bias = bias;
  return s;
}

QuantConfig gptq_config(int bits, int64_t group_size, bool desc_act, const std::string& format = "gptq") {
  QuantConfig q;
  q.method = "gptq";
  q.bits = bits;
  q.group_size = group_size;
  q.desc_act = desc_act;
  q.sym = false;
  q.checkpoint_format = format;
  q.source = "config.json (quantization_config)";
  return q;
}

QuantConfig awq_config(int64_t group_size) {
  QuantConfig q;
  q.method = "awq";
  q.bits = 4;
  q.group_size = group_size;
  q.version = "gemm";
  q.source = "config.json (quantization_config)";
  return q;
}

Tensors gptq_tensors(const QuantCodes& c, bool v1, bool with_g_idx = true) {
  GptqTensors t = pack_gptq(c, v1);
  Tensors out = {{kPrefix + ".qweight", t.qweight}, {kPrefix + ".qzeros", t.qzeros}, {kPrefix + ".scales", t.scales}};
  if (with_g_idx) out.push_back({kPrefix + ".g_idx", t.g_idx});
  return out;
}

Tensors awq_tensors(const QuantCodes& c) {
  AwqTensors t = pack_awq(c);
  return {{kPrefix + ".qweight", t.qweight}, {kPrefix + ".qzeros", t.qzeros}, {kPrefix + ".scales", t.scales}};
}

std::unique_ptr<Linear> load(const TensorStore& store, const QuantConfig* q, const LinearSpec& s,
                             const std::string& family = "", bool dequant_cache = false) {
  LoadContext ctx{store, q, cpu(), dequant_cache};
  return load_linear(ctx, s, family);
}

// The loaded layer equals the reference weight: dequantize() and forward at a few M.
void expect_layer(const Linear& lin, const Tensor& want, const Tensor* bias, std::mt19937_64& rng) {
  EXPECT_LE(test::rel_error(lin.dequantize(), want), 1e-6);
  for (int64_t M : {1, 3, 9}) {
    Tensor x = test::random_tensor(DType::F32, {M, want.dim(1)}, rng);
    Tensor y = Tensor::zeros(DType::F32, {M, want.dim(0)});
    lin.forward(cpu(), x, y);
    EXPECT_LE(test::rel_error(y, test::reference_matmul(x, want, bias)), 1e-5) << "M " << M;
  }
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

// The message names the tensor and the checkpoint file.
void expect_names(const std::string& msg, const std::string& tensor, const test::TempDir& dir) {
  EXPECT_NE(msg.find("'" + tensor + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dir / "model.safetensors"), std::string::npos) << msg;
}

}  // namespace

TEST(QuantLinear, GptqVariantsLoadAndMatchCodes) {
  std::mt19937_64 rng(21);
  struct V {
    int bits;
    int64_t gs;  // -1: one group
    bool sym, act, v1, bias;
  };
  for (V v : {V{4, 64, true, false, true, true}, V{4, 32, false, true, true, false}, V{4, 64, false, false, false, true},
              V{4, -1, true, false, true, false}, V{8, 64, true, false, true, true}, V{8, 32, false, true, false, false}}) {
    const int64_t N = 48, K = 256, gs = v.gs == -1 ? K : v.gs;
    QuantCodes c = test::random_codes(v.bits, N, K, gs, v.sym, v.act, rng);
    Tensors ts = gptq_tensors(c, v.v1);
    Tensor bias = test::random_tensor(DType::F16, {N}, rng);
    if (v.bias) ts.push_back({kPrefix + ".bias", bias});
    test::TempDir dir;
    auto store = test::write_checkpoint(dir, ts);
    QuantConfig q = gptq_config(v.bits, v.gs, v.act, v.v1 ? "gptq" : "gptq_v2");
    auto lin = load(*store, &q, spec_of(N, K, v.bias));
    LinearInfo info = lin->info();
    EXPECT_EQ(info.kind, v.bits == 4 ? "gptq_w4a16" : "gptq_w8a16");
    EXPECT_EQ(info.bits, v.bits);
    EXPECT_EQ(info.group_size, gs);
    EXPECT_EQ(info.act_order, v.act);
    EXPECT_EQ(info.has_bias, v.bias);
    // Packed: codes + F32 scale and scaled zero per (row, group) + perm + bias; never a dense copy.
    size_t want_bytes = size_t(N * K * v.bits / 8 + N * (K / gs) * 8 + (v.act ? K * 4 : 0) + (v.bias ? N * 2 : 0));
    EXPECT_EQ(info.bytes, want_bytes);
    expect_layer(*lin, test::codes_weight(c), v.bias ? &bias : nullptr, rng);

    // The same checkpoint without a quantization config: bits and group size from the shapes.
    auto guessed = load(*store, nullptr, spec_of(N, K, v.bias));
    EXPECT_EQ(guessed->info().kind, info.kind);
    if (v.v1) expect_layer(*guessed, test::codes_weight(c), v.bias ? &bias : nullptr, rng);
  }
}

TEST(QuantLinear, GptqWithoutGIdxIsSequential) {
  std::mt19937_64 rng(22);
  QuantCodes c = test::random_codes(4, 16, 128, 32, false, false, rng);
  test::TempDir dir;
  auto store = test::write_checkpoint(dir, gptq_tensors(c, true, /*with_g_idx=*/false));
  QuantConfig q = gptq_config(4, 32, false);
  expect_layer(*load(*store, &q, spec_of(16, 128)), test::codes_weight(c), nullptr, rng);
  QuantConfig act = gptq_config(4, 32, true);
  expect_names(error_of([&] { load(*store, &act, spec_of(16, 128)); }), kPrefix + ".g_idx", dir);
}

TEST(QuantLinear, AwqLoadsWithAndWithoutConfig) {
  std::mt19937_64 rng(23);
  for (int64_t gs : {32, 64, 128}) {
    QuantCodes c = test::random_codes(4, 40, 256, gs, false, false, rng);
    Tensor bias = test::random_tensor(DType::F16, {40}, rng);
    Tensors ts = awq_tensors(c);
    ts.push_back({kPrefix + ".bias", bias});
    test::TempDir dir;
    auto store = test::write_checkpoint(dir, ts);
    QuantConfig q = awq_config(gs);
    auto lin = load(*store, &q, spec_of(40, 256, true));
    EXPECT_EQ(lin->info().kind, "awq_w4a16");
    EXPECT_EQ(lin->info().group_size, gs);
    expect_layer(*lin, test::codes_weight(c), &bias, rng);
    auto guessed = load(*store, nullptr, spec_of(40, 256, true));
    EXPECT_EQ(guessed->info().kind, "awq_w4a16");
    expect_layer(*guessed, test::codes_weight(c), &bias, rng);
  }
}

// The later public Diffulex's "awq" export packs nibbles sequentially under AutoAWQ's names and shapes: it loads
// right only with the explicit plain order, and reads scrambled without it (which is why the option exists).
TEST(QuantLinear, AwqPlainNibbleOrderNeedsTheOption) {
  std::mt19937_64 rng(29);
  QuantCodes c = test::random_codes(4, 32, 128, 64, false, false, rng);
  AwqTensors t = pack_awq(c, DType::F16, AwqOrder::Plain);
  test::TempDir dir;
  auto store = test::write_checkpoint(
      dir, {{kPrefix + ".qweight", t.qweight}, {kPrefix + ".qzeros", t.qzeros}, {kPrefix + ".scales", t.scales}});
  QuantConfig q = awq_config(64);
  LoadContext plain{*store, &q, cpu(), false, true};
  auto lin = load_linear(plain, spec_of(32, 128));
  EXPECT_EQ(lin->info().kind, "awq_w4a16");
  expect_layer(*lin, test::codes_weight(c), nullptr, rng);
  EXPECT_GT(test::rel_error(load(*store, &q, spec_of(32, 128))->dequantize(), test::codes_weight(c)), 0.1);
  QuantCodes back = unpack_awq(t, 64, AwqOrder::Plain);
  EXPECT_EQ(back.q, c.q);
  EXPECT_EQ(back.zero, c.zero);
}

// fuse_packed_linears: the fused layer's output is the parts' outputs side by side (same codes, same kernel per
// row); the parts keep answering for themselves; incompatible parts are left alone.
TEST(QuantLinear, FusedPackedLayersStackTheirRows) {
  std::mt19937_64 rng(33);
  std::vector<std::unique_ptr<Linear>> parts;
  std::vector<QuantCodes> codes;
  std::vector<Tensor> biases;
  for (int64_t n : {48, 16, 16}) {
    codes.push_back(test::random_codes(4, n, 128, 32, false, false, rng));
    biases.push_back(test::random_tensor(DType::F16, {n}, rng));
    Tensors ts = gptq_tensors(codes.back(), true, false);
    ts.push_back({kPrefix + ".bias", biases.back()});
    test::TempDir dir;
    auto store = test::write_checkpoint(dir, ts);
    QuantConfig q = gptq_config(4, 32, false);
    parts.push_back(load(*store, &q, spec_of(n, 128, true)));
  }
  auto fused = fuse_packed_linears({&parts[0], &parts[1], &parts[2]}, cpu());
  ASSERT_TRUE(fused != nullptr);
  EXPECT_EQ(fused->out_features(), 80);
  Tensor x = test::random_tensor(DType::F32, {5, 128}, rng);
  Tensor y = Tensor::zeros(DType::F32, {5, 80});
  fused->forward(cpu(), x, y);
  int64_t col = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const int64_t n = parts[i]->out_features();
    Tensor yi = Tensor::zeros(DType::F32, {5, n});
    parts[i]->forward(cpu(), x, yi);
    Tensor want = test::reference_matmul(x, test::codes_weight(codes[i]), &biases[i]);
    for (int64_t m = 0; m < 5; ++m)
      for (int64_t j = 0; j < n; ++j) {
        EXPECT_NEAR(y.data<float>()[m * 80 + col + j], yi.data<float>()[m * n + j], 1e-4) << i << " " << m << " " << j;
        EXPECT_NEAR(yi.data<float>()[m * n + j], want.data<float>()[m * n + j], 1e-3);
      }
    EXPECT_LE(test::rel_error(parts[i]->dequantize(), test::codes_weight(codes[i])), 1e-6);
    col += n;
  }
  // Another group size does not fuse, and leaves the parts as they were.
  QuantCodes other = test::random_codes(4, 16, 128, 64, false, false, rng);
  test::TempDir dir;
  auto store = test::write_checkpoint(dir, gptq_tensors(other, true, false));
  QuantConfig q = gptq_config(4, 64, false);
  std::unique_ptr<Linear> odd = load(*store, &q, spec_of(16, 128));
  const Linear* before = odd.get();
  EXPECT_EQ(fuse_packed_linears({&parts[0], &odd}, cpu()), nullptr);
  EXPECT_EQ(odd.get(), before);
}

// Linear::forward_swiglu over a fused [gate; up] packed layer: the same floats as forward() then silu_mul_fused, with
// a bias (Linear's generic form) and without (Backend::matmul_packed_swiglu); an odd width is refused.
TEST(QuantLinear, ForwardSwigluIsForwardThenSiluMul) {
  std::mt19937_64 rng(34);
  for (bool bias : {false, true}) {
    std::vector<std::unique_ptr<Linear>> parts;
    for (int i = 0; i < 2; ++i) {
      Tensors ts = gptq_tensors(test::random_codes(4, 48, 128, 32, false, false, rng), true, false);
      if (bias) ts.push_back({kPrefix + ".bias", test::random_tensor(DType::F16, {48}, rng)});
      test::TempDir dir;
      auto store = test::write_checkpoint(dir, ts);
      QuantConfig q = gptq_config(4, 32, false);
      parts.push_back(load(*store, &q, spec_of(48, 128, bias)));
    }
    auto fused = fuse_packed_linears({&parts[0], &parts[1]}, cpu());
    ASSERT_TRUE(fused != nullptr);
    Tensor x = test::random_tensor(DType::F32, {5, 128}, rng);
    Tensor y = Tensor::zeros(DType::F32, {5, 96}), want = Tensor::zeros(DType::F32, {5, 48});
    fused->forward(cpu(), x, y);
    cpu().silu_mul_fused(y, want);
    Tensor got = Tensor::zeros(DType::F32, {5, 48});
    fused->forward_swiglu(cpu(), x, got);
    for (int64_t i = 0; i < want.numel(); ++i) ASSERT_EQ(got.data<float>()[i], want.data<float>()[i]) << bias << " " << i;
  }
  test::TempDir dir;
  auto store = test::write_checkpoint(dir, gptq_tensors(test::random_codes(4, 15, 128, 32, false, false, rng), true, false));
  QuantConfig q = gptq_config(4, 32, false);
  std::unique_ptr<Linear> odd = load(*store, &q, spec_of(15, 128));
  Tensor x = Tensor::zeros(DType::F32, {2, 128}), out = Tensor::zeros(DType::F32, {2, 7});
  EXPECT_THROW(odd->forward_swiglu(cpu(), x, out), Error);
}

// A packed layer keeps its bias on the host (fusion stacks host biases and never reads one back from a device):
// a bias that lives in a device's memory is refused when the layer is made. The tensor below only claims to be on
// CUDA; nothing reads it.
TEST(QuantLinear, PackedLayerRefusesADeviceBias) {
  RandomPackedOptions ro;
  ro.group_size = 32;
  const PackedWeight w = random_packed_weight(16, 128, ro, 5);
  Tensor host = Tensor::zeros(DType::F32, {16});
  Tensor device(DType::F32, {16}, host.data(), nullptr, Device::CUDA);
  TensorStore no_files;
  LoadContext ctx{no_files, nullptr, cpu()};
  LinearInfo info;
  info.bits = 4, info.group_size = 32;
  EXPECT_NO_THROW(make_packed_linear(ctx, spec_of(16, 128, true), w, host, info));
  try {
    make_packed_linear(ctx, spec_of(16, 128, true), w, device, info);
    ADD_FAILURE() << "a device bias was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("host"), std::string::npos) << e.what();
  }
}

TEST(QuantLinear, DequantCacheKeepsDenseCopy) {
  std::mt19937_64 rng(24);
  QuantCodes c = test::random_codes(4, 24, 128, 64, false, true, rng);
  test::TempDir dir;
  auto store = test::write_checkpoint(dir, gptq_tensors(c, true));
  QuantConfig q = gptq_config(4, 64, true);
  auto lin = load(*store, &q, spec_of(24, 128), "", /*dequant_cache=*/true);
  EXPECT_EQ(lin->info().kind, "gptq_w4a16");
  EXPECT_EQ(lin->info().bytes, size_t(24 * 128 * 4));
  expect_layer(*lin, test::codes_weight(c), nullptr, rng);
}

TEST(QuantLinear, FamilyForcingAndExclusions) {
  std::mt19937_64 rng(25);
  QuantCodes c = test::random_codes(4, 16, 64, 32, true, false, rng);
  Tensors ts = gptq_tensors(c, true);
  Tensor dense = test::random_tensor(DType::BF16, {16, 64}, rng);
  test::TempDir dir;
  auto store = test::write_checkpoint(dir, ts);
  QuantConfig q = gptq_config(4, 32, false);
  std::string msg = error_of([&] { load(*store, &q, spec_of(16, 64), "awq"); });
  EXPECT_NE(msg.find("stored as gptq"), std::string::npos) << msg;
  EXPECT_NE(msg.find("awq was requested"), std::string::npos) << msg;
  EXPECT_THROW(load(*store, &q, spec_of(16, 64), "bf16"), Error);
  EXPECT_EQ(load(*store, &q, spec_of(16, 64), "gptq")->info().kind, "gptq_w4a16");

  // Listed in modules_to_not_convert but stored packed only: the tensors win.
  QuantConfig listed = q;
  listed.modules_to_not_convert = {"up_proj"};
  EXPECT_EQ(load(*store, &listed, spec_of(16, 64))->info().kind, "gptq_w4a16");

  // A layer listed in modules_to_not_convert stays dense when it has a dense weight next to packed tensors.
  ts.push_back({kPrefix + ".weight", dense});
  test::TempDir dir2;
  auto store2 = test::write_checkpoint(dir2, ts);
  for (const char* m : {"up_proj", "mlp", "model.layers.0.mlp.up_proj"}) {
    QuantConfig skip = q;
    skip.modules_to_not_convert = {m};
    EXPECT_EQ(load(*store2, &skip, spec_of(16, 64))->info().kind, "bf16") << m;
  }
  QuantConfig other = q;
  other.modules_to_not_convert = {"lm_head", "up"};
  EXPECT_EQ(load(*store2, &other, spec_of(16, 64))->info().kind, "gptq_w4a16");
}

// The Diffulex int8 layout: W[n, k] = scales[g(n), k] * (q(n, k) + zq(g(n), k)), groups over OUTPUT rows.
TEST(QuantLinear, DiffulexInt8LoadsBothScaleShapes) {
  std::mt19937_64 rng(26);
  const int64_t N = 20, K = 64, gs = 8, G = 3;  // ceil(20 / 8) = 3 output groups
  for (bool per_column : {true, false})
    for (bool g_idx : {true, false}) {
      DiffulexInt8Codes c;
      c.n = N;
      c.k = K;
      c.group_size = gs;
      std::uniform_int_distribution<int> v(-8, 7);
      std::uniform_real_distribution<float> s(0.01f, 0.05f);
      for (int64_t i = 0; i < N * K; ++i) c.q.push_back(int8_t(v(rng)));
      for (int64_t i = 0; i < G * K; ++i) c.zero.push_back(int8_t(v(rng)));
      for (int64_t i = 0; i < (per_column ? G * K : G); ++i) c.scale.push_back(s(rng));
      if (g_idx)
        for (int64_t n = 0; n < N; ++n) c.g_idx.push_back(int32_t((n * 7) % G));
      DiffulexInt8Tensors t = pack_diffulex_int8(c);
      Tensors ts = {{kPrefix + ".qweight", t.qweight}, {kPrefix + ".qzeros", t.qzeros}, {kPrefix + ".scales", t.scales}};
      if (g_idx) ts.push_back({kPrefix + ".g_idx", t.g_idx});
      const int32_t gs32 = int32_t(gs);
      ts.push_back({kPrefix + ".group_size", Tensor::from_data(DType::I32, {}, &gs32)});
      test::TempDir dir;
      auto store = test::write_checkpoint(dir, ts);
      auto lin = load(*store, nullptr, spec_of(N, K));
      EXPECT_EQ(lin->info().kind, g_idx ? "diffulex_int8_gptq" : "diffulex_int8_awq");
      Tensor want = Tensor::zeros(DType::F32, {N, K});
      for (int64_t n = 0; n < N; ++n) {
        int64_t g = g_idx ? c.g_idx[size_t(n)] : n / gs;
        for (int64_t k = 0; k < K; ++k) {
          float sc = c.scale[size_t(per_column ? g * K + k : g)];
          want.data<float>()[n * K + k] = sc * float(c.q[size_t(n * K + k)] + c.zero[size_t(g * K + k)]);
        }
      }
      expect_layer(*lin, want, nullptr, rng);
      EXPECT_THROW(load(*store, nullptr, spec_of(N, K), g_idx ? "awq" : "gptq"), Error);
    }
}

// The original Diffulex wrote its quantized layers to model_quantized_{gptq,awq}.safetensors beside the original weights: the
// directory's store reads that overlay, so those layers load quantized and the rest dense.
TEST(QuantLinear, SeedQuantizedOverlayFileLoads) {
  std::mt19937_64 rng(31);
  const std::string fixture = test::source_path("testdata/fixtures/dream_tiny");
  test::TempDir dir;
  for (const char* f : {"config.json", "model.safetensors"})
    std::filesystem::copy_file(fixture + "/" + f, dir / f);
  auto base = Model::load(dir.str());
  const Linear& dense_up = *base->layers()[0].linear[int(LinearRole::Up)];
  const int64_t N = dense_up.out_features(), K = dense_up.in_features();

  DiffulexInt8Codes c;
  c.n = N;
  c.k = K;
  c.group_size = N;  // one output group, one scale per input column
  std::uniform_int_distribution<int> v(-8, 7);
  std::uniform_real_distribution<float> s(0.01f, 0.05f);
  for (int64_t i = 0; i < N * K; ++i) c.q.push_back(int8_t(v(rng)));
  for (int64_t i = 0; i < K; ++i) c.zero.push_back(int8_t(v(rng)));
  for (int64_t i = 0; i < K; ++i) c.scale.push_back(s(rng));
  DiffulexInt8Tensors t = pack_diffulex_int8(c);
  const std::string up = "model.layers.0.mlp.up_proj";
  write_safetensors(dir / "model_quantized_awq.safetensors",
                    {{up + ".qweight", t.qweight}, {up + ".qzeros", t.qzeros}, {up + ".scales", t.scales}});

  auto model = Model::load(dir.str());
  const Linear& q_up = *model->layers()[0].linear[int(LinearRole::Up)];
  EXPECT_EQ(q_up.info().kind, "diffulex_int8_awq");
  EXPECT_EQ(model->layers()[0].linear[int(LinearRole::Gate)]->info().kind, "bf16");
  Tensor want = Tensor::zeros(DType::F32, {N, K});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      want.data<float>()[n * K + k] = c.scale[size_t(k)] * float(c.q[size_t(n * K + k)] + c.zero[size_t(k)]);
  expect_layer(q_up, want, nullptr, rng);

  // The same file under the GPTQ name is the original Diffulex's GPTQ output, although it has no g_idx: it loads as gptq, and
  // forcing awq names the kind it holds (not the dense weight beneath it).
  std::filesystem::rename(dir / "model_quantized_awq.safetensors", dir / "model_quantized_gptq.safetensors");
  EXPECT_EQ(Model::load(dir.str())->layers()[0].linear[int(LinearRole::Up)]->info().kind, "diffulex_int8_gptq");
  {
    std::shared_ptr<TensorStore> st = TensorStore::open_dir(dir.str());
    LinearSpec us = dense_up.spec();
    EXPECT_EQ(load(*st, nullptr, us, "gptq")->info().kind, "diffulex_int8_gptq");
    EXPECT_NE(error_of([&] { load(*st, nullptr, us, "awq"); }).find("is stored as gptq in the checkpoint but awq"),
              std::string::npos);
    EXPECT_EQ(load(*st, nullptr, us, "bf16")->info().kind, "bf16");  // the dense weight beneath stays loadable
  }
  std::filesystem::rename(dir / "model_quantized_gptq.safetensors", dir / "model_quantized_awq.safetensors");

  // Two overlays are ambiguous; an overlay that repeats a tensor of the base is not an overlay.
  std::filesystem::copy_file(dir / "model_quantized_awq.safetensors", dir / "model_quantized_gptq.safetensors");
  EXPECT_NE(error_of([&] { Model::load(dir.str()); }).find("model_quantized_gptq.safetensors"), std::string::npos);
  std::filesystem::remove(dir / "model_quantized_gptq.safetensors");
  write_safetensors(dir / "model_quantized_awq.safetensors",
                    {{up + ".qweight", t.qweight}, {"model.norm.weight", base->store().get("model.norm.weight")}});
  EXPECT_NE(error_of([&] { Model::load(dir.str()); }).find("'model.norm.weight' is also in"), std::string::npos);
}

TEST(QuantLinear, BrokenGptqCheckpointsNameTheTensor) {
  std::mt19937_64 rng(27);
  const int64_t N = 16, K = 128;
  QuantCodes c = test::random_codes(4, N, K, 32, false, true, rng);
  QuantConfig q = gptq_config(4, 32, true);
  auto broken = [&](const std::string& suffix, Tensor replacement, const std::string& tensor,
                    const QuantConfig& cfg) {
    Tensors ts;
    for (auto& [name, t] : gptq_tensors(c, true)) {
      if (name == kPrefix + "." + suffix) {
        if (replacement.defined()) ts.push_back({name, replacement});
      } else {
        ts.push_back({name, t});
      }
    }
    test::TempDir dir;
    auto store = test::write_checkpoint(dir, ts);
    expect_names(error_of([&] { load(*store, &cfg, spec_of(N, K)); }), tensor, dir);
  };
  const std::string qw = kPrefix + ".qweight";
  broken("qweight", Tensor::zeros(DType::I32, {K / 8 + 1, N}), qw, q);       // wrong shape
  broken("qweight", Tensor::zeros(DType::I32, {K / 8, N + 8}), qw, q);       // wrong out_features
  broken("qweight", Tensor::zeros(DType::F32, {K / 8, N}), qw, q);           // wrong dtype
  broken("qweight", Tensor::zeros(DType::I32, {K / 4, N}), qw, q);           // 8-bit rows under a 4-bit config
  broken("qzeros", Tensor(), kPrefix + ".qzeros", q);                       // missing qzeros
  broken("qzeros", Tensor::zeros(DType::I32, {4, N / 4}), kPrefix + ".qzeros", q);
  broken("scales", Tensor(), kPrefix + ".scales", q);                       // missing scales
  broken("scales", Tensor::zeros(DType::F16, {3, N}), kPrefix + ".scales", q);
  Tensor nan_scales = test::random_tensor(DType::F16, {K / 32, N}, rng);
  nan_scales.data<uint16_t>()[5] = 0x7E00;  // fp16 NaN
  broken("scales", nan_scales, kPrefix + ".scales", q);
  Tensor inf_scales = test::random_tensor(DType::F32, {K / 32, N}, rng);
  inf_scales.data<float>()[7] = INFINITY;
  broken("scales", inf_scales, kPrefix + ".scales", q);
  Tensor bad_range = Tensor::zeros(DType::I32, {K});
  bad_range.data<int32_t>()[9] = int32_t(K / 32);  // group 4 of 4
  broken("g_idx", bad_range, kPrefix + ".g_idx", q);
  Tensor negative = Tensor::zeros(DType::I32, {K});
  for (int64_t k = 0; k < K; ++k) negative.data<int32_t>()[k] = int32_t(k / 32);
  negative.data<int32_t>()[0] = -1;
  broken("g_idx", negative, kPrefix + ".g_idx", q);
  Tensor unbalanced = Tensor::zeros(DType::I32, {K});
  for (int64_t k = 0; k < K; ++k) unbalanced.data<int32_t>()[k] = int32_t(k / 32);
  unbalanced.data<int32_t>()[0] = 1;  // group 0 has 31 rows, group 1 has 33
  broken("g_idx", unbalanced, kPrefix + ".g_idx", q);
  broken("g_idx", Tensor::zeros(DType::I32, {K - 1}), kPrefix + ".g_idx", q);
  QuantConfig not_dividing = gptq_config(4, 48, true);  // 48 does not divide K = 128
  broken("g_idx", Tensor::zeros(DType::I32, {K}), qw, not_dividing);
}

TEST(QuantLinear, BrokenAwqAndInt8CheckpointsNameTheTensor) {
  std::mt19937_64 rng(28);
  {  // out_features not a multiple of 8
    test::TempDir dir;
    auto store = test::write_checkpoint(dir, {{kPrefix + ".qweight", Tensor::zeros(DType::I32, {64, 1})},
                                              {kPrefix + ".qzeros", Tensor::zeros(DType::I32, {1, 1})},
                                              {kPrefix + ".scales", Tensor::zeros(DType::F16, {1, 12})}});
    QuantConfig q = awq_config(64);
    std::string msg = error_of([&] { load(*store, &q, spec_of(12, 64)); });
    expect_names(msg, kPrefix + ".qweight", dir);
    EXPECT_NE(msg.find("multiple of 8"), std::string::npos) << msg;
  }
  {  // AWQ without qzeros, and with a group size that does not divide K
    QuantCodes c = test::random_codes(4, 16, 128, 32, false, false, rng);
    Tensors ts = awq_tensors(c);
    ts.erase(ts.begin() + 1);
    test::TempDir dir;
    auto store = test::write_checkpoint(dir, ts);
    QuantConfig q = awq_config(32);
    expect_names(error_of([&] { load(*store, &q, spec_of(16, 128)); }), kPrefix + ".qzeros", dir);
    QuantConfig bad = awq_config(96);
    expect_names(error_of([&] { load(*store, &bad, spec_of(16, 128)); }), kPrefix + ".qweight", dir);
  }
  {  // Diffulex int8: qweight rows, scales shape, g_idx range
    DiffulexInt8Codes c;
    c.n = 8;
    c.k = 16;
    c.group_size = 4;
    c.q.assign(128, 1);
    c.zero.assign(32, 0);
    c.scale.assign(2, 0.1f);
    c.g_idx = {0, 0, 0, 0, 1, 1, 1, 5};
    DiffulexInt8Tensors t = pack_diffulex_int8(c);
    test::TempDir dir;
    auto store = test::write_checkpoint(dir, {{kPrefix + ".qweight", t.qweight},
                                              {kPrefix + ".qzeros", t.qzeros},
                                              {kPrefix + ".scales", Tensor::zeros(DType::F32, {2, 15})},
                                              {kPrefix + ".g_idx", t.g_idx}});
    expect_names(error_of([&] { load(*store, nullptr, spec_of(8, 16)); }), kPrefix + ".scales", dir);
    expect_names(error_of([&] { load(*store, nullptr, spec_of(9, 16)); }), kPrefix + ".qweight", dir);
    test::TempDir dir2;
    auto store2 = test::write_checkpoint(dir2, {{kPrefix + ".qweight", t.qweight},
                                                {kPrefix + ".qzeros", t.qzeros},
                                                {kPrefix + ".scales", t.scales},
                                                {kPrefix + ".g_idx", t.g_idx}});
    expect_names(error_of([&] { load(*store2, nullptr, spec_of(8, 16)); }), kPrefix + ".g_idx", dir2);
  }
}

}  // namespace dlx
