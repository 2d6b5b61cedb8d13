#include "quant/methods/rtn.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/host_ops.h"

namespace dlx {

namespace {

// Smallest scale written: far below any real weight range, still a (subnormal) fp16 number.
constexpr float kMinScale = 1e-6f;

float f16_scale(float v) {
  float r = round_to_f16(std::max(v, kMinScale));
  check(std::isfinite(r), "quantization scale {} does not fit in fp16 (weights too large)", v);
  return r;
}

}  // namespace

float round_to_f16(float v) { return f16_to_f32(f32_to_f16(v)); }

GroupParams params_from_range(float lo, float hi, const QuantScheme& s) {
  const int maxq = s.maxq();
  if (s.include_zero) {
    lo = std::min(lo, 0.0f);
    hi = std::max(hi, 0.0f);
  }
  GroupParams p;
  if (s.sym) {
    // AutoGPTQ: scale = (xmax - xmin) / maxq over [-absmax, absmax]; zero in the middle of the grid.
    float amax = std::max(std::fabs(lo), std::fabs(hi));
    if (amax == 0.0f) amax = 1.0f;
    p.scale = f16_scale(2.0f * amax / float(maxq));
    p.zero = (maxq + 1) / 2;
    return p;
  }
  float span = hi - lo;
  if (span <= 0.0f) {
    // A constant group: AutoGPTQ widens an all-zero range to [-1, 1]; a constant non-zero one (AWQ ranges)
    // gets a grid that holds its value.
    if (hi == 0.0f) lo = -1.0f, hi = 1.0f;
    else lo = std::min(lo, 0.0f), hi = std::max(hi, 0.0f);
    span = hi - lo;
  }
  p.scale = f16_scale(span / float(maxq));
  p.zero = int(std::clamp(std::nearbyint(-lo / p.scale), 0.0f, float(maxq)));
  if (p.zero < s.min_zero) {
    // The grid must start at code min_zero: stretch it so that maxq still reaches the largest weight.
    p.zero = s.min_zero;
    p.scale = f16_scale(std::max(hi, 0.0f) / float(maxq - s.min_zero));
  }
  return p;
}

GroupParams find_params(const float* w, int64_t n, const QuantScheme& s) {
  float lo = w[0], hi = w[0];
  for (int64_t i = 1; i < n; ++i) lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
  return params_from_range(lo, hi, s);
}

QuantCodes make_codes(int64_t n, int64_t k, const QuantScheme& s) {
  check(s.group_size > 0 && k % s.group_size == 0, "group size {} does not divide in_features {}", s.group_size, k);
  QuantCodes c;
  c.bits = s.bits;
  c.n = n;
  c.k = k;
  c.group_size = s.group_size;
  // Huge pages for the codes (up to 68 MB a linear) before they are first touched: see host_ops.h.
  c.q.reserve(size_t(n * k));
  advise_huge_pages(c.q.data(), c.q.capacity());
  c.q.assign(size_t(n * k), 0);
  c.zero.assign(size_t(c.groups() * n), 0);
  c.scale.assign(size_t(c.groups() * n), 0.0f);
  return c;
}

QuantCodes rtn_quantize(const float* w, int64_t n, int64_t k, const QuantScheme& s) {
  QuantCodes c = make_codes(n, k, s);
  const int64_t gs = s.group_size, G = c.groups();
  const int maxq = s.maxq();
  parallel_for(n, 8, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t g = 0; g < G; ++g) {
        const float* row = w + r * k + g * gs;
        GroupParams p = find_params(row, gs, s);
        set_group(c, g, r, p);
        for (int64_t i = 0; i < gs; ++i) c.q[size_t(r * k + g * gs + i)] = uint8_t(p.code(row[i], maxq));
      }
  });
  return c;
}

Tensor codes_to_dense(const QuantCodes& c) {
  Tensor t = host_uninit(DType::F32, {c.n, c.k});  // every element written below, in parallel
  float* o = t.data<float>();
  parallel_for(c.n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t kk = 0; kk < c.k; ++kk) o[r * c.k + kk] = c.weight(r, kk);
  });
  return t;
}

}  // namespace dlx
