#include "kernels/cpu/linalg.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstddef>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

// LAPACK (OpenBLAS ships it), Fortran calling convention: column-major, arguments by pointer, hidden string lengths.
extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda, int* info, size_t uplo_len,
             size_t diag_len);
}

namespace dlx {

namespace {

int blas_int(int64_t v, const char* what) {
  check(v >= 0 && v <= INT_MAX, "cpu linear algebra: {} = {} does not fit the BLAS integer", what, v);
  return int(v);
}

}  // namespace

void cpu_gram_accumulate(const float* x, int64_t t, int64_t k, float* h) {
  if (t == 0 || k == 0) return;
  // Row-major upper triangle of x^T x (x is [t, k], op = transpose).
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, blas_int(k, "k"), blas_int(t, "rows"), 1.0f, x,
              blas_int(k, "k"), 1.0f, h, blas_int(k, "k"));
}

void cpu_gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              blas_int(m, "m"), blas_int(n, "n"), blas_int(k, "k"), alpha, a, blas_int(lda, "lda"), b,
              blas_int(ldb, "ldb"), beta, c, blas_int(ldc, "ldc"));
}

void cpu_hinv_reverse(double* h, int64_t n) {
  const int64_t nn = n * n;
  // Swap pairs (i, nn - 1 - i) for i < nn / 2, in parallel.
  parallel_for(nn / 2, 1 << 16, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) std::swap(h[i], h[nn - 1 - i]);
  });
}

bool cpu_hinv_finish(double* h, int64_t n) {
  std::atomic<bool> finite{true};
  parallel_for(n, 64, [&](int64_t i0, int64_t i1) {
    bool ok = true;
    for (int64_t i = i0; i < i1; ++i) {
      double* row = h + i * n;
      for (int64_t j = 0; j <= i; ++j) ok = ok && std::isfinite(row[j]);
      std::fill(row + i + 1, row + n, 0.0);  // the strict upper triangle still holds J h J
    }
    if (!ok) finite.store(false);
  });
  cpu_hinv_reverse(h, n);  // U = J L^{-1} J
  return finite.load();
}

double cpu_dot_f64(const float* a, const float* b, int64_t n) {
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> part(size_t(std::max<int64_t>(blocks, 1)), 0.0);
  parallel_for(blocks, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t bi = b0; bi < b1; ++bi) {
      double s = 0;
      const int64_t e = std::min(n, (bi + 1) * kBlock);
      for (int64_t i = bi * kBlock; i < e; ++i) s += double(a[i]) * double(b[i]);
      part[size_t(bi)] = s;
    }
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

void cpu_column_abs_sum(const float* x, int64_t t, int64_t k, double* sum) {
  // Channels split over threads; each channel's sum runs over the rows in order.
  parallel_for(k, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < t; ++r)
      for (int64_t c = c0; c < c1; ++c) sum[c] += std::fabs(double(x[r * k + c]));
  });
}

bool cpu_cholesky_inverse_upper(double* h, int64_t n) {
  if (n == 0) return true;
  const int ni = blas_int(n, "n");
  cpu_hinv_reverse(h, n);  // J h J
  // Column-major 'U' on a row-major buffer is its row-major lower triangle: J h J = L L^T, then L^{-1} in place.
  int info = 0;
  dpotrf_("U", &ni, h, &ni, &info, 1);
  if (info != 0) return false;
  dtrtri_("U", "N", &ni, h, &ni, &info, 1, 1);
  if (info != 0) return false;
  return cpu_hinv_finish(h, n);
}

}  // namespace dlx
