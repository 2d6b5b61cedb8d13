#include "kernels/cpu/qmatmul.h"

#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace dlx {

// Portable version: per output row, per group, sum_k x[k] * q[k] then one multiply-add with the group's
// scale and scaled zero (y = s * sum(x q) - zs * sum(x)).
void cpu_qmatmul(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y) {
  const int64_t M = x.dim(0), K = w.k, N = w.n, G = w.groups(), gs = w.group_size;
  check(x.dim(1) == K, "cpu qmatmul: input has {} features, weight expects {}", x.dim(1), K);
  const int bits = w.bits, per = 32 / bits;
  const uint32_t qmask = (1u << bits) - 1;
  const int64_t words = w.words_per_row();
  // Apply the act-order permutation once: xp[:, j] = x[:, perm[j]].
  Tensor xperm;
  const float* xp = x.data<float>();
  if (w.perm.defined()) {
    xperm = Tensor::zeros(DType::F32, {M, K});
    const int32_t* perm = w.perm.data<int32_t>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = 0; j < K; ++j) xperm.data<float>()[m * K + j] = xp[m * K + perm[j]];
    xp = xperm.data<float>();
  }
  // Per-group sums of x, shared by every output row.
  std::vector<float> xsum(static_cast<size_t>(M * G));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      float s = 0;
      for (int64_t k = g * gs; k < (g + 1) * gs; ++k) s += xp[m * K + k];
      xsum[size_t(m * G + g)] = s;
    }
  const uint32_t* qw = reinterpret_cast<const uint32_t*>(w.qweight.data());
  const float* sc = w.scales.data<float>();
  const float* zs = w.zeros.data<float>();
  float* yp = y.data<float>();
  parallel_for(N, 4, [&](int64_t n0, int64_t n1) {
    std::vector<float> row(static_cast<size_t>(K));
    for (int64_t n = n0; n < n1; ++n) {
      const uint32_t* r = qw + n * words;
      for (int64_t j = 0; j < words; ++j)
        for (int i = 0; i < per; ++i) row[size_t(j * per + i)] = float((r[j] >> (bits * i)) & qmask);
      for (int64_t m = 0; m < M; ++m) {
        const float* xm = xp + m * K;
        float acc = 0;
        for (int64_t g = 0; g < G; ++g) {
          float dot = 0;
          for (int64_t k = g * gs; k < (g + 1) * gs; ++k) dot += xm[k] * row[size_t(k)];
          acc += sc[n * G + g] * dot - zs[n * G + g] * xsum[size_t(m * G + g)];
        }
        yp[m * N + n] = acc;
      }
    }
  });
  if (bias)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) yp[m * N + n] += load_as_f32(bias->data(), bias->dtype(), size_t(n));
}

}  // namespace dlx
