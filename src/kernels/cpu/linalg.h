// The CPU backend's dense linear algebra for the quantizer (backend.h: gram_accumulate, gemm_f32,
// cholesky_inverse_upper), on OpenBLAS (Debian libopenblas-dev: blocked, multithreaded BLAS and LAPACK).
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"

namespace dlx {

// h [k, k] upper triangle += x^T x for x F32 [t, k] (row-major).
void cpu_gram_accumulate(const float* x, int64_t t, int64_t k, float* h);

// Row-major c[m, n] = alpha * op(a) op(b) + beta * c (backend.h gemm_f32).
void cpu_gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// In place: U upper with h^{-1} = U^T U. With J the index reversal, J h J = L L^T (Cholesky), so h = R R^T with
// R = J L J upper and U = R^{-1} = J L^{-1} J: one Cholesky factorization and one triangular inverse (LAPACK
// dpotrf, dtrtri). J A J of a row-major n x n matrix is its storage reversed.
bool cpu_cholesky_inverse_upper(double* h, int64_t n);
// Its two host steps around the factorization (shared with the CUDA backend): h -> J h J before; after, with
// L^{-1} in the row-major lower triangle: the strict upper triangle zeroed, then J L^{-1} J. False when L^{-1}
// is not finite.
void cpu_hinv_reverse(double* h, int64_t n);
bool cpu_hinv_finish(double* h, int64_t n);

// out = T(f * double(p)) over the whole symmetric matrix from the upper triangle of `p` ([k, k] row-major; the
// lower triangle of p is not read): backend.h symmetric_scaled for T = float, HessianAccumulator::finish for double.
// In tiles of 64 x 64: the mirrored half reads the transposed tile, which stays in cache, where a plain loop over
// row i would read column i of p with a stride of k floats (for down_proj's k = 18944 a new cache line per element).
template <class T>
void cpu_symmetric_scaled(const float* p, int64_t k, double f, T* out) {
  constexpr int64_t kTile = 64;
  const int64_t tiles = (k + kTile - 1) / kTile;
  parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ++ti) {
      const int64_t i0 = ti * kTile, i1 = std::min(k, i0 + kTile);
      // Upper part of these rows (j >= i): straight.
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = i; j < k; ++j) out[i * k + j] = T(f * double(p[i * k + j]));
      // Lower part (j < i): out[i][j] = p[j][i], tile by tile of columns.
      for (int64_t j0 = 0; j0 < i1; j0 += kTile) {
        const int64_t j1 = std::min(j0 + kTile, i1);
        for (int64_t j = j0; j < j1; ++j)
          for (int64_t i = std::max(i0, j + 1); i < i1; ++i) out[i * k + j] = T(f * double(p[j * k + i]));
      }
    }
  });
}

// backend.h dot_f64 on host arrays: fp64 partial sums over fixed blocks of 4096 elements (in parallel), then the
// partials in order, so the result does not depend on the thread count.
double cpu_dot_f64(const float* a, const float* b, int64_t n);

// backend.h column_abs_sum on a host F32 [t, k] array: sum[c] += |x[r][c]| over the rows in order, fp64.
void cpu_column_abs_sum(const float* x, int64_t t, int64_t k, double* sum);

}  // namespace dlx
