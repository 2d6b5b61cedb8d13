// Helpers for the quantized-linear tests: random integer codes, a plain double-precision reference matmul,
// and small checkpoints written to a temp dir.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "formats/quant_codes.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace dlx::test {

// Random codes for a [n, k] layer. zero: 1 .. 2^bits - 1 (v1-safe) or the symmetric 2^(bits-1); scales are
// rounded to fp16 as checkpoints store them. act_order: a random row order, g_idx[perm[j]] = j / group_size.
inline QuantCodes random_codes(int bits, int64_t n, int64_t k, int64_t group_size, bool sym, bool act_order,
                               std::mt19937_64& rng) {
  QuantCodes c;
  c.bits = bits;
  c.n = n;
  c.k = k;
  c.group_size = group_size;
  const uint32_t maxq = (1u << bits) - 1;
  std::uniform_int_distribution<uint32_t> code(0, maxq), zero(1, maxq - 1);
  std::uniform_real_distribution<float> scale(0.002f, 0.03f);
  c.q.resize(size_t(n * k));
  for (auto& v : c.q) v = uint8_t(code(rng));
  c.zero.resize(size_t(c.groups() * n));
  c.scale.resize(c.zero.size());
  for (size_t i = 0; i < c.zero.size(); ++i) {
    c.zero[i] = uint8_t(sym ? 1u << (bits - 1) : zero(rng));
    c.scale[i] = f16_to_f32(f32_to_f16(scale(rng)));
  }
  if (act_order) {
    std::vector<int32_t> perm(static_cast<size_t>(k));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    c.g_idx.resize(size_t(k));
    for (int64_t j = 0; j < k; ++j) c.g_idx[size_t(perm[size_t(j)])] = int32_t(j / group_size);
  }
  return c;
}

// The dense weight the codes stand for, F32 [n, k].
inline Tensor codes_weight(const QuantCodes& c) {
  Tensor w = Tensor::zeros(DType::F32, {c.n, c.k});
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t k = 0; k < c.k; ++k) w.data<float>()[n * c.k + k] = c.weight(n, k);
  return w;
}

// y = x w^T (+ bias) in double precision; x F32 [M, K], w F32 [N, K].
inline Tensor reference_matmul(const Tensor& x, const Tensor& w, const Tensor* bias = nullptr) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  Tensor y = Tensor::zeros(DType::F32, {M, N});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? load_as_f32(bias->data(), bias->dtype(), size_t(n)) : 0.0;
      for (int64_t k = 0; k < K; ++k) s += double(x.data<float>()[m * K + k]) * double(w.data<float>()[n * K + k]);
      y.data<float>()[m * N + n] = float(s);
    }
  return y;
}

// Writes `tensors` as <dir>/model.safetensors and opens it.
inline std::shared_ptr<TensorStore> write_checkpoint(const TempDir& dir,
                                                     const std::vector<std::pair<std::string, Tensor>>& tensors) {
  write_safetensors(dir / "model.safetensors", tensors);
  return TensorStore::open_file(dir / "model.safetensors");
}

}  // namespace dlx::test
