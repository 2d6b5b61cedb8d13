// NaN never turns into fluent output (issue 18: an all-NaN q_proj gave fluent text and exit 0): a checkpoint with
// a non-finite weight is refused at load naming the file and tensor; the CPU attention propagates a NaN score
// instead of dropping it in its max; the samplers refuse logits that hold a NaN.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>

#include "core/error.h"
#include "core/tensor.h"
#include "engine/sampling.h"
#include "io/safetensors.h"
#include "kernels/cpu/ops.h"
#include "model/model.h"
#include "test_util.h"

namespace dlx {
namespace {

namespace fs = std::filesystem;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A copy of the shipped model whose tensor `name` has `value` at flat index `at`.
void copy_model_with(const std::string& dir, const std::string& name, float value, int64_t at) {
  const std::string src = test::source_path("models/kjv-dream-tiny");
  for (const auto& e : fs::directory_iterator(src))
    if (e.path().filename() != "model.safetensors") fs::copy_file(e.path(), fs::path(dir) / e.path().filename());
  SafetensorsFile f(src + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [n, info] : f.tensors()) {
    const Tensor view = f.get(n);
    Tensor t = Tensor::from_data(view.dtype(), view.shape(), view.data());
    if (n == name) {
      EXPECT_EQ(t.dtype(), DType::BF16);
      t.data<uint16_t>()[at] = f32_to_bf16(value);
    }
    tensors.emplace_back(n, std::move(t));
  }
  write_safetensors(dir + "/model.safetensors", tensors);
}

std::string load_error(const std::string& dir) {
  try {
    Model::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

TEST(NanWeights, NonFiniteWeightIsRefusedAtLoadNamingTheTensor) {
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  for (float bad : {kNaN, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    test::TempDir tmp;
    copy_model_with(tmp.str(), q, bad, 12345);
    const std::string err = load_error(tmp.str());
    EXPECT_NE(err.find("model.safetensors: tensor '" + q + "' has a non-finite value"), std::string::npos) << err;
    EXPECT_NE(err.find("at flat index 12345"), std::string::npos) << err;
  }
  {  // the CLI: one error line, exit 1, no text
    test::TempDir tmp;
    copy_model_with(tmp.str(), "lm_head.weight", kNaN, 0);
    const test::CmdResult r =
        test::run_cli("-q generate --model " + tmp.str() + " --prompt 'In the beginning' --max-new-tokens 8");
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("'lm_head.weight' has a non-finite value"), std::string::npos) << r.output;
  }
  {  // a large finite value is not an error
    test::TempDir tmp;
    copy_model_with(tmp.str(), q, 3.0e38f, 7);
    EXPECT_EQ(load_error(tmp.str()), "(loaded)");
  }
}

// Attention with fresh random q/k/v: a NaN in one query row makes that row's output NaN (every head dimension)
// and leaves the other rows as they were.
TEST(NanWeights, CpuAttentionPropagatesNaN) {
  std::mt19937_64 rng(std::random_device{}());
  const int64_t B = 1, L = 5, H = 2, D = 8;
  Tensor q = test::random_tensor(DType::F32, {B, L, H, D}, rng);
  const Tensor k = test::random_tensor(DType::F32, {B, L, H, D}, rng);
  const Tensor v = test::random_tensor(DType::F32, {B, L, H, D}, rng);
  Tensor clean = Tensor::zeros(DType::F32, {B, L, H, D}), out = Tensor::zeros(DType::F32, {B, L, H, D});
  cpu::attention(q, k, v, nullptr, clean);
  const int64_t row = std::uniform_int_distribution<int64_t>(0, L - 1)(rng), head = 1;
  q.data<float>()[(row * H + head) * D + 3] = kNaN;
  cpu::attention(q, k, v, nullptr, out);
  for (int64_t i = 0; i < L; ++i)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d = 0; d < D; ++d) {
        const int64_t at = (i * H + h) * D + d;
        if (i == row && h == head)
          EXPECT_TRUE(std::isnan(out.data<float>()[at])) << i << " " << h << " " << d;
        else
          EXPECT_EQ(out.data<float>()[at], clean.data<float>()[at]) << i << " " << h << " " << d;
      }
}

TEST(NanWeights, SamplersRefuseNaNLogits) {
  std::mt19937_64 rng(std::random_device{}());
  std::normal_distribution<float> nd;
  for (float temperature : {0.0f, 0.7f}) {
    std::vector<float> logits(64);
    for (float& x : logits) x = nd(rng);
    logits[size_t(std::uniform_int_distribution<int>(0, 63)(rng))] = kNaN;
    try {
      sample_token(logits.data(), 64, TokenSampling{temperature, 1, 0}, Confidence::Prob, 0.5);
      ADD_FAILURE() << "a NaN logit was sampled at temperature " << temperature;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not finite"), std::string::npos) << e.what();
    }
  }
  std::vector<float> fine = {0.5f, 2.0f, -1.0f, -std::numeric_limits<float>::infinity()};
  EXPECT_EQ(sample_token(fine.data(), 4, TokenSampling{}, Confidence::Prob, 0.5).token, 1);
}

}  // namespace
}  // namespace dlx
