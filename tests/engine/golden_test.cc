// Golden tests: the forward on every backend (tests/engine/backends.h) against logits computed by HF transformers in
// float32 on the same tiny checkpoints (testdata/fixtures, made by tools/make_fixtures.py; the quantized ones from
// the dequantized weights) and the shipped KJV model against its training code's forward, over the whole logits and
// for every real (unpadded) position; the forward CLI end to end. The CPU computes in f32 (bound 1e-4), CUDA with
// bf16 activations (bound 2e-2).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/random_model.h"
#include "backends.h"
#include "../test_util.h"

namespace dlx {

namespace {

Tensor mask_u8(const Tensor& attention_mask) {
  Tensor m = Tensor::zeros(DType::U8, attention_mask.shape());
  for (int64_t i = 0; i < m.numel(); ++i) m.data<uint8_t>()[i] = attention_mask.data<int64_t>()[i] != 0;
  return m;
}

struct GoldenCase {
  std::string name, model_dir, ref_file;  // empty: testdata/fixtures/<name> and its reference.safetensors
  bool dequant_cache = false;             // dense f32 weights kept from a packed checkpoint
};

GoldenCase fixture(const std::string& name, bool dequant_cache = false) { return {name, "", "", dequant_cache}; }

void expect_matches_reference(const GoldenCase& c, const LoadOptions& base, double tol) {
  LoadOptions lo = base;
  lo.dequant_cache = c.dequant_cache;
  const std::string dir = c.model_dir.empty() ? test::source_path("testdata/fixtures/" + c.name) : c.model_dir;
  auto ref = TensorStore::open_file(c.ref_file.empty() ? dir + "/reference.safetensors" : c.ref_file);
  Tensor ids = ref->get("input_ids"), am = ref->get("attention_mask"), want = ref->get("logits");
  auto model = Model::load(dir, lo);
  EXPECT_EQ(model->backend().device(), lo.device == "cpu" ? Device::CPU : Device::CUDA);
  Tensor got = model->forward(ids, mask_u8(am));
  ASSERT_EQ(got.shape(), want.shape());
  const double err = test::rel_error(got, want);
  EXPECT_LT(err, tol) << c.name;
  std::printf("[ %s golden ] %-24s rel error %.2e\n", lo.device.c_str(), c.name.c_str(), err);
  // Padded rows are compared only where the token is real (what a ragged batch needs).
  const int64_t B = ids.dim(0), L = ids.dim(1), V = want.dim(2);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l) {
      if (!am.data<int64_t>()[b * L + l]) continue;
      Tensor g = got.reshape({B * L, V}).slice_rows(b * L + l, b * L + l + 1);
      Tensor w = want.reshape({B * L, V}).slice_rows(b * L + l, b * L + l + 1);
      EXPECT_LT(test::rel_error(g, w), tol) << c.name << " row " << b << " pos " << l;
    }
}

using Golden = test::BackendTest;

TEST_P(Golden, FixturesMatchTransformers) {
  for (const char* name : {"dream_tiny", "llada_tiny", "gptq_sym_g64", "gptq_asym_actorder_g32", "gptq_v2_asym_g64",
                           "gptq_sym_gall", "gptq_8bit_g64", "awq_g64"})
    expect_matches_reference(fixture(name), load_options(), logits_tol());
}

// --dequant-cache keeps dense f32 weights: the backend's f32 GEMM path.
TEST_P(Golden, DequantCacheMatchesTransformers) {
  expect_matches_reference(fixture("gptq_asym_actorder_g32", true), load_options(), logits_tol());
}

// The shipped KJV model against the fp32 PyTorch forward of its training code.
TEST_P(Golden, KjvTinyModelMatchesTrainingCode) {
  expect_matches_reference({"kjv-dream-tiny", test::source_path("models/kjv-dream-tiny"),
                            test::source_path("testdata/kjv/reference.safetensors")},
                           load_options(), logits_tol());
}

// Asking for some logit rows gives the rows of the full forward: the same values on the CPU; on CUDA the same
// bf16 GEMM rows up to the GEMM's summation order (one GEMM has M = 2, the other M = 27).
TEST_P(Golden, LogitRowsSelectSameValues) {
  std::string dir = test::source_path("testdata/fixtures/dream_tiny");
  auto ref = TensorStore::open_file(dir + "/reference.safetensors");
  Tensor ids = ref->get("input_ids");
  auto model = Model::load(dir, load_options());
  Tensor all = model->forward(ids);
  Tensor some = model->forward(ids, {}, {4, 0});
  const int64_t V = all.dim(2);
  ASSERT_EQ(some.shape(), (Shape{2, V}));
  if (on_cpu()) {
    for (int64_t v = 0; v < V; ++v) {
      EXPECT_FLOAT_EQ(some.data<float>()[v], all.data<float>()[4 * V + v]);
      EXPECT_FLOAT_EQ(some.data<float>()[V + v], all.data<float>()[v]);
    }
  } else {
    Tensor rows = all.reshape({all.numel() / V, V});
    EXPECT_LT(test::rel_error(some.slice_rows(0, 1), rows.slice_rows(4, 5)), 1e-2);
    EXPECT_LT(test::rel_error(some.slice_rows(1, 2), rows.slice_rows(0, 1)), 1e-2);
  }
}

TEST_P(Golden, ForwardCliWritesLogitsMatchingReference) {
  test::TempDir tmp;
  std::string dir = test::source_path("testdata/fixtures/llada_tiny");
  auto r = test::run_cli("forward --device " + GetParam() + " --model " + dir + " --input-ids " + dir +
                         "/reference.safetensors --output " + (tmp / "out.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto out = TensorStore::open_file(tmp / "out.safetensors");
  auto ref = TensorStore::open_file(dir + "/reference.safetensors");
  EXPECT_EQ(out->get("logits").dtype(), DType::F32);
  EXPECT_LT(test::rel_error(out->get("logits"), ref->get("logits")), logits_tol());
}

DLX_INSTANTIATE_OVER_BACKENDS(Golden);

}  // namespace

// Bad input: each a one-line error naming the problem and a non-zero exit, never a crash.
class ForwardCliErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    write_random_checkpoint(tmp_ / "model", random_preset_config("dream-tiny"), 1);
    model_ = tmp_ / "model";
  }
  std::string ids_file(const std::vector<int64_t>& ids, Shape shape, DType dtype = DType::I64) {
    std::string p = tmp_ / ("ids" + std::to_string(n_++) + ".safetensors");
    Tensor t = Tensor::zeros(DType::I64, shape);
    for (size_t i = 0; i < ids.size(); ++i) t.data<int64_t>()[i] = ids[i];
    if (dtype == DType::I64) {
      write_safetensors(p, {{"input_ids", t}});
    } else {
      write_safetensors(p, {{"input_ids", Tensor::zeros(dtype, shape)}});
    }
    return p;
  }
  test::CmdResult forward(const std::string& model, const std::string& ids) {
    return test::run_cli("forward --model " + model + " --input-ids " + ids + " --output " + (tmp_ / "out.safetensors"));
  }
  void expect_error(const test::CmdResult& r, const std::string& needle) {
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(needle), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_FALSE(std::filesystem::exists(tmp_ / "out.safetensors"));
  }
  test::TempDir tmp_;
  std::string model_;
  int n_ = 0;
};

TEST_F(ForwardCliErrors, IdsOutOfVocabulary) { expect_error(forward(model_, ids_file({1, 2, 320}, {1, 3})), "input_ids[0][2] = 320 is outside the vocabulary"); }
TEST_F(ForwardCliErrors, NegativeId) { expect_error(forward(model_, ids_file({-1}, {1, 1})), "outside the vocabulary"); }
TEST_F(ForwardCliErrors, EmptyInput) { expect_error(forward(model_, ids_file({}, {1, 0})), "input_ids is empty"); }
TEST_F(ForwardCliErrors, WrongIdsDtype) { expect_error(forward(model_, ids_file({}, {1, 2}, DType::F32)), "input_ids must be I64"); }

TEST_F(ForwardCliErrors, MissingTensor) {
  // Rewrite the checkpoint without one norm weight.
  auto store = TensorStore::open_dir(model_);
  std::vector<std::pair<std::string, Tensor>> ts;
  for (const auto& n : store->names())
    if (n != "model.layers.1.post_attention_layernorm.weight") ts.emplace_back(n, Tensor::from_data(store->get(n).dtype(), store->get(n).shape(), store->get(n).data()));
  store.reset();
  write_safetensors(model_ + "/model.safetensors", ts);
  expect_error(forward(model_, ids_file({1, 2}, {1, 2})), "no tensor named 'model.layers.1.post_attention_layernorm.weight'");
}

TEST_F(ForwardCliErrors, ShapeDisagreesWithConfig) {
  auto cfg = random_preset_config("dream-tiny");
  cfg["intermediate_size"] = 128;
  std::ofstream(model_ + "/config.json") << cfg.dump();
  expect_error(forward(model_, ids_file({1, 2}, {1, 2})), "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [160, 64], expected [128, 64]");
}

TEST_F(ForwardCliErrors, TruncatedCheckpoint) {
  std::filesystem::resize_file(model_ + "/model.safetensors", std::filesystem::file_size(model_ + "/model.safetensors") - 100);
  expect_error(forward(model_, ids_file({1, 2}, {1, 2})), "past the data area");
}

TEST_F(ForwardCliErrors, MissingModelDir) { expect_error(forward(tmp_ / "nope", ids_file({1}, {1, 1})), "config.json: not found"); }

TEST_F(ForwardCliErrors, UnknownArchitecture) {
  std::ofstream(model_ + "/config.json") << R"({"model_type": "gpt2"})";
  expect_error(forward(model_, ids_file({1}, {1, 1})), "unsupported model_type 'gpt2'");
}

TEST(InspectCli, ListsLayers) {
  auto r = test::run_cli("inspect --model " + test::source_path("testdata/fixtures/llada_tiny") + " --list-layers");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("LLaDA"), std::string::npos);
  EXPECT_NE(r.output.find("model.transformer.blocks.1.ff_out"), std::string::npos);
  EXPECT_NE(r.output.find("bf16"), std::string::npos);
}

}  // namespace dlx
