#include "quant/methods/awq.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/host_ops.h"

namespace dlx {

int64_t add_abs_columns(const Tensor& x, std::vector<double>& sum) {
  const int64_t k = int64_t(sum.size());
  check(x.dim(-1) == k, "awq: activation has {} channels, expected {}", x.dim(-1), k);
  const int64_t r = x.numel() / std::max<int64_t>(k, 1);
  const float* p = x.data<float>();
  // Channels split over threads; each channel's sum runs over the rows in order.
  parallel_for(k, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t t = 0; t < r; ++t)
      for (int64_t c = c0; c < c1; ++c) sum[size_t(c)] += std::fabs(double(p[t * k + c]));
  });
  return r;
}

std::vector<float> mean_from_sums(const std::vector<double>& sum, int64_t rows) {
  std::vector<float> out(sum.size());
  for (size_t c = 0; c < sum.size(); ++c) out[c] = float(sum[c] / double(std::max<int64_t>(rows, 1)));
  return out;
}

std::vector<float> mean_abs_columns(const std::vector<Tensor>& xs) {
  check(!xs.empty(), "awq: no calibration activations");
  std::vector<double> sum(static_cast<size_t>(xs[0].dim(-1)), 0.0);
  int64_t rows = 0;
  for (const Tensor& x : xs) rows += add_abs_columns(x, sum);
  return mean_from_sums(sum, rows);
}

std::vector<float> awq_weight_mean(const std::vector<const Tensor*>& ws, int64_t group_size) {
  const int64_t k = ws[0]->dim(1);
  std::vector<double> sum(static_cast<size_t>(k), 0.0);
  int64_t rows = 0;
  for (const Tensor* w : ws) rows += w->dim(0);
  // Groups of columns split over threads; each column's sum still runs over the linears and rows in order, so the
  // result does not depend on the thread count.
  parallel_for(k / group_size, 1, [&](int64_t gb, int64_t ge) {
    for (const Tensor* w : ws) {
      const int64_t n = w->dim(0);
      const float* p = w->data<float>();
      for (int64_t r = 0; r < n; ++r)
        for (int64_t g0 = gb * group_size; g0 < ge * group_size; g0 += group_size) {
          float m = 0;
          for (int64_t c = g0; c < g0 + group_size; ++c) m = std::max(m, std::fabs(p[r * k + c]));
          const double inv = 1.0 / (double(m) + 1e-6);
          for (int64_t c = g0; c < g0 + group_size; ++c) sum[size_t(c)] += std::fabs(double(p[r * k + c])) * inv;
        }
    }
  });
  std::vector<float> out(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) out[size_t(c)] = float(sum[size_t(c)] / double(rows));
  return out;
}

std::vector<float> awq_candidate_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, double r) {
  std::vector<float> s(x_mean.size(), 1.0f);
  if (r < 0) return s;
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  std::vector<double> v(x_mean.size());
  for (size_t c = 0; c < s.size(); ++c) {
    double x = std::pow(double(x_mean[c]), r) / (std::pow(double(w_mean[c]), 1.0 - r) + 1e-4);
    if (!std::isfinite(x)) x = 1.0;
    v[c] = std::max(x, 1e-4);
    lo = std::min(lo, v[c]);
    hi = std::max(hi, v[c]);
  }
  const double norm = std::sqrt(lo * hi);
  for (size_t c = 0; c < s.size(); ++c) {
    double x = v[c] / norm;
    s[c] = std::isfinite(x) && x > 0 ? float(x) : 1.0f;
  }
  return s;
}

ScaleSearch awq_search_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, int n_grid,
                              const std::function<double(const std::vector<float>&)>& loss,
                              std::optional<double> pinned) {
  ScaleSearch best;
  best.scales = awq_candidate_scales(x_mean, w_mean, -1);
  best.loss = best.identity_loss = loss(best.scales);
  if (pinned) {
    if (*pinned >= 0) {
      best.ratio = *pinned;
      best.scales = awq_candidate_scales(x_mean, w_mean, *pinned);
      best.loss = loss(best.scales);
    }
    return best;
  }
  for (int g = 0; g < n_grid; ++g) {
    const double r = double(g) / double(n_grid);
    std::vector<float> s = awq_candidate_scales(x_mean, w_mean, r);
    const double l = loss(s);
    best.grid_losses.push_back(l);
    if (l < best.loss) {
      best.loss = l;
      best.ratio = r;
      best.scales = std::move(s);
    }
  }
  return best;
}

Tensor scale_weight(const Tensor& w, const std::vector<float>& col_mul, const std::vector<float>* row_div) {
  const int64_t n = w.dim(0), k = w.dim(1);
  Tensor out = host_uninit(DType::F32, {n, k});
  const float* p = w.data<float>();
  float* o = out.data<float>();
  parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float rd = row_div ? (*row_div)[size_t(r)] : 1.0f;
      for (int64_t c = 0; c < k; ++c) o[r * k + c] = p[r * k + c] * col_mul[size_t(c)] / rd;
    }
  });
  return out;
}

Tensor fake_quant_scaled(const Tensor& w, const std::vector<float>& s, const QuantScheme& scheme) {
  const int64_t n = w.dim(0), k = w.dim(1), gs = scheme.group_size;
  const int maxq = scheme.maxq();
  Tensor out = host_uninit(DType::F32, {n, k});
  const float* p = w.data<float>();
  float* o = out.data<float>();
  parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(static_cast<size_t>(gs));
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t g0 = 0; g0 < k; g0 += gs) {
        for (int64_t i = 0; i < gs; ++i) buf[size_t(i)] = p[r * k + g0 + i] * s[size_t(g0 + i)];
        GroupParams gp = find_params(buf.data(), gs, scheme);
        for (int64_t i = 0; i < gs; ++i) o[r * k + g0 + i] = gp.fake(buf[size_t(i)], maxq) / s[size_t(g0 + i)];
      }
  });
  return out;
}

namespace {

GroupParams clipped_params(const float* w, int64_t n, float clip, const QuantScheme& s) {
  float lo = w[0], hi = w[0];
  for (int64_t i = 1; i < n; ++i) lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
  return params_from_range(std::max(lo, -clip), std::min(hi, clip), s);
}

}  // namespace

std::vector<float> awq_search_clip(const Tensor& w, const OutputError& h, const QuantScheme& scheme, int n_grid,
                                   double max_shrink) {
  const int64_t n = w.dim(0), k = w.dim(1), gs = scheme.group_size, G = k / gs;
  check(h.k() == k, "awq clip: Hessian of {} inputs for a weight of {}", h.k(), k);
  const int maxq = scheme.maxq();
  const int steps = std::max(int(max_shrink * n_grid), 1);
  Backend& be = h.backend();
  std::vector<float> best(size_t(n * G));
  const float* p = w.data<float>();
  Tensor d = Tensor::zeros(DType::F32, {steps * n, gs});  // row s * n + r: row r's error at shrink step s
  std::vector<float> org(static_cast<size_t>(n));
  for (int64_t g = 0; g < G; ++g) {
    float* dp = d.data<float>();
    parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* wg = p + r * k + g * gs;
        float m = 0;
        for (int64_t i = 0; i < gs; ++i) m = std::max(m, std::fabs(wg[i]));
        org[size_t(r)] = m;
        for (int st = 0; st < steps; ++st) {
          const float clip = m * float(1.0 - double(st) / double(n_grid));
          GroupParams gp = clipped_params(wg, gs, clip, scheme);
          float* dr = dp + (int64_t(st) * n + r) * gs;
          for (int64_t i = 0; i < gs; ++i) dr[i] = gp.fake(std::clamp(wg[i], -clip, clip), maxq) - wg[i];
        }
      }
    });
    // D Hg with Hg the group's diagonal block of H (leading dimension k); Hg is symmetric.
    const Tensor dd = be.upload(d);
    Tensor dh = be.empty(DType::F32, {steps * n, gs});
    be.gemm_f32(false, false, steps * n, gs, gs, 1.0f, dd.data<float>(), gs, h.h().data<float>() + g * gs * k + g * gs,
                k, 0.0f, dh.data<float>(), gs);
    const Tensor hd = be.to_host_f32(dh);
    const float* hp = hd.data<float>();
    parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float best_clip = org[size_t(r)];
        double best_err = std::numeric_limits<double>::infinity();
        for (int st = 0; st < steps; ++st) {
          const float* dr = dp + (int64_t(st) * n + r) * gs;
          const float* hr = hp + (int64_t(st) * n + r) * gs;
          double err = 0;
          for (int64_t i = 0; i < gs; ++i) err += double(dr[i]) * double(hr[i]);
          if (err < best_err) best_err = err, best_clip = org[size_t(r)] * float(1.0 - double(st) / double(n_grid));
        }
        best[size_t(r * G + g)] = best_clip;
      }
    });
  }
  return best;
}

QuantCodes quantize_clipped(const Tensor& w, const std::vector<float>& clip, const QuantScheme& scheme) {
  const int64_t n = w.dim(0), k = w.dim(1), gs = scheme.group_size, G = k / gs;
  const int maxq = scheme.maxq();
  QuantCodes c = make_codes(n, k, scheme);
  const float* p = w.data<float>();
  parallel_for(n, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t g = 0; g < G; ++g) {
        const float* wg = p + r * k + g * gs;
        const float cl = clip.empty() ? std::numeric_limits<float>::infinity() : clip[size_t(r * G + g)];
        GroupParams gp = clipped_params(wg, gs, cl, scheme);
        set_group(c, g, r, gp);
        for (int64_t i = 0; i < gs; ++i) c.q[size_t(r * k + g * gs + i)] = uint8_t(gp.code(std::clamp(wg[i], -cl, cl), maxq));
      }
  });
  return c;
}

std::vector<float> expand_kv_scales(const std::vector<float>& sv, int64_t num_heads, int64_t num_kv_heads,
                                    int64_t head_dim) {
  check(num_kv_heads > 0 && num_heads % num_kv_heads == 0 && int64_t(sv.size()) == num_kv_heads * head_dim,
        "awq: {} v->o scales for {} kv heads of dim {} ({} query heads)", sv.size(), num_kv_heads, head_dim, num_heads);
  const int64_t rep = num_heads / num_kv_heads;
  std::vector<float> so(static_cast<size_t>(num_heads * head_dim));
  for (int64_t h = 0; h < num_heads; ++h)
    for (int64_t d = 0; d < head_dim; ++d) so[size_t(h * head_dim + d)] = sv[size_t((h / rep) * head_dim + d)];
  return so;
}

namespace {

float round_to(DType t, float v) {
  switch (t) {
    case DType::F16: return round_to_f16(v);
    case DType::BF16: return bf16_to_f32(f32_to_bf16(v));
    default: return v;
  }
}

// norm / s rounded as it will be stored; returns the scale the stored norm really applies (norm / stored).
std::vector<float> fold_norm(const std::vector<float>& norm, const std::vector<float>& s, DType dt,
                             std::vector<float>& stored, const char* what) {
  check(norm.size() == s.size(), "awq: {} scales for a {} weight of {}", s.size(), what, norm.size());
  stored.resize(norm.size());
  std::vector<float> eff(norm.size());
  for (size_t c = 0; c < norm.size(); ++c) {
    stored[c] = round_to(dt, norm[c] / s[c]);
    check(std::isfinite(stored[c]), "awq: folded {} weight {} / {} overflows {}", what, norm[c], s[c], dtype_name(dt));
    eff[c] = stored[c] != 0.0f && norm[c] != 0.0f ? norm[c] / stored[c] : s[c];
  }
  return eff;
}

}  // namespace

AwqFolded awq_fold(const std::array<Tensor, 7>& w, const Tensor& v_bias, const std::vector<float>& attn_norm,
                   const std::vector<float>& ffn_norm, const AwqLayerScales& s, int64_t num_heads,
                   int64_t num_kv_heads, int64_t head_dim, DType norm_dtype) {
  AwqFolded f;
  const std::vector<float> s1 = fold_norm(attn_norm, s.norm_qkv, norm_dtype, f.attn_norm, "attention norm");
  const std::vector<float> s2 = fold_norm(ffn_norm, s.norm_gate_up, norm_dtype, f.ffn_norm, "MLP norm");
  const std::vector<float> so = expand_kv_scales(s.v_o, num_heads, num_kv_heads, head_dim);
  f.w[0] = scale_weight(w[0], s1);
  f.w[1] = scale_weight(w[1], s1);
  f.w[2] = scale_weight(w[2], s1, &s.v_o);
  f.w[3] = scale_weight(w[3], so);
  f.w[4] = scale_weight(w[4], s2);
  f.w[5] = scale_weight(w[5], s2, &s.up_down);
  f.w[6] = scale_weight(w[6], s.up_down);
  if (v_bias.defined()) {
    f.v_bias = Tensor::zeros(DType::F32, {v_bias.numel()});
    for (int64_t i = 0; i < v_bias.numel(); ++i) f.v_bias.data<float>()[i] = v_bias.data<float>()[i] / s.v_o[size_t(i)];
  }
  f.input_scale = {s1, so, s2, s.up_down};
  return f;
}

}  // namespace dlx
