// `diffulex quantize --device cuda` against `--device cpu` on the shipped KJV model (issue 17's equivalence goal):
// RTN writes the same codes, scales and zeros bit for bit (they depend on the weights only), and every method's
// per-linear relative output error on the calibration inputs, its own and the RTN column, agrees to 1e-3. The
// calibration forward runs in bf16 on the GPU and in F32 on the CPU, so the Hessians differ by rounding and GPTQ /
// AWQ may pick different codes for a few weights: their checkpoints are compared through the error report, not
// byte by byte. Skipped without a usable GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "io/safetensors.h"
#include "quant/quantizer.h"
#include "test_util.h"
#include "cuda_test_util.h"

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA

namespace {

using CudaQuantize = test::CudaTest;

const std::string kModel = test::source_path("models/kjv-dream-tiny");

// The first 30 verses of testdata/kjv/heldout.txt as calibration text (the CPU quantizer tests use the same).
std::string calib_text(const test::TempDir& dir) {
  std::ofstream(dir / "calib.txt") << test::kjv_heldout_lines(0, 30);
  return dir / "calib.txt";
}

// o on the shipped model with 6 x 64 calibration tokens, on `device`, written to dir / device.
QuantizeOptions on(const test::TempDir& dir, QuantizeOptions o, const std::string& device) {
  o.model_path = kModel;
  o.calib.text_path = calib_text(dir);
  o.calib.samples = 6;
  o.calib.seq_len = 64;
  o.device = device;
  o.output_path = dir / device;
  return o;
}

// One run on each device with the same options; returns {cpu, cuda} reports.
std::pair<QuantizeReport, QuantizeReport> both(const test::TempDir& dir, const QuantizeOptions& o) {
  return {quantize_model(on(dir, o, "cpu")), quantize_model(on(dir, o, "cuda"))};
}

void expect_same_report(const QuantizeReport& c, const QuantizeReport& g) {
  ASSERT_EQ(c.linears.size(), 42u);
  ASSERT_EQ(g.linears.size(), c.linears.size());
  for (size_t i = 0; i < c.linears.size(); ++i) {
    const LinearReport &a = c.linears[i], &b = g.linears[i];
    EXPECT_EQ(a.name, b.name);
    ASSERT_GT(a.error, 0.0) << a.name;  // a report was made (calibration given)
    EXPECT_NEAR(a.error, b.error, 1e-3) << a.name;
    EXPECT_NEAR(a.error_rtn, b.error_rtn, 1e-3) << a.name;
  }
}

// Both checkpoint files hold the same tensors, byte for byte; returns how many of them are packed codes (.qweight),
// -1 when the files differ in their tensor lists.
int expect_same_tensors(const std::string& path_a, const std::string& path_b) {
  SafetensorsFile fa(path_a), fb(path_b);
  EXPECT_EQ(fa.tensors().size(), fb.tensors().size());
  int quantized = 0;
  for (const auto& [name, info] : fa.tensors()) {
    if (!fb.has(name)) {
      ADD_FAILURE() << name << " is missing from " << path_b;
      return -1;
    }
    Tensor a = fa.get(name), b = fb.get(name);
    EXPECT_EQ(a.nbytes(), b.nbytes()) << name;
    if (a.nbytes() == b.nbytes()) {
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.nbytes()), 0) << name;
    }
    quantized += name.size() > 8 && name.compare(name.size() - 8, 8, ".qweight") == 0;
  }
  return quantized;
}

TEST_F(CudaQuantize, RtnCodesAndReportEqualTheCpu) {
  test::TempDir dir;
  QuantizeOptions o;
  o.method = "rtn";
  o.format = "gptq";
  auto [c, g] = both(dir, o);
  expect_same_report(c, g);
  const std::string file = "/model_quantized_gptq.safetensors";
  EXPECT_EQ(expect_same_tensors(dir / "cpu" + file, dir / "cuda" + file), 42);
}

TEST_F(CudaQuantize, GptqActOrderReportMatchesTheCpu) {
  test::TempDir dir;
  QuantizeOptions o;
  o.format = "gptq";
  o.group_size = 64;
  o.desc_act = true;
  o.sym = false;
  auto [c, g] = both(dir, o);
  expect_same_report(c, g);
}

// Two GPU runs with the same source, calibration and options write the same bytes (the quantizer's
// Backend::set_reproducible: no kernel chosen by timing). Before it, two GPU AWQ runs of this model on an H100 chose
// three of 24 scale exponents differently (docs/QUANTIZER.md, "Reproducible runs"). AWQ: its grid searches are the
// most sensitive to rounding; GPTQ act-order as well (Cholesky and error feedback on the device).
TEST_F(CudaQuantize, TwoGpuRunsWriteTheSameBytes) {
  for (const char* method : {"awq", "gptq"}) {
    SCOPED_TRACE(method);
    test::TempDir a, b;
    QuantizeOptions o;
    o.format = method;
    o.group_size = 64;
    if (std::string(method) == "gptq") o.desc_act = true, o.sym = false;
    quantize_model(on(a, o, "cuda"));
    quantize_model(on(b, o, "cuda"));
    const std::string file = std::string("cuda/model_quantized_") + method + ".safetensors";
    EXPECT_EQ(expect_same_tensors(a / file, b / file), 42);
  }
}

// AWQ picks each scale exponent as the argmin of a block loss over a 20-point grid whose minimum is often flat
// (the candidates' losses differ by a few per cent; docs/QUANTIZER.md, "GPU and CPU"): the GPU's bf16 forward can
// pick a neighbouring exponent, and from there on the layers see other inputs. So the CPU runs with the exponents
// the GPU chose (--awq-scales-from): then the error report must agree to 1e-3 as for GPTQ, and the block loss of
// every chosen scale within 5% (the GPU computes the attention and MLP blocks in bf16: on the H100, 2026-12-07,
// these losses differed by up to 3.3%, and the unpinned searches' loss curves by 1-9% while a curve's best two
// points were often under 1% apart).
TEST_F(CudaQuantize, AwqReportMatchesTheCpu) {
  test::TempDir dir;
  QuantizeOptions o;
  o.format = "awq";
  o.group_size = 64;
  const QuantizeReport rg = quantize_model(on(dir, o, "cuda"));
  o.awq_scales_from = dir / "cuda/quantization_metadata_awq.json";
  const QuantizeReport rc = quantize_model(on(dir, o, "cpu"));
  expect_same_report(rc, rg);
  const nlohmann::json jg = nlohmann::json::parse(std::ifstream(dir / "cuda/quantization_metadata_awq.json"));
  const nlohmann::json jc = nlohmann::json::parse(std::ifstream(dir / "cpu/quantization_metadata_awq.json"));
  ASSERT_EQ(jg["layer_notes"].size(), 6u);
  for (size_t l = 0; l < 6; ++l)
    for (const char* pair : {"norm_qkv", "v_o", "norm_gate_up", "up_down"}) {
      const nlohmann::json &a = jc["layer_notes"][l]["notes"]["scales"][pair], &b = jg["layer_notes"][l]["notes"]["scales"][pair];
      EXPECT_EQ(a["ratio"], b["ratio"]) << l << " " << pair;
      for (const char* k : {"loss", "loss_unscaled"})
        EXPECT_NEAR(a[k].get<double>(), b[k].get<double>(), 0.05 * a[k].get<double>()) << l << " " << pair << " " << k;
    }
}

}  // namespace

#endif  // DIFFULEX_HAVE_CUDA

}  // namespace dlx
