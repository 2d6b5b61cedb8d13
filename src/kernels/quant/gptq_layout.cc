#include "kernels/quant/gptq_layout.h"

#include "core/error.h"
#include "kernels/quant/quant_codes_check.h"

namespace dlx {

GptqTensors pack_gptq(const QuantCodes& c, bool v1, DType scale_dtype) {
  check_codes(c, "pack_gptq");
  const int bits = c.bits, p = gptq::pack_factor(bits);
  const int64_t K = c.k, N = c.n, G = c.groups(), zc = gptq::zero_cols(N, bits);
  check(K % p == 0, "pack_gptq: in_features {} is not a multiple of {} ({}-bit values per int32)", K, p, bits);
  GptqTensors t;
  t.qweight = Tensor::zeros(DType::I32, {K / p, N});
  t.qzeros = Tensor::zeros(DType::I32, {G, zc});
  t.scales = Tensor::zeros(scale_dtype, {G, N});
  t.g_idx = Tensor::zeros(DType::I32, {K});
  uint32_t* qw = t.qweight.data<uint32_t>();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) qw[(k / p) * N + n] |= uint32_t(c.q[size_t(n * K + k)]) << (bits * (k % p));
  const uint32_t maxq = (1u << bits) - 1;
  uint32_t* qz = t.qzeros.data<uint32_t>();
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) {
      int64_t z = c.zero[size_t(g * N + n)];
      if (v1) {
        check(z >= 1 && z <= int64_t(maxq) + 1,
              "pack_gptq: zero point {} (group {}, column {}) cannot be stored in the v1 format, which holds 1..{}; "
              "write checkpoint_format gptq_v2",
              z, g, n, maxq + 1);
        z -= 1;
      }
      check(z >= 0 && z <= int64_t(maxq), "pack_gptq: zero point {} (group {}, column {}) does not fit in {} bits", z, g,
            n, bits);
      qz[g * zc + n / p] |= uint32_t(z) << (bits * (n % p));
      store_float(t.scales, g * N + n, c.scale[size_t(g * N + n)]);
    }
  for (int64_t k = 0; k < K; ++k) t.g_idx.data<int32_t>()[k] = int32_t(c.group_of(k));
  return t;
}

QuantCodes unpack_gptq(const GptqTensors& t, int bits, int64_t group_size, bool v1) {
  QuantCodes c;
  c.bits = bits;
  c.n = t.qweight.dim(1);
  c.k = t.qweight.dim(0) * gptq::pack_factor(bits);
  c.group_size = group_size;
  const int64_t N = c.n, K = c.k, G = c.groups();
  c.q.resize(size_t(N * K));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) c.q[size_t(n * K + k)] = uint8_t(gptq::code(t.qweight.data(), N, bits, k, n));
  c.zero.resize(size_t(G * N));
  c.scale.resize(size_t(G * N));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) {
      c.zero[size_t(g * N + n)] = uint8_t(gptq::zero(t.qzeros.data(), N, bits, g, n, v1));
      c.scale[size_t(g * N + n)] = load_as_f32(t.scales.data(), t.scales.dtype(), size_t(g * N + n));
    }
  if (t.g_idx.defined() && t.g_idx.numel() == K) {
    c.g_idx.assign(t.g_idx.data<int32_t>(), t.g_idx.data<int32_t>() + K);
    bool sequential = true;
    for (int64_t k = 0; k < K && sequential; ++k) sequential = c.g_idx[size_t(k)] == k / group_size;
    if (sequential) c.g_idx.clear();
  }
  return c;
}

}  // namespace dlx
