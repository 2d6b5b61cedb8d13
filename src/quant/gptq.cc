#include "quant/gptq.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/cholesky.h"

namespace dlx {

GptqResult gptq_quantize(const float* w0, int64_t n, int64_t k, std::vector<double> h, const GptqOptions& opt) {
  const QuantScheme& s = opt.scheme;
  const int64_t gs = s.group_size;
  check(gs > 0 && k % gs == 0, "gptq: group size {} does not divide in_features {}", gs, k);
  check(int64_t(h.size()) == k * k, "gptq: Hessian has {} entries for in_features {}", h.size(), k);
  const int64_t G = k / gs;
  const int maxq = s.maxq();
  const bool grouped = gs < k;

  std::vector<float> w(w0, w0 + n * k);
  // Inputs that were always zero carry no information: fix H and drop their weights (as GPTQ does).
  for (int64_t i = 0; i < k; ++i)
    if (h[size_t(i * k + i)] == 0.0) {
      h[size_t(i * k + i)] = 1.0;
      for (int64_t r = 0; r < n; ++r) w[size_t(r * k + i)] = 0.0f;
    }

  std::vector<GroupParams> fixed;  // static groups: from the original weights
  if (opt.static_groups) {
    fixed.resize(size_t(n * G));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t g = 0; g < G; ++g) fixed[size_t(r * G + g)] = find_params(w.data() + r * k + g * gs, gs, s);
  }

  std::vector<int64_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return h[size_t(a * k + a)] > h[size_t(b * k + b)]; });
    std::vector<float> wp(w.size());
    std::vector<double> hp(h.size());
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < k; ++j) wp[size_t(r * k + j)] = w[size_t(r * k + perm[size_t(j)])];
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b) hp[size_t(a * k + b)] = h[size_t(perm[size_t(a)] * k + perm[size_t(b)])];
    w.swap(wp);
    h.swap(hp);
  }

  double mean_diag = 0;
  for (int64_t i = 0; i < k; ++i) mean_diag += h[size_t(i * k + i)];
  mean_diag /= double(k);
  GptqResult res;
  std::vector<double> ud;
  for (double damp = opt.damp;; damp *= 10.0) {
    std::vector<double> hd = h;
    for (int64_t i = 0; i < k; ++i) hd[size_t(i * k + i)] += damp * mean_diag;
    if (inverse_cholesky_upper(hd, k, ud)) {
      res.damp = damp;
      break;
    }
    check(damp < 10.0, "gptq: the Hessian is not positive definite even with dampening {} (calibration inputs "
          "degenerate?)", damp);
  }
  std::vector<float> u(ud.begin(), ud.end());
  ud.clear();
  ud.shrink_to_fit();

  int64_t block = std::max<int64_t>(1, opt.block_size);
  if (grouped) block = (block + gs - 1) / gs * gs;  // a group never straddles two blocks

  res.codes = make_codes(n, k, s);
  QuantCodes& c = res.codes;
  if (opt.act_order && !opt.static_groups && grouped) {
    c.g_idx.resize(size_t(k));
    for (int64_t j = 0; j < k; ++j) c.g_idx[size_t(perm[size_t(j)])] = int32_t(j / gs);
  }

  constexpr int64_t kTile = 8;
  parallel_for((n + kTile - 1) / kTile, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> err(size_t(kTile * block));
    std::vector<GroupParams> cur(static_cast<size_t>(kTile));
    for (int64_t tile = t0; tile < t1; ++tile) {
      const int64_t r0 = tile * kTile, r1 = std::min(n, r0 + kTile);
      for (int64_t i1 = 0; i1 < k; i1 += block) {
        const int64_t i2 = std::min(k, i1 + block);
        for (int64_t r = r0; r < r1; ++r) {
          float* wr = w.data() + r * k;
          float* er = err.data() + (r - r0) * block;
          GroupParams& p = cur[size_t(r - r0)];
          for (int64_t j = i1; j < i2; ++j) {
            const int64_t orig = perm[size_t(j)];
            if (opt.static_groups) {
              p = fixed[size_t(r * G + orig / gs)];
            } else if (j % gs == 0) {
              p = find_params(wr + j, gs, s);  // the group's weights as updated so far
              set_group(c, j / gs, r, p);
            }
            const int q = p.code(wr[j], maxq);
            c.q[size_t(r * k + orig)] = uint8_t(q);
            const float* uj = u.data() + j * k;
            const float e = (wr[j] - p.dequant(q)) / uj[j];
            er[j - i1] = e;
            for (int64_t col = j + 1; col < i2; ++col) wr[col] -= e * uj[col];
          }
          // Lazy update of everything after the block with the block's errors.
          for (int64_t b = 0; b < i2 - i1; ++b) {
            const float e = er[b];
            if (e == 0.0f) continue;
            const float* ub = u.data() + (i1 + b) * k;
            for (int64_t col = i2; col < k; ++col) wr[col] -= e * ub[col];
          }
        }
      }
    }
  });
  if (opt.static_groups)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t g = 0; g < G; ++g) set_group(c, g, r, fixed[size_t(r * G + g)]);
  return res;
}

}  // namespace dlx
