// Shared pieces of the CUDA tests: a fixture that skips without a usable device and owns a CUDA backend, the CPU
// backend to compare with, and a generator seeded afresh for every test (trace() names the seed), plus random
// packed low-bit weights.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/packed_weight.h"
#include "../test_util.h"

namespace dlx::test {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
    gpu_ = make_backend("cuda");
    seed_ = std::random_device{}();
    rng_.seed(seed_);
  }
  std::string trace() const { return "random seed " + std::to_string(seed_); }
  // A host F32 tensor of normal values rounded to bf16 (what the GPU holds, so both backends see the same inputs).
  Tensor rand_bf16_f32(Shape s, float std = 1.0f) {
    Tensor t = random_tensor(DType::F32, std::move(s), rng_, std);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = bf16_to_f32(f32_to_bf16(t.data<float>()[i]));
    return t;
  }

  CpuBackend cpu_;
  std::unique_ptr<Backend> gpu_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

// A random PackedWeight on the host: random codes, scales uniform in [scale_lo, scale_hi), zero points integer:
// 2^(bits-1) everywhere when `sym`, else uniform over the code range; act_order adds a random permutation.
inline PackedWeight random_packed(std::mt19937_64& rng, int bits, int64_t N, int64_t K, int64_t gs, bool act_order,
                                  bool sym = false, float scale_lo = 0.005f, float scale_hi = 0.02f) {
  PackedWeight w;
  w.bits = bits, w.n = N, w.k = K, w.group_size = gs > 0 ? gs : K;
  w.qweight = Tensor::zeros(DType::I32, {N, w.words_per_row()});
  for (int64_t i = 0; i < w.qweight.numel(); ++i) w.qweight.data<int32_t>()[i] = int32_t(uint32_t(rng()));
  const int64_t G = w.groups();
  w.scales = Tensor::zeros(DType::F32, {N, G});
  w.zeros = Tensor::zeros(DType::F32, {N, G});
  std::uniform_real_distribution<float> sd(scale_lo, scale_hi);
  for (int64_t i = 0; i < N * G; ++i) {
    const float s = sd(rng);
    w.scales.data<float>()[i] = s;
    w.zeros.data<float>()[i] = s * (sym ? float(1u << (bits - 1)) : float(rng() % (1u << bits)));
  }
  if (act_order) {
    w.perm = Tensor::zeros(DType::I32, {K});
    std::vector<int32_t> p(static_cast<size_t>(K));
    std::iota(p.begin(), p.end(), 0);
    std::shuffle(p.begin(), p.end(), rng);
    std::copy(p.begin(), p.end(), w.perm.data<int32_t>());
  }
  return w;
}

}  // namespace dlx::test
