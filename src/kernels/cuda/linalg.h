// The CUDA backend's dense linear algebra for the quantizer (backend.h: gram_accumulate, gemm_f32,
// cholesky_inverse_upper): cuBLAS for the GEMMs (fp32 compute, no TF32: the quantizer's results must match the
// CPU's to rounding), cuSOLVER for the fp64 Cholesky factorization and triangular inverse. Row-major operands are
// handed to the column-major libraries as their transposes.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dlx::cuda {

class DeviceAllocator;

class DenseLinalg {
 public:
  DenseLinalg(cudaStream_t stream, DeviceAllocator& alloc);
  ~DenseLinalg();
  DenseLinalg(const DenseLinalg&) = delete;
  DenseLinalg& operator=(const DenseLinalg&) = delete;

  // h [k, k] F32 += x^T x for x [t, k] (bf16 when x_bf16, else F32): the upper triangle and the diagonal blocks
  // of kGramPanel rows (row panels of the upper triangle, one GEMM each); the rest of h is not touched.
  static constexpr int64_t kGramPanel = 2048;
  void gram(const void* x, bool x_bf16, int64_t t, int64_t k, float* h);
  // Row-major c[m, n] = alpha * op(a) op(b) + beta * c.
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
            const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
  // backend.h cholesky_inverse_upper for a host matrix: the same J L^{-1} J as the CPU (kernels/cpu/linalg.h),
  // with the factorization and the inverse on the GPU.
  bool hinv_upper(double* h, int64_t n);

 private:
  void handles();
  cudaStream_t stream_;
  DeviceAllocator& alloc_;
  void* blas_ = nullptr;    // cublasHandle_t
  void* solver_ = nullptr;  // cusolverDnHandle_t
};

}  // namespace dlx::cuda
