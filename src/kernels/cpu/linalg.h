// The CPU backend's dense linear algebra for the quantizer (backend.h: gram_accumulate, gemm_f32,
// cholesky_inverse_upper), on OpenBLAS (Debian libopenblas-dev: blocked, multithreaded BLAS and LAPACK).
#pragma once
#include <cstdint>

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

}  // namespace dlx
