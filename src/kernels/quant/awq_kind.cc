// The AWQ row of the linear-kinds table: validation of the AutoAWQ gemm tensors (awq_layout.h) and conversion
// to the canonical PackedWeight (un-interleaving the nibble order on the way).
#include <fmt/format.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/quant/awq_layout.h"
#include "kernels/quant/packed_convert.h"
#include "kernels/quant/packed_linear.h"
#include "kernels/quant/quant_checks.h"
#include "kernels/quant/quant_config.h"
#include "kernels/quant/quant_kinds.h"

namespace dlx {

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
