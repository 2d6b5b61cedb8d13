#include "quant/hessian.h"

#include <algorithm>
#include <cmath>

#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/matmul.h"

namespace dlx {

void HessianAccumulator::add(const float* x, int64_t rows) {
  const int64_t k = k_;
  // Rows of H split over threads; tokens in chunks summed in fp32 (short sums), then added in fp64.
  constexpr int64_t kChunk = 64;
  parallel_for(k, 4, [&](int64_t i0, int64_t i1) {
    std::vector<float> part(size_t((i1 - i0) * k));
    for (int64_t t0 = 0; t0 < rows; t0 += kChunk) {
      const int64_t t1 = std::min(rows, t0 + kChunk);
      std::fill(part.begin(), part.end(), 0.0f);
      for (int64_t t = t0; t < t1; ++t) {
        const float* xt = x + t * k;
        for (int64_t i = i0; i < i1; ++i) {
          const float xi = xt[i];
          if (xi == 0.0f) continue;
          float* p = part.data() + (i - i0) * k;
          for (int64_t j = i; j < k; ++j) p[j] += xi * xt[j];
        }
      }
      for (int64_t i = i0; i < i1; ++i) {
        const float* p = part.data() + (i - i0) * k;
        double* h = h_.data() + i * k;
        for (int64_t j = i; j < k; ++j) h[j] += double(p[j]);
      }
    }
  });
  rows_ += rows;
}

std::vector<double> HessianAccumulator::finish() const {
  std::vector<double> h(size_t(k_ * k_), 0.0);
  if (rows_ == 0) return h;
  const double f = 2.0 / double(rows_);
  for (int64_t i = 0; i < k_; ++i)
    for (int64_t j = i; j < k_; ++j) h[size_t(i * k_ + j)] = h[size_t(j * k_ + i)] = f * h_[size_t(i * k_ + j)];
  return h;
}

namespace {

// Per row n: d_n H d_n^T with d = a - b (and b_n H b_n^T when den is given): the products D H (and B H) as
// one dense matmul each (H is symmetric, so D H = D H^T is what cpu_matmul computes), then row-wise dot
// products summed in fp64.
void quadratic_forms(const std::vector<double>& h, const float* a, const float* b, int64_t n, int64_t k,
                     std::vector<double>& num, std::vector<double>* den) {
  Tensor hf = Tensor::zeros(DType::F32, {k, k});
  for (int64_t i = 0; i < k * k; ++i) hf.data<float>()[i] = float(h[size_t(i)]);
  Tensor d = Tensor::zeros(DType::F32, {n, k}), dh = Tensor::zeros(DType::F32, {n, k});
  for (int64_t i = 0; i < n * k; ++i) d.data<float>()[i] = a[i] - b[i];
  cpu_matmul(d, hf, nullptr, dh);
  for (int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += double(d.data<float>()[r * k + j]) * double(dh.data<float>()[r * k + j]);
    num[size_t(r)] = s;
  }
  if (!den) return;
  Tensor w = Tensor::from_data(DType::F32, {n, k}, b);
  cpu_matmul(w, hf, nullptr, dh);
  for (int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += double(b[r * k + j]) * double(dh.data<float>()[r * k + j]);
    (*den)[size_t(r)] = s;
  }
}

}  // namespace

double sq_output_error(const std::vector<double>& h, const float* a, const float* b, int64_t n, int64_t k) {
  std::vector<double> num(static_cast<size_t>(n));
  quadratic_forms(h, a, b, n, k, num, nullptr);
  double sn = 0;
  for (int64_t r = 0; r < n; ++r) sn += num[size_t(r)];
  return std::max(sn, 0.0);
}

double rel_output_error(const std::vector<double>& h, const float* a, const float* b, int64_t n, int64_t k) {
  std::vector<double> num(static_cast<size_t>(n)), den(static_cast<size_t>(n));
  quadratic_forms(h, a, b, n, k, num, &den);
  double sn = 0, sd = 0;
  for (int64_t r = 0; r < n; ++r) sn += num[size_t(r)], sd += den[size_t(r)];
  return sd > 0 ? std::sqrt(std::max(sn, 0.0) / sd) : 0.0;
}

std::vector<double> scale_hessian(const std::vector<double>& h, const std::vector<float>& d) {
  const int64_t k = int64_t(d.size());
  std::vector<double> out(h.size());
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) out[size_t(i * k + j)] = h[size_t(i * k + j)] * double(d[size_t(i)]) * double(d[size_t(j)]);
  return out;
}

}  // namespace dlx
