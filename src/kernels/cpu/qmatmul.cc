#include "kernels/cpu/qmatmul.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"

namespace dlx {

namespace qmatmul_impl {

namespace {

inline uint32_t code_at(const uint32_t* row, int bits, int64_t j) {
  const int per = 32 / bits;
  return (row[j / per] >> (bits * (j % per))) & ((1u << bits) - 1);
}

}  // namespace

bool avx2_supports(const PackedWeight& w) { return (w.bits == 4 || w.bits == 8) && w.group_size % 8 == 0; }

// Portable version of both strategies; any bits dividing 32 and any group size.
void rows_ref(const Args& a, int64_t n0, int64_t n1) {
  const int64_t K = a.K, G = a.G, gs = a.group_size;
  if (a.M <= kQFusedMaxRows) {
    for (int64_t n = n0; n < n1; ++n) {
      const uint32_t* row = a.qweight + n * a.words;
      for (int64_t m = 0; m < a.M; ++m) {
        const float* xm = a.x + m * K;
        float acc = 0;
        for (int64_t g = 0; g < G; ++g) {
          float dot = 0;
          for (int64_t k = g * gs; k < (g + 1) * gs; ++k) dot += xm[k] * float(code_at(row, a.bits, k));
          acc += a.scales[n * G + g] * dot - a.zeros[n * G + g] * a.xsum[m * G + g];
        }
        a.y[m * a.ldy + n] = acc;
      }
    }
    return;
  }
  thread_local std::vector<float> panel;
  panel.resize(size_t(kPanelRows * K));
  for (int64_t p0 = n0; p0 < n1; p0 += kPanelRows) {
    const int rows = int(std::min<int64_t>(kPanelRows, n1 - p0));
    for (int r = 0; r < rows; ++r) {
      const int64_t n = p0 + r;
      const uint32_t* row = a.qweight + n * a.words;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t g = k / gs;
        panel[size_t(r * K + k)] = a.scales[n * G + g] * float(code_at(row, a.bits, k)) - a.zeros[n * G + g];
      }
    }
    matmul_impl::panel_ref(a.x, a.M, K, panel.data(), rows, a.y, a.ldy, p0);
  }
}

}  // namespace qmatmul_impl

void cpu_qmatmul(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y, QMatmulPath path) {
  const int64_t M = x.dim(0), K = w.k, N = w.n, G = w.groups(), gs = w.group_size;
  check(x.dtype() == DType::F32 && y.dtype() == DType::F32, "cpu qmatmul: activations must be F32");
  check(x.rank() == 2 && x.dim(1) == K, "cpu qmatmul: input {} does not match the weight's {} input features",
        shape_str(x.shape()), K);
  check(y.rank() == 2 && y.dim(0) == M && y.dim(1) == N, "cpu qmatmul: output {} should be [{}, {}]",
        shape_str(y.shape()), M, N);
  check(32 % w.bits == 0 && gs > 0 && K % gs == 0 && K % (32 / w.bits) == 0,
        "cpu qmatmul: packed weight with {} bits, K {} and group size {} is not valid", w.bits, K, gs);
  bool avx2 = path != QMatmulPath::Portable && cpu_has_avx2() && qmatmul_impl::avx2_supports(w);
  if (path == QMatmulPath::Avx2)
    check(avx2, "cpu qmatmul: the AVX2 path needs an AVX2/FMA CPU, 4 or 8 bits and a group size multiple of 8");

  // Act-order: xp[:, j] = x[:, perm[j]], once per call.
  const float* xp = x.data<float>();
  thread_local std::vector<float> xperm, xsum, xt, xkm;
  thread_local std::vector<int64_t> xsource;
  if (w.perm.defined()) {
    xperm.resize(size_t(M * K));
    const int32_t* perm = w.perm.data<int32_t>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t j = 0; j < K; ++j) xperm[size_t(m * K + j)] = xp[m * K + perm[j]];
    xp = xperm.data();
  }
  // Rows [fused_m0, M) take the fused strategy, rows [0, fused_m0) the panel one: all of M up to kQFusedMaxRows;
  // above, the AVX2 panel tiles take rows in multiples of 8, and past 16 rows a remainder of 1 to 4 rows is
  // cheaper fused than padded to 8 (M = 17 padded costs as M = 24, 1.15x more than 16 panel rows + 1 fused
  // row; below 16 the padded 16-row tile wins).
  const int64_t rem = M % 8;
  const int64_t fused_m0 = M <= kQFusedMaxRows                     ? 0
                           : avx2 && M > 16 && rem >= 1 && rem <= 4 ? M - rem
                                                                    : M;
  // Per-group sums of x, for the fused strategy's zero-point term.
  xsum.assign(size_t(M * G), 0.0f);
  for (int64_t m = fused_m0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      float s = 0;
      for (int64_t k = g * gs; k < (g + 1) * gs; ++k) s += xp[m * K + k];
      xsum[size_t(m * G + g)] = s;
    }
  // The AVX2 fused blocks and panel tiles read x with its columns in block order (see qmatmul.h) when the group
  // size allows: column B*b + 8*i + j holds x[:, B*b + per*j + i].
  const int64_t B = qmatmul_impl::block_columns(w.bits);
  const int per = 32 / w.bits;
  const bool block_order = avx2 && gs % B == 0;
  const bool blocks = block_order && fused_m0 < M;
  if (blocks) {
    xt.resize(size_t(M * K));
    for (int64_t m = fused_m0; m < M; ++m)
      for (int64_t b = 0; b < K; b += B)
        for (int i = 0; i < per; ++i) {
          const float scale = i == per - 1 ? 1.0f : std::ldexp(1.0f, -w.bits * i);
          for (int j = 0; j < 8; ++j) xt[size_t(m * K + b + 8 * i + j)] = xp[m * K + b + per * j + i] * scale;
        }
  }
  // The AVX2 panel strategy reads x in k-major tiles (cpu/panel.h), its columns in the same order.
  panel::PanelX px{};
  if (avx2 && fused_m0 > 0) {
    std::vector<int64_t>& source = xsource;  // the column of x each kernel column holds
    source.resize(size_t(K));
    for (int64_t k = 0; k < K; ++k) source[size_t(k)] = k;
    if (block_order)
      for (int64_t b = 0; b < K; b += B)
        for (int i = 0; i < per; ++i)
          for (int j = 0; j < 8; ++j) source[size_t(b + 8 * i + j)] = b + per * j + i;
    px = panel::arrange_kmajor(xp, fused_m0, K, source.data(), xkm);
  }
  qmatmul_impl::Args a{xp,
                       xsum.data(),
                       blocks ? xt.data() : nullptr,
                       px,
                       block_order,
                       fused_m0,
                       M,
                       K,
                       G,
                       gs,
                       w.bits,
                       reinterpret_cast<const uint32_t*>(w.qweight.data()),
                       w.words_per_row(),
                       w.scales.data<float>(),
                       w.zeros.data<float>(),
                       y.data<float>(),
                       N};
  const int64_t tiles = (N + kPanelRows - 1) / kPanelRows;
  parallel_for(tiles, 4, [&](int64_t t0, int64_t t1) {
    const int64_t n0 = t0 * kPanelRows, n1 = std::min(N, t1 * kPanelRows);
    if (avx2)
      qmatmul_impl::rows_avx2(a, n0, n1);
    else
      qmatmul_impl::rows_ref(a, n0, n1);
  });
  if (bias) {
    float* yp = y.data<float>();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) yp[m * N + n] += load_as_f32(bias->data(), bias->dtype(), size_t(n));
  }
}

}  // namespace dlx
