// CPU dense matmul: y[M, N] = x[M, K] · W[N, K]^T (+ bias), x and y F32, W as stored (BF16, F16 or F32). Threads
// split N.
//  - AVX2 (cpu_has_avx2()): the cache-blocked panel engine the W4A16 matmul uses (cpu/panel_avx2.h): 6 weight
//    rows x 256 columns at a time widened into a per-thread scratch that stays in L1, each against every row of
//    x in the engine's dot form (DotTiles: tiles of 4 rows of x x 3 weight rows, 8 lane sums per output carried
//    from slice to slice). The weight streams from memory once per call, start to end when x fits in L2.
//  - portable: kPanelRows rows of the weight widened over all of K, each against every row of x.
// Each path sums an output in one fixed order whatever M (AVX2: that of a plain 8-wide dot product, lane j over
// the columns k = j mod 8, then across the lanes, then the columns past the last multiple of 8; portable: 4
// partial sums): a row of y does not depend on the other rows of x, so a sequence's logits are the same alone or
// in a batch (tests/engine/golden_test.cc, LogitRowsSelectSameValues; tests/engine/batch_scheduler_test.cc). The
// engine's k-major form, which W4A16 takes, is up to ~1.2x faster at large M but sums a row differently by where
// it falls in x, so dense does not take it. Measurements: docs/PERFORMANCE.md, "CPU dense matmul".
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace dlx {

constexpr int kPanelRows = 4;

// Auto: AVX2 when cpu_has_avx2(). Avx2 on a CPU without AVX2/FMA is an Error (tests and benchmarks force paths).
enum class MatmulPath { Auto, Portable, Avx2 };

void cpu_matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, MatmulPath path = MatmulPath::Auto);

namespace matmul_impl {
// The portable steps (the W4A16 matmul's portable panel strategy uses panel_ref too).
// Widens `rows` rows of K elements of w (dtype t) starting at row n0 into panel (row-major, stride K).
void widen_ref(const void* w, DType t, int64_t n0, int rows, int64_t K, float* panel);
// y[m, n0 + r] = dot(x[m], panel[r]) for m < M, r < rows (y row stride ldy).
void panel_ref(const float* x, int64_t M, int64_t K, const float* panel, int rows, float* y, int64_t ldy, int64_t n0);
// The AVX2 path: y[:, n] for n in [n0, n1) from x [M, K] and w [N, K] of dtype t (y row stride ldy).
void rows_avx2(const float* x, int64_t M, const void* w, DType t, int64_t K, int64_t n0, int64_t n1, float* y,
               int64_t ldy);
}  // namespace matmul_impl

}  // namespace dlx
