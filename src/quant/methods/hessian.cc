#include "quant/methods/hessian.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/cpu/linalg.h"
#include "quant/host_ops.h"

namespace dlx {

HessianAccumulator::HessianAccumulator(Backend& be, int64_t k) : be_(&be), k_(k) {
  // Zeroed where it lives (1.4 GB for down_proj): no host buffer filled on one thread and uploaded.
  h_ = backend_uninit(be, DType::F32, {k, k});
  be.zero(h_);
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
  std::vector<double> h;
  h.reserve(size_t(k * k));
  advise_huge_pages(h.data(), size_t(k * k) * sizeof(double));  // 2.9 GB for down_proj: host_ops.h says why
  h.assign(size_t(k * k), 0.0);
  if (rows_ == 0) return h;
  const Tensor s = be_->to_host_f32(h_);
  cpu_symmetric_scaled(s.data<float>(), k, 2.0 / double(rows_), h.data());
  return h;
}

OutputError::OutputError(const HessianAccumulator& acc) : be_(acc.be_), k_(acc.k_) {
  // float(f * double(sum)) over the whole matrix, built where the sums are: exactly float(finish()[i]), without
  // the fp64 matrix and without a trip to the host (backend.h symmetric_scaled).
  h_ = backend_uninit(*be_, DType::F32, {k_, k_});
  if (acc.rows_ == 0)
    be_->zero(h_);
  else
    be_->symmetric_scaled(acc.h_, 2.0 / double(acc.rows_), h_);
}

OutputError::OutputError(Backend& be, const std::vector<double>& h, int64_t k) : be_(&be), k_(k) {
  check(int64_t(h.size()) == k * k, "output error: Hessian has {} entries for in_features {}", h.size(), k);
  Tensor hf = host_uninit(DType::F32, {k, k});
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
  Tensor dh = backend_uninit(*be_, DType::F32, {n, k});
  // H is symmetric: D H = D H^T. Then sum (D H) o D in fp64 where the product is: only the scalar comes back.
  be_->gemm_f32(false, false, n, k, k, 1.0f, dd.data<float>(), k, h_.data<float>(), k, 0.0f, dh.data<float>(), k);
  return be_->dot_f64(dd, dh);
}

double OutputError::sq(const float* a, const float* b, int64_t n) const {
  Tensor d = host_uninit(DType::F32, {n, k_});
  float* p = d.data<float>();
  parallel_for(n * k_, 1 << 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) p[i] = a[i] - b[i];
  });
  return std::max(quad(d), 0.0);
}

double OutputError::sq_of(const Tensor& d) const {
  check(d.dtype() == DType::F32 && d.rank() == 2 && d.dim(1) == k_,
        "output error: the weight difference must be F32 [n, {}], got {} {}", k_, dtype_name(d.dtype()),
        shape_str(d.shape()));
  return std::max(quad(d), 0.0);
}

double OutputError::norm(const float* b, int64_t n) const {
  // A view of b, not a copy: quad only reads it (uploads it, or on the CPU the GEMM reads it where it is).
  return std::max(quad(host_view(DType::F32, {n, k_}, b)), 0.0);
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
  std::vector<double> out;
  out.reserve(h.size());
  advise_huge_pages(out.data(), h.size() * sizeof(double));
  out.assign(h.size(), 0.0);
  parallel_for(k, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < k; ++j)
        out[size_t(i * k + j)] = h[size_t(i * k + j)] * double(d[size_t(i)]) * double(d[size_t(j)]);
  });
  return out;
}

}  // namespace dlx
