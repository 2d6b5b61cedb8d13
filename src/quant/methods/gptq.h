// GPTQ (Frantar et al. 2022): quantize a linear layer's weight column by column, each rounding error
// compensated on the columns not yet quantized through the inverse Hessian of the layer-wise squared error.
//
//   H = 2/T X^T X (hessian.h); dead inputs (H[i][i] == 0) get H[i][i] = 1 and a zero weight column
//   act-order: columns processed in order of decreasing H[i][i] (g_idx records each input's group)
//   H += damp * mean(diag H) * I;  U = upper Cholesky factor of H^{-1}
//   blocks of B columns: inside a block, column i is rounded (group parameters found from the current, already
//   error-compensated weights when a group starts), err = (w - q) / U[i][i], and w[:, j] -= err * U[i][j] for
//   the block's later columns; after the block the collected errors update all later columns at once.
//   static groups: every group's parameters come from the original weights before any update (so act-order
//   keeps sequential groups, g_idx = k / group_size).
// Blocked (the paper's "lazy batch updates"), left-looking: before block b is quantized, its columns receive the
// errors of every earlier column in one GEMM on the backend, W[:, b] -= E[:, <b] U[<b, b] (W and E are held
// transposed there, so a block is a run of contiguous rows); the block itself (B^2/2 per row) runs on the host,
// rows in parallel. The Cholesky factorization and inverse run on the backend too (cholesky_inverse_upper).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "formats/quant_codes.h"
#include "kernels/backend.h"
#include "quant/methods/rtn.h"

namespace dlx {

struct GptqOptions {
  QuantScheme scheme;
  double damp = 0.01;       // fraction of mean(diag H) added to the diagonal
  bool act_order = false;   // desc_act
  bool static_groups = false;
  int64_t block_size = 128;  // rounded up to a multiple of the group size
};

struct GptqResult {
  QuantCodes codes;    // g_idx filled when act-order permuted the groups
  double damp = 0.0;   // the dampening fraction finally used (raised when H was not positive definite)
};

// w: F32 [n, k] row-major (the layer's weight), h: [k, k] from HessianAccumulator::finish().
GptqResult gptq_quantize(Backend& be, const float* w, int64_t n, int64_t k, std::vector<double> h,
                         const GptqOptions& opt);

}  // namespace dlx
