#include "formats/quant_checks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "formats/quant_codes.h"
#include "formats/quant_config.h"
#include "io/safetensors.h"

namespace dlx {

bool QuantTensorSet::has(const char* suffix) const { return store_.has(name(suffix)); }

const std::string& QuantTensorSet::file(const char* suffix) const {
  return store_.file_of(has(suffix) ? name(suffix) : name("qweight"));
}

Tensor QuantTensorSet::require(const char* suffix, const std::string& why) const {
  check(has(suffix), "{}: checkpoint has no tensor '{}' ({})", file(suffix), name(suffix), why);
  return store_.get(name(suffix));
}

void QuantTensorSet::check_dtype(const char* suffix, const Tensor& t, std::initializer_list<DType> allowed) const {
  std::string want;
  for (DType d : allowed) {
    if (t.dtype() == d) return;
    want += (want.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  fail("{}: tensor '{}' has dtype {}, expected {}", file(suffix), name(suffix), dtype_name(t.dtype()), want);
}

void QuantTensorSet::check_shape(const char* suffix, const Tensor& t, const Shape& want, const std::string& why) const {
  check(t.shape() == want, "{}: tensor '{}' has shape {}, expected {} ({})", file(suffix), name(suffix),
        shape_str(t.shape()), shape_str(want), why);
}

void QuantTensorSet::check_finite(const char* suffix, const Tensor& t) const {
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = load_as_f32(t.data(), t.dtype(), size_t(i));
    check(std::isfinite(v), "{}: tensor '{}' has a non-finite value ({}) at flat index {}", file(suffix), name(suffix), v,
          i);
  }
}

Tensor QuantTensorSet::group_scales(const QuantConfig* cfg, int64_t K, int64_t N, const std::string& why,
                                    int64_t& gs) const {
  Tensor scales = require("scales", why);
  check_dtype("scales", scales, {DType::F16, DType::BF16, DType::F32});
  const std::string origin = cfg ? cfg->source : "the tensor shapes (no quantization config)";
  if (cfg) {
    gs = resolve_group_size(cfg->group_size, K);
  } else {
    check(scales.rank() == 2 && scales.dim(0) > 0 && K % scales.dim(0) == 0,
          "{}: tensor '{}' has shape {}, expected [groups, {}] with groups dividing in_features {}", file("scales"),
          name("scales"), shape_str(scales.shape()), N, K);
    gs = K / scales.dim(0);
  }
  check(gs > 0 && K % gs == 0, "{}: tensor '{}': group_size {} (from {}) does not divide in_features {}",
        file("qweight"), name("qweight"), gs, origin, K);
  check_shape("scales", scales, {K / gs, N},
              fmt::format("[in_features/group_size, out_features], group_size {}", gs));
  check_finite("scales", scales);
  return scales;
}

std::vector<int32_t> QuantTensorSet::act_order_perm(const char* suffix, const Tensor& g_idx, int64_t k,
                                                    int64_t group_size) const {
  check_dtype(suffix, g_idx, {DType::I32});
  check_shape(suffix, g_idx, {k}, "one group index per input feature");
  const int64_t G = k / group_size;
  const int32_t* gi = g_idx.data<int32_t>();
  std::vector<int64_t> count(size_t(G), 0);
  bool sequential = true;
  for (int64_t i = 0; i < k; ++i) {
    check(gi[i] >= 0 && gi[i] < G, "{}: tensor '{}' has value {} at index {}, outside the {} groups [0, {})",
          file(suffix), name(suffix), gi[i], i, G, G);
    ++count[size_t(gi[i])];
    sequential = sequential && gi[i] == i / group_size;
  }
  for (int64_t g = 0; g < G; ++g)
    check(count[size_t(g)] == group_size, "{}: tensor '{}' puts {} input rows in group {}, expected group_size {}",
          file(suffix), name(suffix), count[size_t(g)], g, group_size);
  if (sequential) return {};
  std::vector<int32_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return gi[a] < gi[b]; });
  return perm;
}

Tensor QuantTensorSet::bias(const LinearSpec& spec) const {
  if (!has("bias")) {
    check(!spec.bias, "{}: checkpoint has no tensor '{}' (the architecture has a bias there)", file("qweight"),
          name("bias"));
    return {};
  }
  Tensor b = store_.get(name("bias"));
  check_dtype("bias", b, {DType::F16, DType::BF16, DType::F32});
  check_shape("bias", b, {spec.out_features}, "one per output feature");
  return b;
}

bool quant_skips_module(const QuantConfig* q, const std::string& prefix) {
  if (!q) return false;
  const std::string dotted = "." + prefix + ".";
  for (const std::string& m : q->modules_to_not_convert)
    if (!m.empty() && dotted.find("." + m + ".") != std::string::npos) return true;
  return false;
}

std::string quant_layout(const LoadContext& ctx, const LinearSpec& s) {
  const std::string qn = s.prefix + ".qweight";
  if (!ctx.store.has(qn)) return "";
  // A layer the config excludes loads dense when it has a dense weight; a packed-only layer is still packed.
  if (quant_skips_module(ctx.quant, s.prefix) && ctx.store.has(s.prefix + ".weight")) return "";
  const TensorInfo& ti = ctx.store.info(qn);
  if (ti.dtype == DType::I8) return "";
  if (ctx.quant) return ctx.quant->method;
  const int64_t K = s.in_features, N = s.out_features;
  if (ti.shape.size() == 2 && ti.shape[0] == K && ti.shape[1] * 8 == N) return "awq";
  return "gptq";
}

std::vector<std::string> unmatched_quant_tensors(const TensorStore& store, const std::set<std::string>& loaded) {
  std::vector<std::string> out;
  for (const std::string& name : store.names()) {
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos) continue;
    const std::string suffix = name.substr(dot + 1);
    if (suffix != "qweight" && suffix != "qzeros" && suffix != "scales" && suffix != "g_idx") continue;
    if (!loaded.count(name.substr(0, dot))) out.push_back(name);
  }
  return out;
}

int gptq_bits(const LoadContext& ctx, const LinearSpec& s) {
  if (ctx.quant) return ctx.quant->bits;
  const TensorInfo& ti = ctx.store.info(s.prefix + ".qweight");
  if (!ti.shape.empty() && ti.shape[0] * 4 == s.in_features) return 8;
  return 4;
}

}  // namespace dlx
