// Golden tests: our CPU forward against logits computed by HF transformers on the same tiny checkpoints
// (testdata/fixtures, made by tools/make_fixtures.py), and the forward CLI end to end.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/random_model.h"
#include "test_util.h"

namespace dlx {

namespace {

Tensor mask_u8(const Tensor& attention_mask) {
  Tensor m = Tensor::zeros(DType::U8, attention_mask.shape());
  for (int64_t i = 0; i < m.numel(); ++i) m.data<uint8_t>()[i] = attention_mask.data<int64_t>()[i] != 0;
  return m;
}

void expect_matches_reference(const std::string& name, double tol, const std::string& model_dir = "",
                              const std::string& ref_file = "") {
  std::string dir = model_dir.empty() ? test::source_path("testdata/fixtures/" + name) : model_dir;
  auto ref = TensorStore::open_file(ref_file.empty() ? dir + "/reference.safetensors" : ref_file);
  Tensor ids = ref->get("input_ids"), am = ref->get("attention_mask"), want = ref->get("logits");
  auto model = Model::load(dir);
  Tensor got = model->forward(ids, mask_u8(am));
  ASSERT_EQ(got.shape(), want.shape());
  EXPECT_LT(test::rel_error(got, want), tol) << name;
  // Padded rows are compared only where the token is real (what a ragged batch needs).
  const int64_t B = ids.dim(0), L = ids.dim(1), V = want.dim(2);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l) {
      if (!am.data<int64_t>()[b * L + l]) continue;
      Tensor g = got.reshape({B * L, V}).slice_rows(b * L + l, b * L + l + 1);
      Tensor w = want.reshape({B * L, V}).slice_rows(b * L + l, b * L + l + 1);
      EXPECT_LT(test::rel_error(g, w), tol) << name << " row " << b << " pos " << l;
    }
}

}  // namespace

TEST(Golden, DreamTinyMatchesTransformers) { expect_matches_reference("dream_tiny", 1e-4); }
TEST(Golden, LladaTinyMatchesTransformers) { expect_matches_reference("llada_tiny", 1e-4); }

// The shipped KJV model against the fp32 PyTorch forward of its training code.
TEST(Golden, KjvTinyModelMatchesTrainingCode) {
  expect_matches_reference("kjv-dream-tiny", 1e-4, test::source_path("models/kjv-dream-tiny"),
                           test::source_path("testdata/kjv/reference.safetensors"));
}

TEST(Golden, LogitRowsSelectSameValues) {
  std::string dir = test::source_path("testdata/fixtures/dream_tiny");
  auto ref = TensorStore::open_file(dir + "/reference.safetensors");
  Tensor ids = ref->get("input_ids");
  auto model = Model::load(dir);
  Tensor all = model->forward(ids);
  Tensor some = model->forward(ids, {}, {4, 0});
  const int64_t V = all.dim(2);
  ASSERT_EQ(some.shape(), (Shape{2, V}));
  for (int64_t v = 0; v < V; ++v) {
    EXPECT_FLOAT_EQ(some.data<float>()[v], all.data<float>()[4 * V + v]);
    EXPECT_FLOAT_EQ(some.data<float>()[V + v], all.data<float>()[v]);
  }
}

TEST(ForwardCli, WritesLogitsMatchingReference) {
  test::TempDir tmp;
  std::string dir = test::source_path("testdata/fixtures/llada_tiny");
  auto r = test::run_cli("forward --model " + dir + " --input-ids " + dir + "/reference.safetensors --output " +
                         (tmp / "out.safetensors"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto out = TensorStore::open_file(tmp / "out.safetensors");
  auto ref = TensorStore::open_file(dir + "/reference.safetensors");
  EXPECT_EQ(out->get("logits").dtype(), DType::F32);
  EXPECT_LT(test::rel_error(out->get("logits"), ref->get("logits")), 1e-4);
}

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
