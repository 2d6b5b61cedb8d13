// Dense GEMM through cuBLASLt: y[M, N] = x[M, K] · w[N, K]^T, everything row-major as the rest of the engine.
// In cuBLAS's column-major terms that is y^T (N x M) = w (N x K, the row-major [N, K] buffer read transposed)
// times x^T (K x M): the "TN" case, cuBLASLt's fastest layout. bf16 operands accumulate in fp32 (the bias, when
// given in bf16, is added by the epilogue); fp32 operands (dense --dequant-cache weights) use fp32 compute.
// Descriptors are cached per (shape, dtype, bias, pointer alignment). The algorithm is picked by timing the
// heuristic's top 32 candidates on the call's own operands (at M = 288 the tile shapes differ by 10-30%), once per
// M bucket (tuner_key.h: the power of two up to 64, then M rounded up to 64 or 32 rows, so that every M of a bucket has
// the same token tiles) and the rest of the key: decoding calls the LM head with a different row count nearly every
// step, and timing each new M cost ~10 ms on the Dream-7B head. Another M of the bucket reuses the tuned algorithm
// when cuBLASLt accepts it for that M (else it is timed too).
// DIFFULEX_CUDA_GEMM_TUNE=0 takes the heuristic's first choice instead.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

namespace dlx::cuda {

class DeviceAllocator;

class Gemm {
 public:
  Gemm(cudaStream_t stream, DeviceAllocator& alloc);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // bf16 x, w, y; bias bf16 [N] or null.
  void bf16(const void* x, const void* w, const void* bias, void* y, int64_t M, int64_t N, int64_t K);
  // f32 x, w, y (no bias).
  void f32(const float* x, const float* w, float* y, int64_t M, int64_t N, int64_t K);
  // Timed algorithm choice as the environment says (on: unless DIFFULEX_CUDA_GEMM_TUNE=0) or off (the heuristic's
  // first choice: the same algorithm, hence the same rounding, in every run). Drops the plans made so far.
  void set_tune(bool on);

 private:
  struct Plan;
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, int>;  // M, N, K, dtype, bias, alignment
  Plan& plan(const Key& key, const void* x, const void* w, const void* bias, void* y);
  void launch(Plan& p, const cublasLtMatmulAlgo_t& algo, const void* x, const void* w, const void* bias, void* y,
              cublasStatus_t* status);
  void run(const Key& key, const void* x, const void* w, const void* bias, void* y);

  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  std::shared_ptr<void> workspace_;
  size_t workspace_bytes_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  std::map<Key, cublasLtMatmulAlgo_t> tuned_;  // by M bucket (tuner_key.h)
  bool tune_env_ = true, tune_ = true;
  cudaEvent_t ev_start_ = nullptr, ev_stop_ = nullptr;
};

}  // namespace dlx::cuda
