#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/linalg.h"

#include <cublas_v2.h>
#include <cusolverDn.h>

#include <algorithm>
#include <climits>
#include <memory>

#include "core/error.h"
#include "kernels/cpu/linalg.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/cuda_check.h"

namespace dlx::cuda {

namespace {

void check_blas(cublasStatus_t s, const char* op) {
  check(s == CUBLAS_STATUS_SUCCESS, "cuda {}: cuBLAS status {} ({})", op, int(s), cublasGetStatusString(s));
}

void check_solver(cusolverStatus_t s, const char* op) {
  check(s == CUSOLVER_STATUS_SUCCESS, "cuda {}: cuSOLVER status {}", op, int(s));
}

int as_int(int64_t v, const char* op) {
  check(v >= 0 && v <= INT_MAX, "cuda {}: dimension {} does not fit cuBLAS's int", op, v);
  return int(v);
}

cublasOperation_t op_of(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

}  // namespace

DenseLinalg::DenseLinalg(cudaStream_t stream, DeviceAllocator& alloc) : stream_(stream), alloc_(alloc) {}

DenseLinalg::~DenseLinalg() {
  if (blas_) (void)cublasDestroy(static_cast<cublasHandle_t>(blas_));
  if (solver_) (void)cusolverDnDestroy(static_cast<cusolverDnHandle_t>(solver_));
}

void DenseLinalg::handles() {
  if (blas_) return;
  cublasHandle_t b = nullptr;
  check_blas(cublasCreate(&b), "cublasCreate");
  blas_ = b;
  check_blas(cublasSetStream(b, stream_), "cublasSetStream");
  check_blas(cublasSetMathMode(b, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");  // no TF32
  cusolverDnHandle_t s = nullptr;
  check_solver(cusolverDnCreate(&s), "cusolverDnCreate");
  solver_ = s;
  check_solver(cusolverDnSetStream(s, stream_), "cusolverDnSetStream");
}

void DenseLinalg::gram(const void* x, bool x_bf16, int64_t t, int64_t k, float* h) {
  if (t == 0 || k == 0) return;
  handles();
  // Only the upper triangle (backend.h), in row panels of kGramPanel rows: panel [i0, i1) x [i0, k) of the row-major
  // h is x[:, i0:i1]^T x[:, i0:k], about half the GEMM work of the whole matrix (55 % for k = 18944). Column-major,
  // x is x^T (k x t, ld k) and that panel is its transpose, (k - i0) x (i1 - i0) at h + i0 * k + i0:
  // x[:, i0:k]^T (rows i0.. of x^T, op N) times x[:, i0:i1] (op T). The panel starts stay 16-byte aligned.
  const float one = 1.0f;
  const cudaDataType dt = x_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const size_t esz = x_bf16 ? 2 : 4;
  const char* xb = static_cast<const char*>(x);
  for (int64_t i0 = 0; i0 < k; i0 += kGramPanel) {
    const int64_t i1 = std::min(k, i0 + kGramPanel);
    const void* xi = xb + size_t(i0) * esz;
    check_blas(cublasGemmEx(static_cast<cublasHandle_t>(blas_), CUBLAS_OP_N, CUBLAS_OP_T, as_int(k - i0, "gram"),
                            as_int(i1 - i0, "gram"), as_int(t, "gram"), &one, xi, dt, as_int(k, "gram"), xi, dt,
                            as_int(k, "gram"), &one, h + i0 * k + i0, CUDA_R_32F, as_int(k, "gram"),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "gram_accumulate");
  }
}

void DenseLinalg::gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                       int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  handles();
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a row-major buffer read column-major is
  // the transpose: so B goes first, each with its own transpose flag.
  check_blas(cublasSgemm(static_cast<cublasHandle_t>(blas_), op_of(trans_b), op_of(trans_a), as_int(n, "gemm_f32"),
                         as_int(m, "gemm_f32"), as_int(k, "gemm_f32"), &alpha, b, as_int(ldb, "gemm_f32"), a,
                         as_int(lda, "gemm_f32"), &beta, c, as_int(ldc, "gemm_f32")),
             "gemm_f32");
}

bool DenseLinalg::hinv_upper(double* h, int64_t n) {
  if (n == 0) return true;
  handles();
  const int ni = as_int(n, "cholesky_inverse_upper");
  const size_t bytes = size_t(n) * size_t(n) * sizeof(double);
  cpu_hinv_reverse(h, n);
  std::shared_ptr<void> a = alloc_.activation(bytes, "cholesky_inverse_upper");
  double* da = static_cast<double*>(a.get());
  check_cuda(cudaMemcpyAsync(da, h, bytes, cudaMemcpyHostToDevice, stream_), "cholesky_inverse_upper");
  auto solver = static_cast<cusolverDnHandle_t>(solver_);
  // Column-major upper on the row-major buffer = its row-major lower triangle (as LAPACK on the CPU).
  int lwork = 0;
  check_solver(cusolverDnDpotrf_bufferSize(solver, CUBLAS_FILL_MODE_UPPER, ni, da, ni, &lwork), "potrf");
  size_t tri_dev = 0, tri_host = 0;
  check_solver(cusolverDnXtrtri_bufferSize(solver, CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_64F, da, n,
                                           &tri_dev, &tri_host),
               "trtri");
  std::shared_ptr<void> work =
      alloc_.activation(std::max(size_t(lwork) * sizeof(double), tri_dev) + 16, "cholesky_inverse_upper");
  std::shared_ptr<void> info = alloc_.activation(sizeof(int), "cholesky_inverse_upper");
  std::unique_ptr<char[]> host_work(new char[std::max<size_t>(tri_host, 1)]);
  int hinfo = 0;
  check_solver(cusolverDnDpotrf(solver, CUBLAS_FILL_MODE_UPPER, ni, da, ni, static_cast<double*>(work.get()), lwork,
                                static_cast<int*>(info.get())),
               "potrf");
  check_cuda(cudaMemcpyAsync(&hinfo, info.get(), sizeof(int), cudaMemcpyDeviceToHost, stream_), "potrf");
  check_cuda(cudaStreamSynchronize(stream_), "potrf");
  if (hinfo != 0) return false;
  check_solver(cusolverDnXtrtri(solver, CUBLAS_FILL_MODE_UPPER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_64F, da, n,
                                work.get(), tri_dev, host_work.get(), tri_host, static_cast<int*>(info.get())),
               "trtri");
  check_cuda(cudaMemcpyAsync(&hinfo, info.get(), sizeof(int), cudaMemcpyDeviceToHost, stream_), "trtri");
  check_cuda(cudaMemcpyAsync(h, da, bytes, cudaMemcpyDeviceToHost, stream_), "cholesky_inverse_upper");
  check_cuda(cudaStreamSynchronize(stream_), "cholesky_inverse_upper");
  if (hinfo != 0) return false;
  return cpu_hinv_finish(h, n);
}

}  // namespace dlx::cuda
#endif  // DIFFULEX_HAVE_CUDA
