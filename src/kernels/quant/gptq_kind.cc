// GPTQ rows of the linear-kinds table: validation of the checkpoint tensors (gptq_layout.h) and conversion to
// the canonical PackedWeight, with act-order rows sorted by group so that groups are contiguous.
#include <fmt/format.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/quant/gptq_layout.h"
#include "kernels/quant/packed_convert.h"
#include "kernels/quant/packed_linear.h"
#include "kernels/quant/quant_checks.h"
#include "kernels/quant/quant_config.h"
#include "kernels/quant/quant_kinds.h"

namespace dlx {

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
