#include "quant/methods/hessian.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"

namespace dlx {

HessianAccumulator::HessianAccumulator(Backend& be, int64_t k) : be_(&be), k_(k) {
  h_ = be.upload(Tensor::zeros(DType::F32, {k, k}));
}

void HessianAccumulator::add(const Tensor& x) {
  check(x.dim(-1) == k_, "hessian: input has {} features, expected {}", x.dim(-1), k_);
  const int64_t rows = k_ == 0 ? 0 : x.numel() / k_;
  if (rows == 0) return;
  // A host tensor on a device backend is moved there first (an activation's values are exact in act_dtype).
  const Tensor xb = x.device() == be_->device() ? x : be_->from_host_f32(x);
  be_->gram_accumulate(xb, h_);
  rows_ += rows;
}

std::vector<double> HessianAccumulator::finish() const {
  const int64_t k = k_;
  std::vector<double> h(size_t(k * k), 0.0);
  if (rows_ == 0) return h;
  const Tensor s = be_->to_host_f32(h_);
  const float* p = s.data<float>();
  const double f = 2.0 / double(rows_);
  parallel_for(k, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t j = i; j < k; ++j) h[size_t(i * k + j)] = f * double(p[i * k + j]);
      for (int64_t j = 0; j < i; ++j) h[size_t(i * k + j)] = f * double(p[j * k + i]);  // mirror of the upper
    }
  });
  return h;
}

OutputError::OutputError(Backend& be, const std::vector<double>& h, int64_t k) : be_(&be), k_(k) {
  check(int64_t(h.size()) == k * k, "output error: Hessian has {} entries for in_features {}", h.size(), k);
  Tensor hf = Tensor::zeros(DType::F32, {k, k});
  float* p = hf.data<float>();
  parallel_for(k * k, 1 << 16, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) p[i] = float(h[size_t(i)]);
  });
  h_ = be.upload(hf);
}

double OutputError::quad(const Tensor& d) const {
  const int64_t n = d.dim(0), k = k_;
  if (n == 0 || k == 0) return 0.0;
  const Tensor dd = be_->upload(d);
  Tensor dh = be_->empty(DType::F32, {n, k});
  // H is symmetric: D H = D H^T.
  be_->gemm_f32(false, false, n, k, k, 1.0f, dd.data<float>(), k, h_.data<float>(), k, 0.0f, dh.data<float>(), k);
  const Tensor hd = be_->to_host_f32(dh);
  const float* x = d.data<float>();
  const float* y = hd.data<float>();
  std::vector<double> rows(static_cast<size_t>(n));
  parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      double s = 0;
      for (int64_t j = 0; j < k; ++j) s += double(x[r * k + j]) * double(y[r * k + j]);
      rows[size_t(r)] = s;
    }
  });
  double s = 0;
  for (double v : rows) s += v;
  return s;
}

double OutputError::sq(const float* a, const float* b, int64_t n) const {
  Tensor d = Tensor::zeros(DType::F32, {n, k_});
  float* p = d.data<float>();
  parallel_for(n * k_, 1 << 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) p[i] = a[i] - b[i];
  });
  return std::max(quad(d), 0.0);
}

double OutputError::norm(const float* b, int64_t n) const {
  return std::max(quad(Tensor::from_data(DType::F32, {n, k_}, b)), 0.0);
}

double OutputError::rel(const float* a, const float* b, int64_t n, double den) const {
  if (den < 0) den = norm(b, n);
  return den > 0 ? std::sqrt(sq(a, b, n) / den) : 0.0;
}

double sq_output_error(Backend& be, const std::vector<double>& h, const float* a, const float* b, int64_t n,
                       int64_t k) {
  return OutputError(be, h, k).sq(a, b, n);
}

double rel_output_error(Backend& be, const std::vector<double>& h, const float* a, const float* b, int64_t n,
                        int64_t k) {
  return OutputError(be, h, k).rel(a, b, n);
}

std::vector<double> scale_hessian(const std::vector<double>& h, const std::vector<float>& d) {
  const int64_t k = int64_t(d.size());
  std::vector<double> out(h.size());
  parallel_for(k, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < k; ++j)
        out[size_t(i * k + j)] = h[size_t(i * k + j)] * double(d[size_t(i)]) * double(d[size_t(j)]);
  });
  return out;
}

}  // namespace dlx
