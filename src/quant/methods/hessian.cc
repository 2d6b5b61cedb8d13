#include "quant/methods/hessian.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/host_ops.h"

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

namespace {

// out = T(f * sum) over the whole symmetric matrix from the upper triangle of `p` ([k, k] row-major; the lower
// triangle of p is not read). In tiles of 64 x 64: the mirrored half reads the transposed tile, which stays in
// cache, where a plain loop over row i would read column i of p with a stride of k floats (for down_proj's
// k = 18944 a new cache line per element).
template <class T>
void scaled_symmetric(const float* p, int64_t k, double f, T* out) {
  constexpr int64_t kTile = 64;
  const int64_t tiles = (k + kTile - 1) / kTile;
  parallel_for(tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ++ti) {
      const int64_t i0 = ti * kTile, i1 = std::min(k, i0 + kTile);
      // Upper part of these rows (j >= i): straight.
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = i; j < k; ++j) out[i * k + j] = T(f * double(p[i * k + j]));
      // Lower part (j < i): out[i][j] = p[j][i], tile by tile of columns.
      for (int64_t j0 = 0; j0 < i1; j0 += kTile) {
        const int64_t j1 = std::min(j0 + kTile, i1);
        for (int64_t j = j0; j < j1; ++j)
          for (int64_t i = std::max(i0, j + 1); i < i1; ++i) out[i * k + j] = T(f * double(p[j * k + i]));
      }
    }
  });
}

}  // namespace

std::vector<double> HessianAccumulator::finish() const {
  const int64_t k = k_;
  std::vector<double> h;
  h.reserve(size_t(k * k));
  advise_huge_pages(h.data(), size_t(k * k) * sizeof(double));  // 2.9 GB for down_proj: host_ops.h says why
  h.assign(size_t(k * k), 0.0);
  if (rows_ == 0) return h;
  const Tensor s = be_->to_host_f32(h_);
  scaled_symmetric(s.data<float>(), k, 2.0 / double(rows_), h.data());
  return h;
}

OutputError::OutputError(const HessianAccumulator& acc) : be_(acc.be_), k_(acc.k_) {
  const int64_t k = k_;
  Tensor hf = acc.rows_ == 0 ? Tensor::zeros(DType::F32, {k, k}) : host_uninit(DType::F32, {k, k});
  if (acc.rows_ > 0) {
    const Tensor s = be_->to_host_f32(acc.h_);
    // float(f * double(sum)): exactly float(finish()[i]), without the fp64 matrix.
    scaled_symmetric(s.data<float>(), k, 2.0 / double(acc.rows_), hf.data<float>());
  }
  h_ = be_->upload(hf);
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
  Tensor d = host_uninit(DType::F32, {n, k_});
  float* p = d.data<float>();
  parallel_for(n * k_, 1 << 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) p[i] = a[i] - b[i];
  });
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
