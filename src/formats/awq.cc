// AWQ in one file: the AutoAWQ gemm layout rules declared in formats/awq.h, and its row of the linear-kinds
// table: validation of the checkpoint tensors and conversion to the canonical PackedWeight (un-interleaving the
// nibble order on the way).
#include "formats/awq.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/packed_convert.h"
#include "formats/packed_linear.h"
#include "formats/quant_checks.h"
#include "formats/quant_codes_check.h"
#include "formats/quant_config.h"
#include "formats/quant_kinds.h"
#include "io/safetensors.h"

namespace dlx {

namespace {

// Packs values v(row, n) of a [rows, N] matrix of nibbles into [rows, N/8] words with `order`.
template <class Value>
void pack_rows(Tensor& out, int64_t rows, int64_t N, AwqOrder order, Value v) {
  uint32_t* w = out.data<uint32_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = 0; n < N; ++n) w[r * (N / 8) + n / 8] |= uint32_t(v(r, n)) << (4 * awq::nibble_of(n, order));
}

// qweight [K, N/8] from the row-major codes [N, K]: word (k, w) holds input k of outputs 8w .. 8w + 7, i.e. one
// byte from each of 8 code rows. Tiles of 64 inputs x 128 outputs, in parallel over output blocks: the codes are
// read as 64-byte pieces of rows and the words written as runs of 16 (one cache line), not one code per K bytes.
void pack_codes(Tensor& out, const QuantCodes& c, AwqOrder order) {
  const int64_t K = c.k, N = c.n, words = N / 8;
  constexpr int64_t kTileK = 64, kTileN = 128;
  uint32_t* qw = out.data<uint32_t>();
  int shift[8];
  for (int j = 0; j < 8; ++j) shift[j] = 4 * awq::nibble_of(j, order);
  parallel_for((N + kTileN - 1) / kTileN, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint8_t> tile(size_t(kTileK * kTileN));  // [input, output] of the current tile
    for (int64_t nb = b0; nb < b1; ++nb) {
      const int64_t n0 = nb * kTileN, nn = std::min(kTileN, N - n0);  // a multiple of 8 (N % 8 == 0)
      for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
        const int64_t kk = std::min(kTileK, K - k0);
        for (int64_t r = 0; r < nn; ++r) {
          const uint8_t* row = c.q.data() + (n0 + r) * K + k0;
          for (int64_t i = 0; i < kk; ++i) tile[size_t(i * kTileN + r)] = row[i];
        }
        for (int64_t i = 0; i < kk; ++i) {
          const uint8_t* col = tile.data() + i * kTileN;
          uint32_t* dst = qw + (k0 + i) * words + n0 / 8;
          for (int64_t w = 0; w < nn / 8; ++w) {
            uint32_t word = 0;
            for (int j = 0; j < 8; ++j) word |= uint32_t(col[w * 8 + j]) << shift[j];
            dst[w] = word;
          }
        }
      }
    }
  });
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
  pack_codes(t.qweight, c, order);
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
  const int64_t N = c.n;
  fill_quant_codes(
      c, [&](int64_t k, int64_t n) { return awq::code(t.qweight.data(), N, k, n, order); },
      [&](int64_t g, int64_t n) { return awq::zero(t.qzeros.data(), N, g, n, order); },
      [&](size_t i) { return load_as_f32(t.scales.data(), t.scales.dtype(), i); });
  return c;
}


namespace {

std::unique_ptr<Linear> load_awq(const LoadContext& ctx, const LinearSpec& s) {
  const QuantTensorSet t(ctx.store, s.prefix);
  const QuantConfig* cfg = ctx.quant;
  const int64_t K = s.in_features, N = s.out_features;
  if (cfg) check(cfg->bits == 4, "{}: AWQ with {} bits is not supported (4)", cfg->source, cfg->bits);

  Tensor qweight = t.require("qweight", "quantized weight");
  t.check_dtype("qweight", qweight, {DType::I32});
  check(N % 8 == 0, "{}: tensor '{}': out_features {} of layer '{}' is not a multiple of 8, which AWQ packs per int32",
        t.file("qweight"), t.name("qweight"), N, s.prefix);
  t.check_shape("qweight", qweight, {K, N / 8}, "[in_features, out_features/8] for AWQ");

  int64_t gs = 0;
  Tensor scales = t.group_scales(cfg, K, N, "AWQ needs a scale per group and output column", gs);
  const int64_t G = K / gs;
  Tensor qzeros = t.require("qzeros", "AWQ gemm stores zero points (zero_point: true)");
  t.check_dtype("qzeros", qzeros, {DType::I32});
  t.check_shape("qzeros", qzeros, {G, N / 8}, "[groups, out_features/8] for AWQ");
  Tensor bias = t.bias(s);

  const void* qw = qweight.data();
  const void* qz = qzeros.data();
  const AwqOrder order = ctx.awq_plain_order ? AwqOrder::Plain : AwqOrder::AutoAwq;
  PackedWeight w = build_packed_weight(
      4, N, K, gs, {}, [&](int64_t k, int64_t n) { return awq::code(qw, N, k, n, order); },
      [&](int64_t g, int64_t n) { return load_as_f32(scales.data(), scales.dtype(), size_t(g * N + n)); },
      [&](int64_t g, int64_t n) { return awq::zero(qz, N, g, n, order); });
  LinearInfo info;
  info.kind = "awq_w4a16";  // the plain nibble order is a reading of the same kind, not another kind
  info.bits = 4;
  info.group_size = gs;
  return make_packed_linear(ctx, s, std::move(w), std::move(bias), std::move(info));
}

}  // namespace

LinearKind awq_w4a16_kind() {
  LinearKind k;
  k.name = "awq_w4a16";
  k.family = "awq";
  k.matches = [](const LoadContext& ctx, const LinearSpec& s) { return quant_layout(ctx, s) == "awq"; };
  k.load = load_awq;
  return k;
}

}  // namespace dlx
