// The input statistics of one linear layer: H = 2/T * X^T X over the T calibration rows X [T, K] it saw
// (GPTQ's Hessian of the layer-wise squared error), accumulated in fp64 from fp32 partial sums, and the
// relative output error of a weight change measured with it:
//   || X (W' - W)^T ||_F / || X W^T ||_F  =  sqrt( sum_n d_n H d_n^T / sum_n w_n H w_n^T )
// so errors over every calibration token come without keeping the activations.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace dlx {

class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t k = 0) : k_(k), h_(size_t(k * k), 0.0) {}
  int64_t k() const { return k_; }
  int64_t rows() const { return rows_; }
  // Adds `rows` rows of x (row-major [rows, k], fp32).
  void add(const float* x, int64_t rows);
  // H = 2/T X^T X, symmetric [k, k] row-major (zeros when nothing was added).
  std::vector<double> finish() const;

 private:
  int64_t k_ = 0, rows_ = 0;
  std::vector<double> h_;  // sum of x^T x, upper triangle (j >= i) only until finish()
};

// sum_n (a_n - b_n) H (a_n - b_n)^T for weights a, b F32 [n, k] row-major: T/2 times the squared output error.
double sq_output_error(const std::vector<double>& h, const float* a, const float* b, int64_t n, int64_t k);

// sqrt(sum_n (a_n - b_n) H (a_n - b_n)^T / sum_n b_n H b_n^T).
double rel_output_error(const std::vector<double>& h, const float* a, const float* b, int64_t n, int64_t k);

// Scales H's rows and columns: H'[i][j] = H[i][j] * d[i] * d[j] (the statistics of X diag(d)).
std::vector<double> scale_hessian(const std::vector<double>& h, const std::vector<float>& d);

}  // namespace dlx
