// CPU dense matmul: y[M, N] = x[M, K] · W[N, K]^T (+ bias), x and y F32, W as stored (BF16, F16 or F32).
// The weight is read in panels of kPanelRows rows: each panel is widened to F32 once into a per-thread
// scratch buffer (cache-resident) and multiplied with every row of x, so the weight streams from memory
// exactly once per call whatever M is. Threads split N.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace dlx {

constexpr int kPanelRows = 4;

void cpu_matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);

// The two implementations of the inner steps, chosen at run time (tests call both).
namespace matmul_impl {
// Widens `rows` rows of K elements of w (dtype t) starting at row n0 into panel (row-major, stride K).
void widen_ref(const void* w, DType t, int64_t n0, int rows, int64_t K, float* panel);
void widen_avx2(const void* w, DType t, int64_t n0, int rows, int64_t K, float* panel);
// y[m, n0 + r] = dot(x[m], panel[r]) for m < M, r < rows (y row stride ldy).
void panel_ref(const float* x, int64_t M, int64_t K, const float* panel, int rows, float* y, int64_t ldy, int64_t n0);
void panel_avx2(const float* x, int64_t M, int64_t K, const float* panel, int rows, float* y, int64_t ldy, int64_t n0);
}  // namespace matmul_impl

}  // namespace dlx
