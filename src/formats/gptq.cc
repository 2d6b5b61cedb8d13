// GPTQ in one file: the layout rules declared in formats/gptq.h (packing and reading the checkpoint tensors), and
// its rows of the linear-kinds table: validation of the checkpoint tensors and conversion to the canonical
// PackedWeight, with act-order rows sorted by group so that groups are contiguous.
#include "formats/gptq.h"

#include <fmt/format.h>

#include <algorithm>

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
  // Word (j, n) holds inputs j*p .. j*p + p - 1 of output n, which lie side by side in row n of the codes. Blocks
  // of 16 outputs, in parallel: each walks its 16 code rows once, in order, and writes 16 neighbouring words (one
  // cache line) per j; a loop along k would read the codes with a stride of K bytes.
  constexpr int64_t kRows = 16;
  const int64_t words = K / p;
  parallel_for((N + kRows - 1) / kRows, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t n0 = b0 * kRows; n0 < std::min(N, b1 * kRows); n0 += kRows) {
      const int64_t n1 = std::min(N, n0 + kRows);
      for (int64_t j = 0; j < words; ++j)
        for (int64_t n = n0; n < n1; ++n) {
          const uint8_t* src = c.q.data() + n * K + j * p;
          uint32_t w = 0;
          for (int i = 0; i < p; ++i) w |= uint32_t(src[i]) << (bits * i);
          qw[j * N + n] = w;
        }
    }
  });
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
  const int64_t N = c.n, K = c.k;
  fill_quant_codes(
      c, [&](int64_t k, int64_t n) { return gptq::code(t.qweight.data(), N, bits, k, n); },
      [&](int64_t g, int64_t n) { return gptq::zero(t.qzeros.data(), N, bits, g, n, v1); },
      [&](size_t i) { return load_as_f32(t.scales.data(), t.scales.dtype(), i); });
  if (t.g_idx.defined() && t.g_idx.numel() == K) {
    c.g_idx.assign(t.g_idx.data<int32_t>(), t.g_idx.data<int32_t>() + K);
    bool sequential = true;
    for (int64_t k = 0; k < K && sequential; ++k) sequential = c.g_idx[size_t(k)] == k / group_size;
    if (sequential) c.g_idx.clear();
  }
  return c;
}


namespace {

std::unique_ptr<Linear> load_gptq(const LoadContext& ctx, const LinearSpec& s, int bits) {
  const QuantTensorSet t(ctx.store, s.prefix);
  const QuantConfig* cfg = ctx.quant;
  const int64_t K = s.in_features, N = s.out_features;
  const int p = gptq::pack_factor(bits);
  const std::string origin = cfg ? cfg->source : "the tensor shapes (no quantization config)";

  Tensor qweight = t.require("qweight", "quantized weight");
  t.check_dtype("qweight", qweight, {DType::I32});
  check(K % p == 0, "{}: tensor '{}': in_features {} is not a multiple of {}, which {}-bit GPTQ packs per int32",
        t.file("qweight"), t.name("qweight"), K, p, bits);
  t.check_shape("qweight", qweight, {K / p, N},
                fmt::format("[in_features/{}, out_features] for {}-bit GPTQ, bits from {}", p, bits, origin));

  int64_t gs = 0;
  Tensor scales = t.group_scales(cfg, K, N, "GPTQ needs a scale per group and output column", gs);
  const int64_t G = K / gs;

  Tensor qzeros = t.require("qzeros", "GPTQ stores zero points for every quantized layer, symmetric ones too");
  t.check_dtype("qzeros", qzeros, {DType::I32});
  t.check_shape("qzeros", qzeros, {G, gptq::zero_cols(N, bits)},
                fmt::format("[groups, out_features/{}] for {}-bit GPTQ", p, bits));

  std::vector<int32_t> perm;
  // An empty g_idx ([0]) means none: the later Diffulex export writes one for every layer without act-order.
  if (t.has("g_idx") && t.store().info(t.name("g_idx")).shape != Shape{0}) {
    perm = t.act_order_perm("g_idx", ctx.store.get(t.name("g_idx")), K, gs);
  } else {
    check(!(cfg && cfg->desc_act), "{}: checkpoint has no tensor '{}' although {} sets desc_act (act-order)",
          t.file("qweight"), t.name("g_idx"), cfg ? cfg->source : "");
  }
  Tensor bias = t.bias(s);

  const bool v1 = !cfg || cfg->checkpoint_format != "gptq_v2";
  const void* qw = qweight.data();
  const void* qz = qzeros.data();
  auto scale = [&](int64_t g, int64_t n) { return load_as_f32(scales.data(), scales.dtype(), size_t(g * N + n)); };
  auto zero = [&](int64_t g, int64_t n) { return gptq::zero(qz, N, bits, g, n, v1); };
  PackedWeight w =
      perm.empty()
          ? build_packed_weight_from_words(
                bits, N, K, gs, [&](int64_t j, int64_t n) { return gptq::word(qw, N, j, n); }, scale, zero)
          : build_packed_weight(
                bits, N, K, gs, perm, [&](int64_t k, int64_t n) { return gptq::code(qw, N, bits, k, n); }, scale,
                zero);
  LinearInfo info;
  info.kind = bits == 4 ? "gptq_w4a16" : "gptq_w8a16";
  info.bits = bits;
  info.group_size = gs;
  info.act_order = !perm.empty();
  return make_packed_linear(ctx, s, std::move(w), std::move(bias), std::move(info));
}

LinearKind gptq_kind(int bits) {
  LinearKind k;
  k.name = bits == 4 ? "gptq_w4a16" : "gptq_w8a16";
  k.family = "gptq";
  k.matches = [bits](const LoadContext& ctx, const LinearSpec& s) {
    return quant_layout(ctx, s) == "gptq" && gptq_bits(ctx, s) == bits;
  };
  k.load = [bits](const LoadContext& ctx, const LinearSpec& s) { return load_gptq(ctx, s, bits); };
  return k;
}

}  // namespace

LinearKind gptq_w4a16_kind() { return gptq_kind(4); }
LinearKind gptq_w8a16_kind() { return gptq_kind(8); }

}  // namespace dlx
