// Shared helpers, RTN and GPTQ per layer (AWQ is in layer_awq.cc).
#include "quant/layer_quant.h"

#include <fmt/format.h>

#include <cmath>
#include <iterator>
#include <optional>

#include "core/error.h"
#include "io/safetensors.h"
#include "quant/host_ops.h"
#include "quant/layer_runner.h"
#include "quant/methods/gptq.h"
#include "quant/methods/hessian.h"
#include "quant/phase_times.h"
#include "quant/running_linear.h"

namespace dlx {

QuantScheme QuantSettings::scheme(int64_t k) const {
  QuantScheme q;
  q.bits = bits;
  q.group_size = resolve_group_size(group_size, k);
  q.sym = sym;
  q.include_zero = method != "awq" && format != "awq";  // AutoAWQ's min/max ranges for anything AWQ
  q.min_zero = format == "gptq" && !sym ? 1 : 0;        // GPTQ v1 stores zero - 1
  return q;
}

namespace layer_quant {

Tensor float_weight(const Model& m, int64_t layer, LinearRole r) {
  const Linear& lin = *m.layers()[size_t(layer)].linear[int(r)];
  // A dense layer's dequantize() converts its checkpoint tensor element by element on one thread (~1 s for a
  // layer of a 7B model); the same conversion of the same tensor runs here on every core.
  const std::string name = lin.spec().prefix + ".weight";
  if (lin.info().group_size == 0 && m.store().has(name)) {
    const Tensor w = m.store().get(name);
    if (is_float(w.dtype()) && w.dtype() != DType::F8_E4M3 && w.device() == Device::CPU &&
        w.shape() == Shape{lin.out_features(), lin.in_features()})
      return host_to_f32(w);
  }
  return lin.dequantize();
}

std::string linear_prefix(const Model& m, int64_t layer, LinearRole r) {
  return m.layers()[size_t(layer)].linear[int(r)]->spec().prefix;
}

Tensor float_bias(const Model& m, int64_t layer, LinearRole r) {
  const std::string name = linear_prefix(m, layer, r) + ".bias";
  if (!m.store().has(name)) return {};
  Tensor b = m.store().get(name);
  Tensor out = Tensor::zeros(DType::F32, {b.numel()});
  for (int64_t i = 0; i < b.numel(); ++i) out.data<float>()[i] = load_as_f32(b.data(), b.dtype(), size_t(i));
  return out;
}

std::vector<float> norm_weight(const Model& m, int64_t layer, bool ffn) {
  const ArchNames& names = arch_names(m.config().arch);
  const std::string name =
      fmt::format(fmt::runtime(names.layer_prefix), layer) + (ffn ? names.ffn_norm : names.attn_norm);
  Tensor t = m.store().get(name);
  std::vector<float> v(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[size_t(i)] = load_as_f32(t.data(), t.dtype(), size_t(i));
  return v;
}

Tensor round_bias_f16(const Tensor& b) {
  if (!b.defined()) return {};
  Tensor out = Tensor::zeros(DType::F32, {b.numel()});
  for (int64_t i = 0; i < b.numel(); ++i) out.data<float>()[i] = round_to_f16(b.data<float>()[i]);
  return out;
}

double rtn_error_on_backend(const OutputError& err, const Tensor& wb, const QuantScheme& sc, double den) {
  Backend& be = err.backend();
  if (den < 0) den = err.sq_of(wb);
  if (!(den > 0)) return 0.0;
  Tensor d = backend_uninit(be, DType::F32, wb.shape());
  be.fake_quant(wb, Tensor(), FakeQuantGrid{sc.bits, sc.group_size, sc.sym, sc.include_zero, sc.min_zero}, true, d);
  return std::sqrt(err.sq_of(d) / den);
}

void install(Model& m, int64_t layer, LinearRole r, const QuantizedLinear& q, const QuantSettings& s) {
  const Linear& cur = *m.layers()[size_t(layer)].linear[int(r)];
  m.replace_linear(layer, r,
                   make_running_linear(m.backend(), m.store(), cur.spec(), q.codes, q.bias, q.input_mul, s.kind()));
}

}  // namespace layer_quant

using namespace layer_quant;

namespace {

// Hessians of the inputs in `want` (by input_of index), over one run of the layer, accumulated on the backend.
std::array<std::optional<HessianAccumulator>, 4> collect_hessians(Model& m, LayerRunner& runner,
                                                                  const std::array<bool, 4>& want) {
  std::array<std::optional<HessianAccumulator>, 4> acc;
  Backend& be = m.backend();
  PhaseTimes& ph = quant_phases();
  // Sub-phases of "forward + hessians" (the rest of it is the layer's forward itself); with
  // DIFFULEX_QUANT_SYNC_PHASES=1 each includes its device work (phase_times.h).
  static const char* const kGram[4] = {"  hessian: gram q/k/v input", "  hessian: gram o input",
                                       "  hessian: gram gate/up input", "  hessian: gram down input"};
  runner.run([&](int64_t, LinearRole r, const Tensor& x) {
    const int i = input_of(r);
    // q/k/v and gate/up share an input: take it once, from the first of them.
    if (!want[size_t(i)] || r == LinearRole::K || r == LinearRole::V || r == LinearRole::Up) return;
    if (!acc[size_t(i)]) {
      PhaseTimes::Scope t(ph, "  hessian: zero-init");
      acc[size_t(i)].emplace(be, x.dim(-1));
    }
    PhaseTimes::Scope t(ph, kGram[i]);
    acc[size_t(i)]->add(x);
  });
  return acc;
}

}  // namespace

LayerResult quantize_layer_rtn(Model& m, int64_t layer, LayerRunner* runner, const QuantSettings& s) {
  PhaseTimes& ph = quant_phases();
  LayerResult res;
  std::array<std::optional<HessianAccumulator>, 4> acc;
  if (runner) {
    PhaseTimes::Scope t(ph, "forward + hessians");
    acc = collect_hessians(m, *runner, {true, true, true, true});
  }
  // One H per input, shared by the linears reading it (q/k/v, gate/up), straight from the F32 sums: RTN needs no
  // fp64 H (the error report's values are the same as through finish()).
  std::array<std::optional<OutputError>, 4> errs;
  for (LinearRole r : kLinearRoles) {
    QuantizedLinear& q = res.linears[int(r)];
    std::optional<PhaseTimes::Scope> t(std::in_place, ph, "weights to f32");
    Tensor w = float_weight(m, layer, r);
    QuantScheme sc = s.scheme(w.dim(1));
    q.prefix = linear_prefix(m, layer, r);
    t.emplace(ph, "rtn");
    q.codes = rtn_quantize(w.data<float>(), w.dim(0), w.dim(1), sc);
    q.bias = round_bias_f16(float_bias(m, layer, r));
    q.error = q.error_rtn = -1;
    if (runner) {
      t.emplace(ph, "error report");
      std::optional<OutputError>& err = errs[size_t(input_of(r))];
      if (!err) {
        PhaseTimes::Scope th(ph, "  error report: H from sums");
        err.emplace(*acc[size_t(input_of(r))]);
      }
      // The weight goes to the backend once; RTN's D = Q(w) - w is made there (the same floats as from the codes).
      q.error = q.error_rtn = rtn_error_on_backend(*err, m.backend().upload(w), sc);
    }
  }
  {
    PhaseTimes::Scope t(ph, "stand-ins");
    for (LinearRole r : kLinearRoles) install(m, layer, r, res.linears[int(r)], s);
  }
  if (runner) {
    PhaseTimes::Scope t(ph, "forward (quantized)");
    runner->run();
  }
  return res;
}

LayerResult quantize_layer_gptq(Model& m, int64_t layer, LayerRunner& runner, const QuantSettings& s) {
  LayerResult res;
  // True-sequential (AutoGPTQ's default): each group of linears sees the inputs produced by the already
  // quantized groups before it in the layer.
  std::vector<std::vector<LinearRole>> groups;
  if (s.true_sequential)
    groups = {{LinearRole::Q, LinearRole::K, LinearRole::V}, {LinearRole::O}, {LinearRole::Gate, LinearRole::Up},
              {LinearRole::Down}};
  else
    groups = {std::vector<LinearRole>(std::begin(kLinearRoles), std::end(kLinearRoles))};
  nlohmann::json damps = nlohmann::json::object();
  PhaseTimes& ph = quant_phases();
  for (const auto& group : groups) {
    std::array<bool, 4> want{};
    for (LinearRole r : group) want[size_t(input_of(r))] = true;
    std::optional<PhaseTimes::Scope> t(std::in_place, ph, "forward + hessians");
    auto acc = collect_hessians(m, runner, want);
    // H of each input comes to the host once and is shared by the linears that read it (q/k/v, gate/up): the last
    // of them takes it, the others a copy (gptq_quantize changes its H).
    std::array<std::vector<double>, 4> hs;
    std::array<std::optional<OutputError>, 4> errs;
    for (size_t gi = 0; gi < group.size(); ++gi) {
      const LinearRole r = group[gi];
      const size_t in = size_t(input_of(r));
      QuantizedLinear& q = res.linears[int(r)];
      t.emplace(ph, "weights to f32");
      Tensor w = float_weight(m, layer, r);
      const int64_t n = w.dim(0), k = w.dim(1);
      t.emplace(ph, "hessian to host");
      if (!errs[in]) {
        hs[in] = acc[in]->finish();  // the one download of the sums
        t.emplace(ph, "  error report: H from sums");
        errs[in].emplace(*acc[in]);  // on the backend from the F32 sums: the same values as from hs[in]
      }
      const OutputError& err = *errs[in];
      bool used_later = false;
      for (size_t gj = gi + 1; gj < group.size(); ++gj) used_later |= size_t(input_of(group[gj])) == in;
      std::vector<double> h = used_later ? hs[in] : std::move(hs[in]);
      GptqOptions o;
      o.scheme = s.scheme(k);
      o.damp = s.damp;
      o.act_order = s.desc_act;
      o.static_groups = s.static_groups;
      t.emplace(ph, "gptq");
      GptqResult g = gptq_quantize(m.backend(), w.data<float>(), n, k, std::move(h), o);
      q.prefix = linear_prefix(m, layer, r);
      q.codes = std::move(g.codes);
      q.bias = round_bias_f16(float_bias(m, layer, r));
      t.emplace(ph, "error report");
      Tensor d = codes_to_dense(q.codes);
      const Tensor wb = m.backend().upload(w);
      const double den = err.sq_of(wb);
      q.error = err.rel(d.data<float>(), w.data<float>(), n, den);
      q.error_rtn = rtn_error_on_backend(err, wb, o.scheme, den);
      if (g.damp != s.damp) damps[q.prefix] = g.damp;
    }
    t.emplace(ph, "stand-ins");
    for (LinearRole r : group) install(m, layer, r, res.linears[int(r)], s);
  }
  if (!damps.empty()) res.notes["raised_damp"] = damps;
  PhaseTimes::Scope t(ph, "forward (quantized)");
  runner.run();
  return res;
}

}  // namespace dlx
