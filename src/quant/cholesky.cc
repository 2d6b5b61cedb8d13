#include "quant/cholesky.h"

#include <cmath>

#include "core/thread_pool.h"

namespace dlx {

namespace {

double dot(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0;
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) s0 += a[i] * b[i], s1 += a[i + 1] * b[i + 1];
  if (i < n) s0 += a[i] * b[i];
  return s0 + s1;
}

}  // namespace

bool cholesky_lower(std::vector<double>& a, int64_t n) {
  // Column by column (Crout): L[j][j] from row j's prefix, then every L[i][j] below it, rows in parallel.
  for (int64_t j = 0; j < n; ++j) {
    double* rj = a.data() + j * n;
    double d = rj[j] - dot(rj, rj, j);
    if (!(d > 0.0) || !std::isfinite(d)) return false;
    const double ljj = std::sqrt(d);
    rj[j] = ljj;
    parallel_for(n - j - 1, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = j + 1 + b; i < j + 1 + e; ++i) {
        double* ri = a.data() + i * n;
        ri[j] = (ri[j] - dot(ri, rj, j)) / ljj;
      }
    });
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) a[size_t(i * n + j)] = 0.0;
  return true;
}

bool inverse_cholesky_upper(const std::vector<double>& h, int64_t n, std::vector<double>& u) {
  std::vector<double> l = h;
  if (!cholesky_lower(l, n)) return false;
  // t[j][i] = (L^{-1})[i][j]: column j of the inverse by forward substitution, stored as row j (contiguous).
  std::vector<double> t(size_t(n * n), 0.0);
  parallel_for(n, 8, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      double* tj = t.data() + j * n;
      for (int64_t i = j; i < n; ++i) {
        const double* li = l.data() + i * n;
        double s = (i == j ? 1.0 : 0.0) - dot(li + j, tj + j, i - j);
        tj[i] = s / li[i];
      }
    }
  });
  // H^{-1} = L^{-T} L^{-1}:  Hinv[a][b] = sum_{i >= max(a, b)} t[a][i] t[b][i].
  std::vector<double> hinv(size_t(n * n));
  parallel_for(n, 8, [&](int64_t a0, int64_t a1) {
    for (int64_t a = a0; a < a1; ++a)
      for (int64_t b = 0; b <= a; ++b) {
        double v = dot(t.data() + a * n + a, t.data() + b * n + a, n - a);
        hinv[size_t(a * n + b)] = v;
        hinv[size_t(b * n + a)] = v;
      }
  });
  if (!cholesky_lower(hinv, n)) return false;
  u.assign(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) u[size_t(i * n + j)] = hinv[size_t(j * n + i)];
  return true;
}

}  // namespace dlx
