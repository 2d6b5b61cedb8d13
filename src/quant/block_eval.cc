#include "quant/block_eval.h"

#include "core/error.h"

namespace dlx {

namespace {

// y = x w^T + b into a fresh activation buffer of shape `out` (T rows).
Tensor linear(Backend& be, const Tensor& x, const Tensor& w, const Tensor& b, Shape out) {
  Tensor wd = be.upload(w);
  Tensor bd = b.defined() ? be.upload(b) : Tensor();
  Tensor y = be.empty(be.act_dtype(), std::move(out));
  Tensor y2 = y.reshape({x.dim(0), w.dim(0)});
  be.matmul(x, wd, bd.defined() ? &bd : nullptr, y2);
  return y;
}

}  // namespace

Tensor attention_block(Backend& be, const ModelConfig& c, const ForwardState& st, const Tensor& x,
                       const AttnBlockWeights& w) {
  check(st.slots.size() == 1 && !st.slots[0].cache, "attention_block: a calibration chunk is one slot without a cache");
  const AttnSlot& s = st.slots[0];
  const int64_t B = s.B, L = s.L, T = B * L, D = c.head_dim;
  check(x.dim(0) == T, "attention_block: {} rows for a [{}, {}] chunk", x.dim(0), B, L);
  Tensor dx = be.from_host_f32(x);
  Tensor q = linear(be, dx, w.wq, w.bq, {B, L, c.num_heads, D});
  Tensor k = linear(be, dx, w.wk, w.bk, {B, L, c.num_kv_heads, D});
  Tensor v = linear(be, dx, w.wv, w.bv, {B, L, c.num_kv_heads, D});
  if (w.q_norm.defined()) {
    Tensor qn = q.reshape({T * c.num_heads, D}), kn = k.reshape({T * c.num_kv_heads, D});
    be.rmsnorm(qn, w.q_norm, float(c.rms_norm_eps), qn);
    be.rmsnorm(kn, w.k_norm, float(c.rms_norm_eps), kn);
  }
  be.rope(q, st.positions, c.rope_theta);
  be.rope(k, st.positions, c.rope_theta);
  Tensor att = be.empty(be.act_dtype(), {B, L, c.num_heads, D});
  be.attention_block_causal(q, k, v, s.key_mask.defined() ? &s.key_mask : nullptr, c.block_size, 0, att);
  Tensor o = linear(be, att.reshape({T, c.num_heads * D}), w.wo, Tensor(), {T, c.hidden_size});
  return be.to_host_f32(o);
}

Tensor mlp_block(Backend& be, const Tensor& x, const Tensor& wg, const Tensor& wu, const Tensor& wd) {
  const int64_t T = x.dim(0);
  Tensor dx = be.from_host_f32(x);
  Tensor g = linear(be, dx, wg, Tensor(), {T, wg.dim(0)});
  Tensor u = linear(be, dx, wu, Tensor(), {T, wu.dim(0)});
  be.silu_mul(g, u, g);
  Tensor o = linear(be, g, wd, Tensor(), {T, wd.dim(0)});
  return be.to_host_f32(o);
}

double sum_sq_diff(const Tensor& a, const Tensor& b) {
  check(a.numel() == b.numel(), "sum_sq_diff: {} vs {} elements", a.numel(), b.numel());
  const float* p = a.data<float>();
  const float* q = b.data<float>();
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double d = double(p[i]) - double(q[i]);
    s += d * d;
  }
  return s;
}

}  // namespace dlx
