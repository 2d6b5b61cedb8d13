// CPU low-bit matmul on a PackedWeight (kernels/packed_weight.h): y[M, N] = x[M, K] · W^T (+ bias), x and y F32,
// W[n, k] = s * q - zs per (row, group), fp32 accumulation. The weight stays packed in memory; threads split N.
//
// Two strategies, both in the portable and the AVX2/FMA path:
//  - fused (M <= kQFusedMaxRows, the small-M steps of diffusion decoding): codes are unpacked in registers and
//    never stored; per row n and group g,  acc = dot(x_g, q_g)  and  y += s * acc - zs * sum(x_g), with the
//    per-group sums of x computed once per call. The packed weight is read once per call. AVX2: the rows of x
//    in blocks of at most 4 against tiles of 3 or 4 output rows, so a word is unpacked once per block and a
//    loaded vector of x feeds 3-4 FMAs.
//  - panel (larger M): a few output rows are dequantized (s*q - zs) into a per-thread F32 scratch that stays
//    in cache and multiplied with every row of x, so each group block is unpacked once per call and reused
//    across all rows of x. Portable: 4 rows over all of K, through the dense matmul's panel kernel
//    (cpu/matmul.h). AVX2: the panel engine the dense matmul shares (cpu/panel_avx2.h: 6 rows x 256 columns
//    at a time against x rearranged once per call into k-major tiles of 16 rows, a register-blocked 6 x 16
//    kernel), fed slices dequantized in block order (below: one AND, one conversion and one FMA per 8
//    weights). Past 16 rows, a remainder of 1-4 rows (M % 8) is not padded to 8 but takes the fused strategy
//    (Args::fused_m0).
// Act-order weights (perm defined) gather x[:, perm] once per call. The AVX2 path needs group_size % 8 == 0
// and 4 or 8 bits; other weights (e.g. group_size 1) take the portable path.
// Measurements and the choice of the boundaries: docs/PERFORMANCE.md, "CPU W4A16 matmul" and "CPU dense
// matmul"; tests/kernels/qmatmul_ratio_test.cc compares the kernel with the dense bf16 one.
//
// AVX2 fused blocks: with p = 32/bits codes per word, 8 consecutive words of a row (one 256-bit load) hold a
// block of 8p columns; code i of every word is isolated with one AND by the mask (2^bits - 1) << (bits*i),
// which leaves q * 2^(bits*i), and converted to float. x is pre-arranged once per call to match (xt below):
//   xt[m, 8p*b + 8i + j] = x[m, 8p*b + p*j + i] * 2^(-bits*i)     (i < p - 1; the top code is shifted down
// instead, since q << 28 would be negative, so its x is not scaled). Power-of-two scaling is exact, so each
// product is the same as x * q. Needs group_size % (8p) == 0; otherwise one word is broadcast per 8 columns.
// The panel's dequantization uses the same block order with the scale divided by 2^(bits*i) instead (exact
// too), and the panel's k-major x (cpu/panel.h) holds x's columns in that order, unscaled.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/panel.h"
#include "kernels/packed_weight.h"

namespace dlx {

constexpr int64_t kQFusedMaxRows = 12;

enum class QMatmulPath { Auto, Portable, Avx2 };

// Auto picks AVX2 when cpu_has_avx2() and the weight allows it. Asking for Avx2 on a weight or CPU that cannot
// take it is an Error.
void cpu_qmatmul(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y,
                 QMatmulPath path = QMatmulPath::Auto);

namespace qmatmul_impl {

// One call's operands after the shared preparation (x permuted, per-group sums of x).
struct Args {
  const float* x;     // [M, K] in kernel column order
  const float* xsum;  // [M, G] sums of x over each group (rows the fused strategy takes)
  const float* xt;    // [M, K] x in the AVX2 block order above (rows the fused strategy takes), or null
  panel::PanelX panel;  // rows [0, fused_m0) of x in k-major tiles (cpu/panel.h) for the AVX2 panel strategy
  bool block_order;   // the weight's group size allows the AVX2 block order; xt and the panel's x are in it
  int64_t fused_m0;   // rows [fused_m0, M) take the fused strategy (xsum, xt set for them), [0, fused_m0) the panel
  int64_t M, K, G, group_size;
  int bits;
  const uint32_t* qweight;  // [N, words]
  int64_t words;
  const float* scales;  // [N, G]
  const float* zeros;   // [N, G]
  float* y;             // [M, N]
  int64_t ldy;          // = N
};

// Computes y[:, n0:n1) (all M rows). n0 is a multiple of kPanelRows.
void rows_ref(const Args& a, int64_t n0, int64_t n1);
void rows_avx2(const Args& a, int64_t n0, int64_t n1);
bool avx2_supports(const PackedWeight& w);
// Columns per AVX2 fused block: 8 words.
inline int64_t block_columns(int bits) { return 8 * (32 / bits); }

}  // namespace qmatmul_impl

}  // namespace dlx
