// The input statistics of one linear layer: H = 2/T * X^T X over the T calibration rows X [T, K] it saw
// (GPTQ's Hessian of the layer-wise squared error), and the relative output error of a weight change measured
// with it:
//   || X (W' - W)^T ||_F / || X W^T ||_F  =  sqrt( sum_n d_n H d_n^T / sum_n w_n H w_n^T )
// so errors over every calibration token come without keeping the activations.
// The heavy parts run on the model's backend (kernels/backend.h gram_accumulate, gemm_f32): X^T X is accumulated
// where the activations are, in fp32 (one GEMM per calibration chunk); D H is one GEMM per call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "kernels/backend.h"

namespace dlx {

class OutputError;

class HessianAccumulator {
 public:
  HessianAccumulator(Backend& be, int64_t k);
  int64_t k() const { return k_; }
  int64_t rows() const { return rows_; }
  // Adds the rows of x ([rows, k]: an activation of the backend, or a host F32 tensor).
  void add(const Tensor& x);
  // H = 2/T X^T X, symmetric [k, k] row-major on the host, fp64 (zeros when nothing was added).
  std::vector<double> finish() const;

 private:
  friend class OutputError;
  Backend* be_;
  int64_t k_ = 0, rows_ = 0;
  Tensor h_;  // F32 [k, k] in the backend's memory: the upper triangle of sum x^T x
};

// H (F32, the whole symmetric matrix, in the backend's memory) for the output errors of many weights.
class OutputError {
 public:
  OutputError(Backend& be, const std::vector<double>& h, int64_t k);
  // The same as OutputError(be, acc.finish(), acc.k()) (F32 values identical), straight from the F32 sums on the
  // backend (backend.h symmetric_scaled): neither an fp64 H nor a host copy of the sums is made.
  explicit OutputError(const HessianAccumulator& acc);
  // sum_n (a_n - b_n) H (a_n - b_n)^T for a, b F32 [n, k] on the host: T/2 times the squared output error.
  double sq(const float* a, const float* b, int64_t n) const;
  // sum_n d_n H d_n^T for a weight difference d F32 [n, k] already computed (host, or the backend's memory: then
  // nothing crosses to the host but the result), e.g. by Backend::fake_quant with minus_w.
  double sq_of(const Tensor& d) const;
  // sum_n b_n H b_n^T.
  double norm(const float* b, int64_t n) const;
  // sqrt(sq(a, b) / norm(b)); den = norm(b) when already known.
  double rel(const float* a, const float* b, int64_t n, double den = -1) const;
  Backend& backend() const { return *be_; }
  int64_t k() const { return k_; }
  const Tensor& h() const { return h_; }  // F32 [k, k], backend memory

 private:
  // sum_n d_n H d_n^T: one GEMM D H on the backend and the sum of (D H) o D in fp64 there (backend.h dot_f64), so
  // only the upload of D and one scalar cross to the host.
  double quad(const Tensor& d) const;
  Backend* be_;
  int64_t k_;
  Tensor h_;
};

// sum_n (a_n - b_n) H (a_n - b_n)^T for weights a, b F32 [n, k] row-major (through OutputError).
double sq_output_error(Backend& be, const std::vector<double>& h, const float* a, const float* b, int64_t n, int64_t k);

// sqrt(sum_n (a_n - b_n) H (a_n - b_n)^T / sum_n b_n H b_n^T).
double rel_output_error(Backend& be, const std::vector<double>& h, const float* a, const float* b, int64_t n,
                        int64_t k);

// Scales H's rows and columns: H'[i][j] = H[i][j] * d[i] * d[j] (the statistics of X diag(d)).
std::vector<double> scale_hessian(const std::vector<double>& h, const std::vector<float>& d);

}  // namespace dlx
