// Dense symmetric positive-definite linear algebra for GPTQ, in fp64 on row-major [n, n] matrices.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dlx {

// In place: the lower Cholesky factor L (A = L L^T); the strict upper triangle is zeroed. False when A is
// not (numerically) positive definite.
bool cholesky_lower(std::vector<double>& a, int64_t n);

// GPTQ's Hinv: the upper Cholesky factor U of H^{-1} (H^{-1} = U^T U), from H. False when H is not positive
// definite. Row i of U holds the error-propagation weights of column i onto the columns after it.
bool inverse_cholesky_upper(const std::vector<double>& h, int64_t n, std::vector<double>& u);

}  // namespace dlx
