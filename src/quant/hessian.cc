#include "quant/hessian.h"

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"

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

// Per row n: d_n H d_n^T with d = a - b (and b_n H b_n^T when den is given). H is symmetric, so H d is built as a
// sum of H's rows scaled by d (an axpy the compiler vectorizes) in fp32, and the final dot product summed in fp64.
void quadratic_forms(const std::vector<double>& h, const float* a, const float* b, int64_t n, int64_t k,
                     std::vector<double>& num, std::vector<double>* den) {
  std::vector<float> hf(h.begin(), h.end());
  parallel_for(n, 4, [&](int64_t r0, int64_t r1) {
    std::vector<float> d(static_cast<size_t>(k)), hd(static_cast<size_t>(k)), hw(static_cast<size_t>(k));
    for (int64_t r = r0; r < r1; ++r) {
      const float* ar = a + r * k;
      const float* br = b + r * k;
      for (int64_t j = 0; j < k; ++j) d[size_t(j)] = ar[j] - br[j];
      std::fill(hd.begin(), hd.end(), 0.0f);
      if (den) std::fill(hw.begin(), hw.end(), 0.0f);
      for (int64_t i = 0; i < k; ++i) {
        const float* hi = hf.data() + i * k;
        const float di = d[size_t(i)], wi = br[i];
        float* pd = hd.data();
        if (di != 0.0f)
          for (int64_t j = 0; j < k; ++j) pd[j] += di * hi[j];
        if (den && wi != 0.0f) {
          float* pw = hw.data();
          for (int64_t j = 0; j < k; ++j) pw[j] += wi * hi[j];
        }
      }
      double sd = 0, sw = 0;
      for (int64_t j = 0; j < k; ++j) {
        sd += double(d[size_t(j)]) * double(hd[size_t(j)]);
        if (den) sw += double(br[j]) * double(hw[size_t(j)]);
      }
      num[size_t(r)] = sd;
      if (den) (*den)[size_t(r)] = sw;
    }
  });
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
