#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/tuner_key.h"

namespace dlx::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what NVIDIA suggests for Hopper
constexpr int kCandidates = 32;                       // heuristic results timed per shape

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuda matmul: cuBLASLt {} failed ({})", what, cublasLtGetStatusString(s));
}

// Largest power of two (<= 256) that divides the address: the alignment the heuristic may assume.
int alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && (a % uintptr_t(al)) != 0) al /= 2;
  return al;
}

}  // namespace

struct Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

Gemm::Gemm(cudaStream_t stream, DeviceAllocator& alloc) : stream_(stream) {
  check_lt(cublasLtCreate(&handle_), "handle creation");
  workspace_ = alloc.weight(kWorkspaceBytes, "matmul workspace");
  workspace_bytes_ = kWorkspaceBytes;
  const char* tune = std::getenv("DIFFULEX_CUDA_GEMM_TUNE");
  tune_env_ = tune_ = !(tune && std::strcmp(tune, "0") == 0);
  check_cuda(cudaEventCreate(&ev_start_), "matmul (timing event)");
  check_cuda(cudaEventCreate(&ev_stop_), "matmul (timing event)");
}

void Gemm::set_tune(bool on) {
  tune_ = on && tune_env_;
  plans_.clear();
  tuned_.clear();
}

Gemm::~Gemm() {
  plans_.clear();
  tuned_.clear();
  if (ev_start_) cudaEventDestroy(ev_start_);
  if (ev_stop_) cudaEventDestroy(ev_stop_);
  if (handle_) cublasLtDestroy(handle_);
}

void Gemm::launch(Plan& p, const cublasLtMatmulAlgo_t& algo, const void* x, const void* w, const void* bias, void* y,
                  cublasStatus_t* status) {
  if (bias)
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
             "BIAS_POINTER");
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t s = cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &algo,
                                          workspace_.get(), workspace_bytes_, stream_);
  if (status)
    *status = s;
  else
    check_lt(s, "matmul");
}

Gemm::Plan& Gemm::plan(const Key& key, const void* x, const void* w, const void* bias, void* y) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  const auto [M, N, K, dt, has_bias, align] = key;
  const bool is_bf16 = dt == 0;
  const cudaDataType_t t = is_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  auto p = std::make_unique<Plan>();
  check_lt(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor creation");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check_lt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "TRANSA");
  check_lt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "TRANSB");
  if (has_bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bt = CUDA_R_16BF;
    check_lt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "EPILOGUE");
    check_lt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt),
             "BIAS_DATA_TYPE");
  }
  // A = w read as column-major K x N (ld K), transposed; B = x as column-major K x M (ld K); C = y as N x M (ld N).
  check_lt(cublasLtMatrixLayoutCreate(&p->a, t, uint64_t(K), uint64_t(N), K), "layout A");
  check_lt(cublasLtMatrixLayoutCreate(&p->b, t, uint64_t(K), uint64_t(M), K), "layout B");
  check_lt(cublasLtMatrixLayoutCreate(&p->c, t, uint64_t(N), uint64_t(M), N), "layout C");

  cublasLtMatmulPreference_t pref = nullptr;
  check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference creation");
  const uint32_t al = uint32_t(align);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                       sizeof workspace_bytes_);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al);
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int found = 0;
  cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, p->desc, p->a, p->b, p->c, p->c, pref,
                                                    tune_ ? kCandidates : 1, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s != CUBLAS_STATUS_SUCCESS || found == 0)
    fail("cuda matmul: cuBLASLt has no algorithm for [{}, {}] x [{}, {}]^T in {} ({})", M, K, N, K,
         is_bf16 ? "bf16" : "f32", cublasLtGetStatusString(s));
  p->algo = results[0].algo;
  Key bucket_key = key;
  std::get<0>(bucket_key) = tuner_m_bucket(M);
  if (found > 1) {
    if (auto t = tuned_.find(bucket_key); t != tuned_.end()) {
      cublasLtMatmulHeuristicResult_t check{};
      if (cublasLtMatmulAlgoCheck(handle_, p->desc, p->a, p->b, p->c, p->c, &t->second, &check) ==
              CUBLAS_STATUS_SUCCESS &&
          check.workspaceSize <= workspace_bytes_) {
        p->algo = t->second;
        return *plans_.emplace(key, std::move(p)).first->second;
      }
    }
    // Time each candidate (one warm-up, then the best of two runs) on this call's operands; y is overwritten by
    // the real call that follows.
    float best = 0;
    for (int i = 0; i < found; ++i) {
      cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
      launch(*p, results[i].algo, x, w, bias, y, &st);
      if (st != CUBLAS_STATUS_SUCCESS) continue;
      float ms = 0;
      for (int r = 0; r < 2; ++r) {
        check_cuda(cudaEventRecord(ev_start_, stream_), "matmul (tuning)");
        launch(*p, results[i].algo, x, w, bias, y, &st);
        check_cuda(cudaEventRecord(ev_stop_, stream_), "matmul (tuning)");
        check_cuda(cudaEventSynchronize(ev_stop_), "matmul (tuning)");
        float t = 0;
        check_cuda(cudaEventElapsedTime(&t, ev_start_, ev_stop_), "matmul (tuning)");
        ms = r == 0 ? t : std::min(ms, t);
      }
      if (st == CUBLAS_STATUS_SUCCESS && (best == 0 || ms < best)) {
        best = ms;
        p->algo = results[i].algo;
      }
    }
    tuned_[bucket_key] = p->algo;
  }
  return *plans_.emplace(key, std::move(p)).first->second;
}

void Gemm::run(const Key& key, const void* x, const void* w, const void* bias, void* y) {
  Plan& p = plan(key, x, w, bias, y);
  launch(p, p.algo, x, w, bias, y, nullptr);
}

void Gemm::bf16(const void* x, const void* w, const void* bias, void* y, int64_t M, int64_t N, int64_t K) {
  if (M == 0 || N == 0) return;
  const int al = std::min({alignment_of(x), alignment_of(w), alignment_of(y)});
  run(Key{M, N, K, 0, bias != nullptr, al}, x, w, bias, y);
}

void Gemm::f32(const float* x, const float* w, float* y, int64_t M, int64_t N, int64_t K) {
  if (M == 0 || N == 0) return;
  const int al = std::min({alignment_of(x), alignment_of(w), alignment_of(y)});
  run(Key{M, N, K, 1, false, al}, x, w, nullptr, y);
}

}  // namespace dlx::cuda
#endif  // DIFFULEX_HAVE_CUDA
