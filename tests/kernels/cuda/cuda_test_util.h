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
#include "formats/quant_codes.h"
#include "kernels/packed_weight.h"
#include "model/random_init.h"
#include "test_util.h"

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

// A random PackedWeight on the host (model/random_init.h's generator, seeded from `rng`): scales uniform in
// [scale_lo, scale_hi), zero points integer: 2^(bits-1) everywhere when `sym`, else uniform over the code range;
// act_order adds a random permutation. gs <= 0: one group.
inline PackedWeight random_packed(std::mt19937_64& rng, int bits, int64_t N, int64_t K, int64_t gs, bool act_order,
                                  bool sym = false, float scale_lo = 0.005f, float scale_hi = 0.02f) {
  RandomPackedOptions o;
  o.bits = bits;
  o.group_size = gs > 0 ? gs : kOneGroupPerRow;
  o.sym = sym;
  o.act_order = act_order;
  o.scale_lo = scale_lo, o.scale_hi = scale_hi;
  return random_packed_weight(N, K, o, rng());
}

}  // namespace dlx::test
