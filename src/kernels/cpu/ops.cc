#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace dlx::cpu {

void embedding(const Tensor& ids, const Tensor& table, Tensor& out) {
  const int64_t T = ids.numel(), V = table.dim(0), H = table.dim(1);
  const int64_t* id = ids.data<int64_t>();
  float* o = out.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    check(id[t] >= 0 && id[t] < V, "token id {} is outside the vocabulary [0, {})", id[t], V);
    size_t base = size_t(id[t] * H);
    for (int64_t h = 0; h < H; ++h) o[t * H + h] = load_as_f32(table.data(), table.dtype(), base + size_t(h));
  }
}

void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t H = x.dim(-1), T = x.numel() / H;
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  std::vector<float> w(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) w[size_t(h)] = load_as_f32(weight.data(), weight.dtype(), size_t(h));
  parallel_for(T, 16, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* row = xp + t * H;
      double ss = 0;
      for (int64_t h = 0; h < H; ++h) ss += double(row[h]) * row[h];
      float inv = float(1.0 / std::sqrt(ss / double(H) + double(eps)));
      for (int64_t h = 0; h < H; ++h) op[t * H + h] = w[size_t(h)] * (row[h] * inv);
    }
  });
}

void rope(Tensor& x, const Tensor& positions, double theta) {
  const int64_t D = x.dim(-1), heads = x.dim(-2), T = x.numel() / (D * heads), half = D / 2;
  check(positions.numel() == T, "rope: {} positions for {} tokens", positions.numel(), T);
  // Frequencies in float32 as the reference implementations compute them.
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[size_t(i)] = float(1.0 / std::pow(theta, double(2 * i) / double(D)));
  const int64_t* pos = positions.data<int64_t>();
  float* xp = x.data<float>();
  parallel_for(T, 8, [&](int64_t t0, int64_t t1) {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        float angle = float(pos[t]) * inv_freq[size_t(i)];
        c[size_t(i)] = float(std::cos(double(angle)));
        s[size_t(i)] = float(std::sin(double(angle)));
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = xp + (t * heads + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          float a = v[i], b = v[i + half];
          v[i] = a * c[size_t(i)] - b * s[size_t(i)];
          v[i + half] = b * c[size_t(i)] + a * s[size_t(i)];
        }
      }
    }
  });
}

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, Tensor& out) {
  const int64_t B = q.dim(0), Lq = q.dim(1), Hq = q.dim(2), D = q.dim(3);
  const int64_t S = k.dim(1), Hkv = k.dim(2);
  check(Hq % Hkv == 0, "attention: {} query heads is not a multiple of {} key/value heads", Hq, Hkv);
  const int64_t group = Hq / Hkv;
  const float scale = float(1.0 / std::sqrt(double(D)));
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  const uint8_t* mask = key_mask ? key_mask->data<uint8_t>() : nullptr;
  float* op = out.data<float>();
  // One task per (batch, head, query row).
  parallel_for(B * Hq * Lq, 4, [&](int64_t i0, int64_t i1) {
    std::vector<float> score(static_cast<size_t>(S));
    std::vector<float> acc(static_cast<size_t>(D));
    for (int64_t idx = i0; idx < i1; ++idx) {
      int64_t b = idx / (Hq * Lq), h = (idx / Lq) % Hq, i = idx % Lq;
      int64_t kh = h / group;
      const float* qi = qp + ((b * Lq + i) * Hq + h) * D;
      float mx = -std::numeric_limits<float>::infinity();
      bool nan = false;  // a NaN score makes the row NaN (std::max alone would drop it: issue 18)
      for (int64_t j = 0; j < S; ++j) {
        if (mask && !mask[b * S + j]) {
          score[size_t(j)] = -std::numeric_limits<float>::infinity();
          continue;
        }
        const float* kj = kp + ((b * S + j) * Hkv + kh) * D;
        float s = 0;
        for (int64_t d = 0; d < D; ++d) s += qi[d] * kj[d];
        score[size_t(j)] = s * scale;
        nan |= std::isnan(score[size_t(j)]);
        mx = std::max(mx, score[size_t(j)]);
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      float* oi = op + ((b * Lq + i) * Hq + h) * D;
      if (nan) {
        std::fill(oi, oi + D, std::numeric_limits<float>::quiet_NaN());
        continue;
      }
      if (mx == -std::numeric_limits<float>::infinity()) {  // every key masked: output zeros
        std::copy(acc.begin(), acc.end(), oi);
        continue;
      }
      float denom = 0;
      for (int64_t j = 0; j < S; ++j) {
        if (score[size_t(j)] == -std::numeric_limits<float>::infinity()) continue;
        float p = std::exp(score[size_t(j)] - mx);
        denom += p;
        const float* vj = vp + ((b * S + j) * Hkv + kh) * D;
        for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += p * vj[d];
      }
      for (int64_t d = 0; d < D; ++d) oi[d] = acc[size_t(d)] / denom;
    }
  });
}

void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  const int64_t n = gate.numel();
  const float* g = gate.data<float>();
  const float* u = up.data<float>();
  float* o = out.data<float>();
  parallel_for(n, 4096, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  });
}

void add(Tensor& x, const Tensor& y) {
  check(x.numel() == y.numel(), "add: {} vs {}", shape_str(x.shape()), shape_str(y.shape()));
  float* a = x.data<float>();
  const float* b = y.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) a[i] += b[i];
}

}  // namespace dlx::cpu
