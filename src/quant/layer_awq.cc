// AWQ for one decoder layer (awq.h has the algorithm). The four scaling groups, as AutoAWQ has them for
// Qwen2/LLaMA blocks:
//   attention norm -> q, k, v     judged by the attention block output (o_proj kept in float)
//   v -> o                        judged by o_proj's output; see below for grouped-query attention
//   MLP norm -> gate, up          judged by the MLP output (down_proj kept in float)
//   up -> down                    judged by down_proj's output
// All four searches use the float layer's inputs; then the scales are folded, the clip ranges searched on the
// scaled weights and the scaled weights quantized.
//
// v -> o with grouped-query attention: o_proj's input channel (head h, dim d) is v's output channel
// (kv head h / (Hq / Hkv), dim d) passed through attention, which is linear in v (its softmax weights sum to 1,
// so v's bias passes through as well). Dividing v's output channel j by s[j] therefore divides every o input
// channel fed by j by s[j]: one scale per kv channel, tied over the Hq / Hkv query heads that share it. The
// search runs on those tied channels (activation and weight means averaged over the heads of a group). AutoAWQ
// skips this pair whenever v and o differ in shape; with Hq == Hkv the two are the same.
#include <fmt/format.h>

#include <optional>

#include "core/error.h"
#include "io/safetensors.h"
#include "quant/block_eval.h"
#include "quant/host_ops.h"
#include "quant/layer_quant.h"
#include "quant/layer_runner.h"
#include "quant/methods/awq.h"
#include "quant/methods/hessian.h"
#include "quant/phase_times.h"

namespace dlx {

using namespace layer_quant;

namespace {

std::vector<float> inverse(const std::vector<float>& v) {
  std::vector<float> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = 1.0f / v[i];
  return o;
}

}  // namespace

LayerResult quantize_layer_awq(Model& m, int64_t layer, LayerRunner& runner, const QuantSettings& s) {
  const ModelConfig& c = m.config();
  Backend& be = m.backend();
  LayerResult res;

  // The chunks the two block losses are computed on.
  const auto& chunks = runner.chunks();
  size_t nsearch = 0;
  for (int64_t tok = 0; nsearch < chunks.size() && (nsearch == 0 || tok < s.awq_search_tokens); ++nsearch)
    tok += chunks[nsearch].tokens();

  // Float pass over the four distinct inputs: H accumulated on the backend, sum |x| per channel continued chunk by
  // chunk on the backend (column_abs_sum: the same fp64 running sum as the host loop it replaced, without bringing
  // the activations to the host), and host copies of the attention and MLP inputs of the search chunks only.
  std::array<std::optional<HessianAccumulator>, 4> acc;
  std::array<std::vector<double>, 4> abs_sum;
  std::array<int64_t, 4> abs_rows{};
  std::array<std::vector<Tensor>, 4> xs;
  size_t chunk = 0;
  PhaseTimes& ph = quant_phases();
  std::optional<PhaseTimes::Scope> t(std::in_place, ph, "forward + statistics");
  runner.run([&](int64_t, LinearRole r, const Tensor& x) {
    if (r == LinearRole::K || r == LinearRole::V || r == LinearRole::Up) return;
    const size_t i = size_t(input_of(r));
    const int64_t k = x.dim(-1);
    if (!acc[i]) acc[i].emplace(be, k), abs_sum[i].assign(size_t(k), 0.0);
    acc[i]->add(x);
    be.column_abs_sum(x, abs_sum[i]);
    abs_rows[i] += k == 0 ? 0 : x.numel() / k;
    if ((i == 0 || i == 2) && chunk < nsearch) {
      Tensor h = be.to_host_f32(x);
      xs[i].push_back(host_copy(h).reshape({h.numel() / k, k}));
    }
    if (r == LinearRole::Down) ++chunk;  // the last linear of a chunk
  });
  t.emplace(ph, "hessian to host");
  std::array<std::vector<double>, 4> H;
  std::array<std::vector<float>, 4> x_mean;
  // H of each input on the backend, for every loss and error: built there from the sums (OutputError(acc)).
  std::array<std::optional<OutputError>, 4> err;
  for (size_t i = 0; i < 4; ++i) {
    H[i] = acc[i]->finish();
    err[i].emplace(*acc[i]);
    acc[i].reset();
    x_mean[i] = mean_from_sums(abs_sum[i], abs_rows[i]);
  }
  t.emplace(ph, "weights to f32");
  std::array<Tensor, 7> W, bias;
  for (LinearRole r : kLinearRoles) {
    W[size_t(r)] = float_weight(m, layer, r);
    bias[size_t(r)] = float_bias(m, layer, r);
  }
  auto sc = [&](LinearRole r) { return s.scheme(W[size_t(r)].dim(1)); };
  const Tensor &Wq = W[0], &Wk = W[1], &Wv = W[2], &Wo = W[3], &Wg = W[4], &Wu = W[5], &Wd = W[6];
  // The float weights in the backend's memory for the scale search (on the CPU the host tensors themselves): each
  // candidate is fake-quantized there (Backend::fake_quant, bit for bit fake_quant_scaled) and never crosses to the
  // host; the o and down losses take the weight error straight from it (OutputError::sq_of).
  t.emplace(ph, "awq weights to backend");
  std::array<Tensor, 7> Wb;
  for (LinearRole r : kLinearRoles) Wb[size_t(r)] = be.upload(W[size_t(r)]);
  auto on_backend = [&](const std::vector<float>& v) {
    return be.upload(host_view(DType::F32, {int64_t(v.size())}, v.data()));
  };
  auto fq = [&](LinearRole r, const Tensor& sd, bool minus_w) {
    const QuantScheme q = sc(r);
    const FakeQuantGrid g{q.bits, q.group_size, q.sym, q.include_zero, q.min_zero};
    Tensor out = backend_uninit(be, DType::F32, W[size_t(r)].shape());
    be.fake_quant(Wb[size_t(r)], sd, g, minus_w, out);
    return out;
  };

  // The exponents fixed by --awq-scales-from, if any (nullopt: searched).
  auto pinned = [&](size_t pair) -> std::optional<double> {
    return size_t(layer) < s.awq_ratios.size() ? s.awq_ratios[size_t(layer)][pair] : std::nullopt;
  };

  // 1. attention norm -> q, k, v
  t.emplace(ph, "awq scale search");
  AttnBlockWeights fp{Wb[0], Wb[1], Wb[2], Wb[3], bias[0], bias[1], bias[2], m.layers()[size_t(layer)].q_norm,
                      m.layers()[size_t(layer)].k_norm};
  std::vector<Tensor> ref_attn;
  for (size_t i = 0; i < nsearch; ++i) ref_attn.push_back(attention_block(be, c, chunks[i], xs[0][i], fp));
  ScaleSearch s_attn = awq_search_scales(
      x_mean[0], awq_weight_mean({&Wq, &Wk, &Wv}, sc(LinearRole::Q).group_size), s.awq_grid,
      [&](const std::vector<float>& sv) {
        AttnBlockWeights w = fp;
        const Tensor sd = on_backend(sv);  // (on the CPU a view of sv, which outlives its use here)
        w.wq = fq(LinearRole::Q, sd, false);
        w.wk = fq(LinearRole::K, sd, false);
        w.wv = fq(LinearRole::V, sd, false);
        double e = 0, cnt = 0;
        for (size_t i = 0; i < nsearch; ++i) {
          e += sum_sq_diff(attention_block(be, c, chunks[i], xs[0][i], w), ref_attn[i]);
          cnt += double(ref_attn[i].numel());
        }
        return e / cnt;
      },
      pinned(0));

  // 2. v -> o, one scale per kv channel (tied over the query heads sharing it)
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  const bool fold_vo = s.awq_fold_vo && Hkv > 0 && Hq % Hkv == 0;
  const int64_t rep = fold_vo ? Hq / Hkv : 1;
  auto expand = [&](const std::vector<float>& sv) { return expand_kv_scales(sv, Hq, Hkv, D); };
  auto tie = [&](const std::vector<float>& v) {
    std::vector<float> t(size_t(Hkv * D), 0.0f);
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t d = 0; d < D; ++d) t[size_t((h / rep) * D + d)] += v[size_t(h * D + d)] / float(rep);
    return t;
  };
  ScaleSearch s_vo;
  s_vo.scales.assign(size_t(Hkv * D), 1.0f);
  auto error_of = [&](size_t i) -> const OutputError& { return *err[i]; };
  if (fold_vo)
    s_vo = awq_search_scales(tie(x_mean[1]), tie(awq_weight_mean({&Wo}, sc(LinearRole::O).group_size)),
                             s.awq_grid, [&](const std::vector<float>& sv) {
                               const std::vector<float> ex = expand(sv);
                               return error_of(1).sq_of(fq(LinearRole::O, on_backend(ex), true));
                             },
                             pinned(1));

  // 3. MLP norm -> gate, up
  std::vector<Tensor> ref_mlp;
  for (size_t i = 0; i < nsearch; ++i) ref_mlp.push_back(mlp_block(be, xs[2][i], Wb[4], Wb[5], Wb[6]));
  ScaleSearch s_mlp = awq_search_scales(
      x_mean[2], awq_weight_mean({&Wg, &Wu}, sc(LinearRole::Gate).group_size), s.awq_grid,
      [&](const std::vector<float>& sv) {
        const Tensor sd = on_backend(sv);
        const Tensor g = fq(LinearRole::Gate, sd, false), u = fq(LinearRole::Up, sd, false);
        double e = 0, cnt = 0;
        for (size_t i = 0; i < nsearch; ++i) {
          e += sum_sq_diff(mlp_block(be, xs[2][i], g, u, Wb[6]), ref_mlp[i]);
          cnt += double(ref_mlp[i].numel());
        }
        return e / cnt;
      },
      pinned(2));

  // 4. up -> down
  ScaleSearch s_down = awq_search_scales(
      x_mean[3], awq_weight_mean({&Wd}, sc(LinearRole::Down).group_size), s.awq_grid,
      [&](const std::vector<float>& sv) {
        return error_of(3).sq_of(fq(LinearRole::Down, on_backend(sv), true));
      },
      pinned(3));

  t.emplace(ph, "awq fold");
  // Fold: norms divided (as stored), linears' input columns multiplied, producers' output rows divided.
  AwqLayerScales scales{s_attn.scales, s_vo.scales, s_mlp.scales, s_down.scales};
  AwqFolded f = awq_fold(W, bias[2], norm_weight(m, layer, false), norm_weight(m, layer, true), scales, Hq, Hkv, D,
                         s.norm_dtype);
  res.attn_norm = f.attn_norm;
  res.ffn_norm = f.ffn_norm;
  const std::array<Tensor, 7>& Ws = f.w;
  bias[2] = f.v_bias;
  std::array<std::vector<double>, 4> Hs;
  std::array<std::optional<OutputError>, 4> errs;  // the same for the scaled inputs
  for (size_t i = 0; i < 4; ++i) Hs[i] = scale_hessian(H[i], inverse(f.input_scale[i]));

  // Clip, quantize, measure.
  for (LinearRole r : kLinearRoles) {
    const size_t ri = size_t(r);
    QuantizedLinear& q = res.linears[ri];
    const QuantScheme scheme = sc(r);
    const std::vector<double>& hs = Hs[size_t(input_of(r))];
    const bool clip = r != LinearRole::Q && r != LinearRole::K;
    const size_t in = size_t(input_of(r));
    if (!errs[in]) errs[in].emplace(be, hs, Ws[ri].dim(1));
    q.prefix = linear_prefix(m, layer, r);
    t.emplace(ph, "awq clip + quantize");
    q.codes = quantize_clipped(Ws[ri], clip ? awq_search_clip(Ws[ri], *errs[in], scheme) : std::vector<float>{}, scheme);
    q.bias = round_bias_f16(bias[ri]);
    t.emplace(ph, "error report");
    Tensor d = codes_to_dense(q.codes);
    q.error = errs[in]->rel(d.data<float>(), Ws[ri].data<float>(), Ws[ri].dim(0));
    q.error_rtn = rtn_error_on_backend(error_of(in), Wb[ri], scheme);
    if (input_of(r) == 0 || input_of(r) == 2) q.input_mul = inverse(f.input_scale[size_t(input_of(r))]);
  }
  auto note = [](const ScaleSearch& ss) {
    return nlohmann::json{{"ratio", ss.ratio}, {"loss", ss.loss}, {"loss_unscaled", ss.identity_loss},
                          {"grid_losses", ss.grid_losses}};
  };
  res.notes["scales"] = {{"norm_qkv", note(s_attn)}, {"norm_gate_up", note(s_mlp)}, {"up_down", note(s_down)}};
  if (fold_vo) res.notes["scales"]["v_o"] = note(s_vo);
  t.emplace(ph, "stand-ins");
  for (LinearRole r : kLinearRoles) install(m, layer, r, res.linears[size_t(r)], s);
  t.emplace(ph, "forward (quantized)");
  runner.run();
  return res;
}

}  // namespace dlx
