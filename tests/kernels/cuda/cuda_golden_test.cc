// The golden fixtures (testdata/fixtures: logits from HF transformers in float32) run on the CUDA backend. The GPU
// computes with bf16 activations, so the bound is 2e-2 relative (the CPU backend's f32 path meets 1e-4), over the
// whole logits and for every real (unpadded) position. Skipped without a usable GPU.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/cuda/cuda_backend.h"
#include "model/model.h"
#include "test_util.h"

namespace dlx {

#ifdef DIFFULEX_HAVE_CUDA

namespace {

constexpr double kGoldenTol = 2e-2;

Tensor mask_u8(const Tensor& attention_mask) {
  Tensor m = Tensor::zeros(DType::U8, attention_mask.shape());
  for (int64_t i = 0; i < m.numel(); ++i) m.data<uint8_t>()[i] = attention_mask.data<int64_t>()[i] != 0;
  return m;
}

class CudaGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

void expect_rows_match(const Tensor& got, const Tensor& want, const Tensor& am, double tol, const std::string& what) {
  const int64_t B = am.dim(0), L = am.dim(1), V = want.dim(2);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l) {
      if (!am.data<int64_t>()[b * L + l]) continue;
      Tensor g = got.reshape({B * L, V}).slice_rows(b * L + l, b * L + l + 1);
      Tensor w = want.reshape({B * L, V}).slice_rows(b * L + l, b * L + l + 1);
      EXPECT_LT(test::rel_error(g, w), tol) << what << " row " << b << " pos " << l;
    }
}

TEST_P(CudaGolden, MatchesTransformers) {
  const std::string dir = test::source_path("testdata/fixtures/" + GetParam());
  auto ref = TensorStore::open_file(dir + "/reference.safetensors");
  Tensor ids = ref->get("input_ids"), am = ref->get("attention_mask"), want = ref->get("logits");
  LoadOptions lo;
  lo.device = "cuda";
  auto model = Model::load(dir, lo);
  EXPECT_EQ(model->backend().device(), Device::CUDA);
  Tensor got = model->forward(ids, mask_u8(am));
  ASSERT_EQ(got.shape(), want.shape());
  const double err = test::rel_error(got, want);
  EXPECT_LT(err, kGoldenTol) << GetParam();
  std::printf("[ cuda golden ] %-24s rel error %.2e\n", GetParam().c_str(), err);
  expect_rows_match(got, want, am, kGoldenTol, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaGolden,
                         ::testing::Values("dream_tiny", "llada_tiny", "gptq_sym_g64", "gptq_asym_actorder_g32",
                                           "gptq_v2_asym_g64", "gptq_sym_gall", "gptq_8bit_g64", "awq_g64"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

class CudaForward : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

// --dequant-cache keeps dense f32 weights: the GPU's f32 GEMM path.
TEST_F(CudaForward, DequantCacheMatchesTransformers) {
  const std::string dir = test::source_path("testdata/fixtures/gptq_asym_actorder_g32");
  auto ref = TensorStore::open_file(dir + "/reference.safetensors");
  Tensor ids = ref->get("input_ids"), am = ref->get("attention_mask"), want = ref->get("logits");
  LoadOptions lo;
  lo.device = "cuda";
  lo.dequant_cache = true;
  auto model = Model::load(dir, lo);
  Tensor got = model->forward(ids, mask_u8(am));
  EXPECT_LT(test::rel_error(got, want), kGoldenTol);
}

TEST_F(CudaForward, LogitRowsSelectSameValues) {
  const std::string dir = test::source_path("testdata/fixtures/dream_tiny");
  auto ref = TensorStore::open_file(dir + "/reference.safetensors");
  Tensor ids = ref->get("input_ids");
  LoadOptions lo;
  lo.device = "cuda";
  auto model = Model::load(dir, lo);
  Tensor all = model->forward(ids);
  Tensor some = model->forward(ids, {}, {4, 0});
  const int64_t V = all.dim(2);
  ASSERT_EQ(some.shape(), (Shape{2, V}));
  // The same bf16 GEMM rows (one GEMM has M = 2, the other M = 27): equal up to the GEMM's summation order.
  Tensor r4 = all.reshape({all.numel() / V, V}).slice_rows(4, 5), r0 = all.reshape({all.numel() / V, V}).slice_rows(0, 1);
  EXPECT_LT(test::rel_error(some.slice_rows(0, 1), r4), 1e-2);
  EXPECT_LT(test::rel_error(some.slice_rows(1, 2), r0), 1e-2);
}

TEST_F(CudaForward, CliForwardOnCuda) {
  test::TempDir tmp;
  const std::string dir = test::source_path("testdata/fixtures/llada_tiny");
  auto r = test::run_cli("forward --device cuda --model " + dir + " --input-ids " + dir +
                         "/reference.safetensors --output " + (tmp / "out.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto out = TensorStore::open_file(tmp / "out.safetensors");
  auto ref = TensorStore::open_file(dir + "/reference.safetensors");
  EXPECT_LT(test::rel_error(out->get("logits"), ref->get("logits")), kGoldenTol);
}

}  // namespace

#endif  // DIFFULEX_HAVE_CUDA

}  // namespace dlx
