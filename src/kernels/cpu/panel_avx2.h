// The cache-blocked panel engine of the CPU matmuls, AVX2 + FMA: y[m, n] = sum_k x[m, k] * W[n, k] for the
// output rows n in [n0, n1). W is produced slice by slice by a loader: the W4A16 matmul's dequantizes packed
// codes (cpu/qmatmul_avx2.cc), the dense matmul's widens bf16 / f16 / f32 (cpu/matmul_avx2.cc); x is taken by a
// form (below): W4A16 the k-major one, dense the dot one. The blocking, the scratch and the prefetch schedule
// (panel_rows, at the end) are this one piece of code. A few output rows' weights (kRowsW x kColsW, 6 KB of F32)
// are loaded into a per-thread scratch that stays in L1 and multiplied with every row of x, so each weight
// element is loaded (dequantized, widened) once per call and reused across all rows of x, whatever the weight's
// storage (docs/PERFORMANCE.md, "CPU dense matmul"). Include only from files compiled with -mavx2 -mfma.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/panel.h"

namespace dlx::panel {

// The weight scratch: kRowsW output rows x kColsW kernel columns, row stride kColsW.
constexpr int kRowsW = 6;
constexpr int64_t kColsW = 256;

// The weights' side: kRowsW output rows x kColsW kernel columns at a time, loaded (dequantized, widened) by the
// caller's loader into a per-thread F32 scratch (6 KB, L1). The loader: load(n, rows, k0, kc, w) writes the
// weight rows [n, n + rows) (rows <= kRowsW), kernel columns [k0, k0 + kc) (kc a multiple of 8; columns past K
// as zeros), as F32 to w + r * kColsW (64-byte aligned); row(n) is where weight row n's storage starts,
// row_bytes its size, and bytes(k) the bytes of k columns (for the prefetch of the next slice).
//
// The x side, the form: how a loaded block multiplies the rows of x and how its sums become y. Two forms:
//  - KMajorTiles: x in k-major tiles (panel.h), one sum per output, the register-blocked 6 x 16 outer-product
//    kernel below (per k: two loads of x, six broadcast weights, twelve FMAs). Up to ~1.2x faster than DotTiles
//    at large M; each output's summation order depends on the tile its row falls in (16 or 8 rows).
//  - DotTiles: x as it is (row-major), 8 lane sums per output (lane j: the columns k = j mod 8, in order),
//    carried from slice to slice, then added across the lanes and the columns past the last multiple of 8
//    added one by one: the order of a plain 8-wide dot product, the same for every row whatever M (so a row of
//    y does not depend on the other rows of x). Tiles of 4 rows of x x 3 weight rows (per 8 columns 7 loads,
//    12 FMAs), 2 x 6 and 1 x 6 for the last rows.
// A form has: kChunkM (rows of x per chunk), kSums (floats of sums per output), rows() and cols() (the rows of
// x and the kernel columns the slices cover), block(w, k0, kc, mc, mc1, c, ldc) (adds the block's products for
// x rows [mc, mc1) to c: weight row r, x row m at c + (r * ldc + m - mc) * kSums) and finish(...) (y from the
// sums of output rows [nc, nc1) and x rows [mc, mc1)).

// c[r, 0:8V] += sum_k w[r, k] * xp[k, 0:8V] for r < 6, xp one tile of the k-major x (8V rows of x): per k, V
// loads of x, six broadcast weights and 6V FMAs. With V = 1 the even and odd k accumulate apart, so that 12
// independent FMA chains hide the FMA latency as the 6 x 16 tile's 12 do. kc is even.
template <int V>
inline void micro_6xv(const float* xp, const float* w, int64_t kc, float* c, int64_t ldc) {
  constexpr int S = V == 1 ? 2 : 1;  // accumulator sets
  __m256 acc[S][kRowsW][V];
  for (int r = 0; r < kRowsW; ++r)
    for (int v = 0; v < V; ++v) {
      acc[0][r][v] = _mm256_load_ps(c + r * ldc + 8 * v);
      if constexpr (S == 2) acc[1][r][v] = _mm256_setzero_ps();
    }
  for (int64_t k = 0; k < kc; k += S)
    for (int s = 0; s < S; ++s) {
      __m256 xv[V];
      for (int v = 0; v < V; ++v) xv[v] = _mm256_load_ps(xp + (k + s) * 8 * V + 8 * v);
      for (int r = 0; r < kRowsW; ++r) {
        const __m256 wv = _mm256_broadcast_ss(w + r * kColsW + k + s);
        for (int v = 0; v < V; ++v) acc[s][r][v] = _mm256_fmadd_ps(wv, xv[v], acc[s][r][v]);
      }
    }
  for (int r = 0; r < kRowsW; ++r)
    for (int v = 0; v < V; ++v) {
      __m256 sum = acc[0][r][v];
      if constexpr (S == 2) sum = _mm256_add_ps(sum, acc[1][r][v]);
      _mm256_store_ps(c + r * ldc + 8 * v, sum);
    }
}

struct KMajorTiles {
  static constexpr int64_t kChunkM = 256, kSums = 1;
  const PanelX& x;
  int64_t rows() const { return x.mp; }
  int64_t cols() const { return x.kp; }
  void block(const float* w, int64_t k0, int64_t kc, int64_t mc, int64_t mc1, float* cn, int64_t ldc) const {
    for (int64_t m = mc; m < mc1; m += kPanelM) {
      const float* xp = x.xkm + m * x.kp;  // the tile of rows [m, m + 16), k-major (panel.h)
      if (mc1 - m >= kPanelM)
        micro_6xv<2>(xp + k0 * kPanelM, w, kc, cn + (m - mc), ldc);
      else
        micro_6xv<1>(xp + k0 * (mc1 - m), w, kc, cn + (m - mc), ldc);
    }
  }
  template <class Loader>
  void finish(const float* c, int64_t ldc, int64_t nc, int64_t nc1, int64_t mc, int64_t mc1, const Loader&, float* y,
              int64_t ldy) const {
    for (int64_t m = mc; m < std::min(x.m, mc1); ++m)
      for (int64_t n = nc; n < nc1; ++n) y[m * ldy + n] = c[size_t((n - nc) * ldc + (m - mc))];
  }
};

// acc[(r * ldc + i) * 8 + j] += sum over the columns k = j mod 8 of x[i, k] * w[r, k], for MR rows of x (row
// stride K) and NR rows of w.
template <int MR, int NR>
inline void micro_dot(const float* x, int64_t K, const float* w, int64_t kc, float* acc, int64_t ldc) {
  __m256 a[MR][NR];
  for (int r = 0; r < NR; ++r)
    for (int i = 0; i < MR; ++i) a[i][r] = _mm256_load_ps(acc + (r * ldc + i) * 8);
  for (int64_t k = 0; k < kc; k += 8) {
    __m256 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = _mm256_load_ps(w + r * kColsW + k);
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * K + k);
      for (int r = 0; r < NR; ++r) a[i][r] = _mm256_fmadd_ps(xv, wv[r], a[i][r]);
    }
  }
  for (int r = 0; r < NR; ++r)
    for (int i = 0; i < MR; ++i) _mm256_store_ps(acc + (r * ldc + i) * 8, a[i][r]);
}

// The loader also gives tail(n, k): weight row n's column k as F32, for the columns past the last multiple of 8.
struct DotTiles {
  static constexpr int64_t kChunkM = 32, kSums = 8;
  const float* x;  // [M, K]
  int64_t M, K;
  int64_t rows() const { return M; }
  int64_t cols() const { return K / 8 * 8; }
  void block(const float* w, int64_t k0, int64_t kc, int64_t mc, int64_t mc1, float* cn, int64_t ldc) const {
    int64_t m = mc;
    for (; m + 4 <= mc1; m += 4)
      for (int h = 0; h < 2; ++h)  // the block's weight rows 0-2, then 3-5
        micro_dot<4, 3>(x + m * K + k0, K, w + h * 3 * kColsW, kc, cn + (h * 3 * ldc + m - mc) * 8, ldc);
    for (; m + 2 <= mc1; m += 2) micro_dot<2, 6>(x + m * K + k0, K, w, kc, cn + (m - mc) * 8, ldc);
    if (m < mc1) micro_dot<1, 6>(x + m * K + k0, K, w, kc, cn + (m - mc) * 8, ldc);
  }
  template <class Loader>
  void finish(const float* c, int64_t ldc, int64_t nc, int64_t nc1, int64_t mc, int64_t mc1, const Loader& loader,
              float* y, int64_t ldy) const {
    for (int64_t n = nc; n < nc1; ++n)
      for (int64_t m = mc; m < mc1; ++m) {
        float s = avx2::hsum(_mm256_load_ps(c + ((n - nc) * ldc + m - mc) * 8));
        for (int64_t k = cols(); k < K; ++k) s += x[m * K + k] * loader.tail(n, k);
        y[m * ldy + n] = s;
      }
  }
};

// The engine, blocked for the caches: chunks of output rows x up to Form::kChunkM rows of x share one scratch
// of sums (at most 96 KB); inside a chunk, each 256-column slice of x (kept in L2) is multiplied with every
// 6-row block of weights, loaded once per slice (6 KB, L1). When all of x fits in L2 a chunk is a single 6-row
// block, so each weight row is read start to end (prefetch friendly); otherwise 16 blocks share each slice of x,
// which then comes from L2 rather than L3.
constexpr int64_t kChunkN = 16 * kRowsW, kL2Bytes = 512 * 1024;

template <class Form, class Loader>
void panel_rows(const Form& form, const Loader& loader, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  thread_local std::vector<float> wbuf, cbuf;
  float* w = aligned_scratch(wbuf, size_t(kRowsW * kColsW));
  float* c = aligned_scratch(cbuf, size_t(kChunkN * Form::kChunkM * Form::kSums));
  const int64_t K = form.cols(), M = form.rows(), ldc = std::min(Form::kChunkM, M);
  const int64_t chunk_n = K * M * int64_t(sizeof(float)) <= kL2Bytes ? kRowsW : kChunkN;
  for (int64_t nc = n0; nc < n1; nc += chunk_n) {
    const int64_t nc1 = std::min(n1, nc + chunk_n);
    const int64_t blocks = (nc1 - nc + kRowsW - 1) / kRowsW * kRowsW;  // rows of sums, missing rows included
    for (int64_t mc = 0; mc < M; mc += Form::kChunkM) {
      const int64_t mc1 = std::min(M, mc + Form::kChunkM);
      std::fill(c, c + blocks * ldc * Form::kSums, 0.0f);
      for (int64_t k0 = 0; k0 < K; k0 += kColsW) {
        const int64_t kc = std::min(kColsW, K - k0);
        for (int64_t n = nc; n < nc1; n += kRowsW) {
          const int rows = int(std::min<int64_t>(kRowsW, nc1 - n));
          if (rows < kRowsW) std::fill(w, w + kRowsW * kColsW, 0.0f);  // missing rows multiply as zeros
          loader.load(n, rows, k0, kc, w);
          // The same rows' next slice is needed 16 blocks from now: many rows at a stride defeat the hardware
          // prefetcher, so ask for it now.
          if (k0 + kColsW < K)
            for (int r = 0; r < rows; ++r)
              avx2::prefetch_lines(loader.row(n + r), loader.row_bytes, loader.bytes(k0 + kColsW),
                                   loader.bytes(k0 + 2 * kColsW));
          form.block(w, k0, kc, mc, mc1, c + (n - nc) * ldc * Form::kSums, ldc);
        }
      }
      form.finish(c, ldc, nc, nc1, mc, mc1, loader, y, ldy);
    }
  }
}

}  // namespace dlx::panel
