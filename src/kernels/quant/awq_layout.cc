#include "kernels/quant/awq_layout.h"

#include "core/error.h"
#include "kernels/quant/quant_codes_check.h"

namespace dlx {

namespace {

// Packs values v(row, n) of a [rows, N] matrix of nibbles into [rows, N/8] words with `order`.
template <class Value>
void pack_rows(Tensor& out, int64_t rows, int64_t N, AwqOrder order, Value v) {
  uint32_t* w = out.data<uint32_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = 0; n < N; ++n) w[r * (N / 8) + n / 8] |= uint32_t(v(r, n)) << (4 * awq::nibble_of(n, order));
}

}  // namespace

AwqTensors pack_awq(const QuantCodes& c, DType scale_dtype, AwqOrder order) {
  check_codes(c, "pack_awq");
  check(c.bits == 4, "pack_awq: AWQ gemm holds 4-bit codes, got {} bits", c.bits);
  check(c.n % 8 == 0, "pack_awq: out_features {} is not a multiple of 8 (AWQ packs 8 output columns per int32)", c.n);
  for (int64_t k = 0; k < int64_t(c.g_idx.size()); ++k)
    check(c.g_idx[size_t(k)] == k / c.group_size, "pack_awq: AWQ has no g_idx, groups must be sequential (k = {})", k);
  const int64_t K = c.k, N = c.n, G = c.groups();
  AwqTensors t;
  t.qweight = Tensor::zeros(DType::I32, {K, N / 8});
  t.qzeros = Tensor::zeros(DType::I32, {G, N / 8});
  t.scales = Tensor::zeros(scale_dtype, {G, N});
  pack_rows(t.qweight, K, N, order, [&](int64_t k, int64_t n) { return c.q[size_t(n * K + k)]; });
  for (uint8_t z : c.zero) check(z <= 15, "pack_awq: zero point {} does not fit in 4 bits", z);
  pack_rows(t.qzeros, G, N, order, [&](int64_t g, int64_t n) { return c.zero[size_t(g * N + n)]; });
  for (int64_t i = 0; i < G * N; ++i) store_float(t.scales, i, c.scale[size_t(i)]);
  return t;
}

QuantCodes unpack_awq(const AwqTensors& t, int64_t group_size, AwqOrder order) {
  QuantCodes c;
  c.bits = 4;
  c.k = t.qweight.dim(0);
  c.n = t.qweight.dim(1) * 8;
  c.group_size = group_size;
  const int64_t N = c.n, K = c.k, G = c.groups();
  c.q.resize(size_t(N * K));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) c.q[size_t(n * K + k)] = uint8_t(awq::code(t.qweight.data(), N, k, n, order));
  c.zero.resize(size_t(G * N));
  c.scale.resize(size_t(G * N));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) {
      c.zero[size_t(g * N + n)] = uint8_t(awq::zero(t.qzeros.data(), N, g, n, order));
      c.scale[size_t(g * N + n)] = load_as_f32(t.scales.data(), t.scales.dtype(), size_t(g * N + n));
    }
  return c;
}

}  // namespace dlx
