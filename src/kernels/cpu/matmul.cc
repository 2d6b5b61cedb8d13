#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"

namespace dlx {

namespace matmul_impl {

void widen_ref(const void* w, DType t, int64_t n0, int rows, int64_t K, float* panel) {
  for (int r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) panel[r * K + k] = load_as_f32(w, t, size_t((n0 + r) * K + k));
}

void panel_ref(const float* x, int64_t M, int64_t K, const float* panel, int rows, float* y, int64_t ldy, int64_t n0) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xm = x + m * K;
    for (int r = 0; r < rows; ++r) {
      const float* wr = panel + r * K;
      // Four partial sums: independent chains the compiler can keep in flight.
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t k = 0;
      for (; k + 4 <= K; k += 4) {
        s0 += xm[k] * wr[k];
        s1 += xm[k + 1] * wr[k + 1];
        s2 += xm[k + 2] * wr[k + 2];
        s3 += xm[k + 3] * wr[k + 3];
      }
      for (; k < K; ++k) s0 += xm[k] * wr[k];
      y[m * ldy + n0 + r] = (s0 + s1) + (s2 + s3);
    }
  }
}

}  // namespace matmul_impl

void cpu_matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, MatmulPath path) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  check(x.dtype() == DType::F32 && y.dtype() == DType::F32, "cpu matmul: activations must be F32");
  check(w.rank() == 2 && w.dim(1) == K, "cpu matmul: weight {} does not match input {}", shape_str(w.shape()),
        shape_str(x.shape()));
  check(y.dim(0) == M && y.dim(1) == N, "cpu matmul: output {} should be [{}, {}]", shape_str(y.shape()), M, N);
  const bool avx2 = path != MatmulPath::Portable && cpu_has_avx2();
  if (path == MatmulPath::Avx2) check(avx2, "cpu matmul: the AVX2 path needs an AVX2/FMA CPU");
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  const int64_t panels = (N + kPanelRows - 1) / kPanelRows;
  parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
    const int64_t n0 = p0 * kPanelRows, n1 = std::min(N, p1 * kPanelRows);
    if (avx2) {
      matmul_impl::rows_avx2(xp, M, w.data(), w.dtype(), K, n0, n1, yp, N);
      return;
    }
    thread_local std::vector<float> panel;
    panel.resize(size_t(kPanelRows * K));
    for (int64_t n = n0; n < n1; n += kPanelRows) {
      const int rows = int(std::min<int64_t>(kPanelRows, n1 - n));
      matmul_impl::widen_ref(w.data(), w.dtype(), n, rows, K, panel.data());
      matmul_impl::panel_ref(xp, M, K, panel.data(), rows, yp, N, n);
    }
  });
  if (bias) {
    const void* b = bias->data();
    DType bt = bias->dtype();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) yp[m * N + n] += load_as_f32(b, bt, size_t(n));
  }
}

}  // namespace dlx
