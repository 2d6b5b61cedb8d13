// The Diffulex int8 layout in one file: its rules (formats/diffulex_int8.h) and its rows of the linear-kinds
// table. Its scales run along the INPUT dim and its groups along the OUTPUT dim, the transpose of GPTQ; the canonical
// PackedWeight holds it exactly as 8-bit codes c = (q + 8) + (zq + 8) in 0 .. 30 with zero point 16, so that
// W = s * (c - 16) = s * (q + zq), and K-groups as long as the runs of equal scales along K: the whole row when
// the checkpoint has one scale per group ([G] or [G, 1]), a single column when every column has its own scale.
#include "formats/diffulex_int8.h"

#include <filesystem>
#include <fmt/format.h>
#include <numeric>

#include "core/error.h"
#include "formats/packed_convert.h"
#include "formats/packed_linear.h"
#include "formats/quant_checks.h"
#include "formats/quant_kinds.h"
#include "io/safetensors.h"

namespace dlx {

namespace {

// Packs a [rows, K] matrix of signed 4-bit values into [rows, ceil(K/2)] bytes (value + 8, even k low).
Tensor pack_nibbles(const std::vector<int8_t>& v, int64_t rows, int64_t K) {
  Tensor t = Tensor::zeros(DType::I8, {rows, dlx_int8::row_bytes(K)});
  uint8_t* b = t.data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < dlx_int8::row_bytes(K) * 2; ++k) {
      int s = k < K ? v[size_t(r * K + k)] : 0;  // padding nibble stands for 0
      check(s >= -8 && s <= 7, "pack_diffulex_int8: value {} outside -8..7", s);
      b[r * dlx_int8::row_bytes(K) + k / 2] |= uint8_t(uint32_t(s + 8) << (4 * (k & 1)));
    }
  return t;
}

}  // namespace

DiffulexInt8Tensors pack_diffulex_int8(const DiffulexInt8Codes& c) {
  check(c.n > 0 && c.k > 0 && c.group_size > 0, "pack_diffulex_int8: empty layer or group size");
  const int64_t G = c.groups();
  check(c.q.size() == size_t(c.n * c.k) && c.zero.size() == size_t(G * c.k), "pack_diffulex_int8: sizes mismatch");
  check(c.scale.size() == size_t(G * c.k) || c.scale.size() == size_t(G), "pack_diffulex_int8: scale size {}",
        c.scale.size());
  DiffulexInt8Tensors t;
  t.qweight = pack_nibbles(c.q, c.n, c.k);
  t.qzeros = pack_nibbles(c.zero, G, c.k);
  Shape ss = c.scale.size() == size_t(G * c.k) ? Shape{G, c.k} : Shape{G};
  t.scales = Tensor::from_data(DType::F32, ss, c.scale.data());
  if (!c.g_idx.empty()) t.g_idx = Tensor::from_data(DType::I32, {c.n}, c.g_idx.data());
  return t;
}


namespace {

int64_t scalar_i32(const QuantTensorSet& t, const char* suffix) {
  Tensor v = t.store().get(t.name(suffix));
  t.check_dtype(suffix, v, {DType::I32});
  check(v.numel() == 1, "{}: tensor '{}' has shape {}, expected a single value", t.file(suffix), t.name(suffix),
        shape_str(v.shape()));
  return v.data<int32_t>()[0];
}

std::unique_ptr<Linear> load_int8(const LoadContext& ctx, const LinearSpec& s, const char* kind) {
  const QuantTensorSet t(ctx.store, s.prefix);
  const int64_t K = s.in_features, N = s.out_features, KB = dlx_int8::row_bytes(K);
  Tensor qweight = t.require("qweight", "quantized weight");
  t.check_dtype("qweight", qweight, {DType::I8});
  t.check_shape("qweight", qweight, {N, KB},
                "Diffulex int8 layout: [out_features, ceil(in_features/2)], two 4-bit values per byte");
  check(K % 4 == 0,
        "{}: tensor '{}': in_features {} is not a multiple of 4, which diffulex needs to repack the Diffulex int8 "
        "layout",
        t.file("qweight"), t.name("qweight"), K);
  Tensor qzeros = t.require("qzeros", "the Diffulex int8 layout stores a zero per output group and input column");
  t.check_dtype("qzeros", qzeros, {DType::I8});
  check(qzeros.rank() == 2 && qzeros.dim(0) > 0 && qzeros.dim(1) == KB,
        "{}: tensor '{}' has shape {}, expected [groups, {}] (ceil(in_features/2))", t.file("qzeros"), t.name("qzeros"),
        shape_str(qzeros.shape()), KB);
  const int64_t G = qzeros.dim(0);
  if (t.has("bits")) {
    int64_t b = scalar_i32(t, "bits");
    check(b == 4, "{}: tensor '{}' says {} bits; the Diffulex int8 layout holds 4-bit values", t.file("bits"),
          t.name("bits"), b);
  }
  // Output-group size: the layer's group_size tensor, else the one G implies.
  int64_t gs = t.has("group_size") ? scalar_i32(t, "group_size") : (N + G - 1) / G;
  check(gs > 0 && (N + gs - 1) / gs == G,
        "{}: tensor '{}' has {} groups, but out_features {} in groups of {} makes {}", t.file("qzeros"),
        t.name("qzeros"), G, N, gs, gs > 0 ? (N + gs - 1) / gs : 0);

  Tensor scales = t.require("scales", "the Diffulex int8 layout stores scales per output group");
  t.check_dtype("scales", scales, {DType::F32, DType::F16, DType::BF16});
  const bool per_column = scales.shape() == Shape{G, K};
  check(per_column || scales.shape() == Shape{G} || scales.shape() == Shape{G, 1},
        "{}: tensor '{}' has shape {}, expected [{}, {}], [{}] or [{}, 1] (groups, in_features)", t.file("scales"),
        t.name("scales"), shape_str(scales.shape()), G, K, G, G);
  t.check_finite("scales", scales);

  std::vector<int32_t> group(static_cast<size_t>(N));
  if (t.has("g_idx")) {
    Tensor gi = ctx.store.get(t.name("g_idx"));
    t.check_dtype("g_idx", gi, {DType::I32});
    t.check_shape("g_idx", gi, {N}, "Diffulex int8 layout: the output group of each output row");
    for (int64_t n = 0; n < N; ++n) {
      int32_t g = gi.data<int32_t>()[n];
      check(g >= 0 && g < G, "{}: tensor '{}' has value {} at index {}, outside the {} groups [0, {})", t.file("g_idx"),
            t.name("g_idx"), g, n, G, G);
      group[size_t(n)] = g;
    }
  } else {
    for (int64_t n = 0; n < N; ++n) group[size_t(n)] = int32_t(n / gs);
  }
  Tensor bias = t.bias(s);

  // Runs of equal scales along K: every position where a scale changes must start a K-group.
  auto scale_at = [&](int64_t g, int64_t k) {
    return load_as_f32(scales.data(), scales.dtype(), size_t(per_column ? g * K + k : g));
  };
  int64_t kgroup = K;
  if (per_column)
    for (int64_t g = 0; g < G && kgroup > 1; ++g)
      for (int64_t k = 1; k < K; ++k)
        if (scale_at(g, k) != scale_at(g, k - 1)) kgroup = std::gcd(kgroup, k);

  const void* qw = qweight.data();
  const void* qz = qzeros.data();
  PackedWeight w = build_packed_weight(
      8, N, K, kgroup, {},
      [&](int64_t k, int64_t n) {
        return dlx_int8::nibble(qw, K, n, k) + dlx_int8::nibble(qz, K, group[size_t(n)], k);
      },
      [&](int64_t g, int64_t n) { return scale_at(group[size_t(n)], g * kgroup); },
      [](int64_t, int64_t) { return 16.0f; });
  LinearInfo info;
  info.kind = kind;
  info.bits = 4;
  info.group_size = gs;
  return make_packed_linear(ctx, s, std::move(w), std::move(bias), std::move(info));
}

// Which of Diffulex's scripts wrote an int8 layer: the file name says it when the layer comes from
// model_quantized_{gptq,awq}.safetensors (so a GPTQ file without g_idx is still GPTQ); otherwise g_idx, which
// its GPTQ script always wrote and its AWQ script never did.
std::string int8_family(const LoadContext& ctx, const LinearSpec& s) {
  const std::string file = std::filesystem::path(ctx.store.file_of(s.prefix + ".qweight")).filename().string();
  if (file == "model_quantized_gptq.safetensors") return "gptq";
  if (file == "model_quantized_awq.safetensors") return "awq";
  return ctx.store.has(s.prefix + ".g_idx") ? "gptq" : "awq";
}

LinearKind int8_kind(const char* name, const char* family) {
  LinearKind k;
  k.name = name;
  k.family = family;
  k.matches = [family = std::string(family)](const LoadContext& ctx, const LinearSpec& s) {
    const std::string qn = s.prefix + ".qweight";
    return ctx.store.has(qn) && ctx.store.info(qn).dtype == DType::I8 && int8_family(ctx, s) == family &&
           !(quant_skips_module(ctx.quant, s.prefix) && ctx.store.has(s.prefix + ".weight"));
  };
  k.load = [name](const LoadContext& ctx, const LinearSpec& s) { return load_int8(ctx, s, name); };
  return k;
}

}  // namespace

LinearKind diffulex_int8_gptq_kind() { return int8_kind("diffulex_int8_gptq", "gptq"); }
LinearKind diffulex_int8_awq_kind() { return int8_kind("diffulex_int8_awq", "awq"); }

}  // namespace dlx
