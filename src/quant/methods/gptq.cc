#include "quant/methods/gptq.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/host_ops.h"

namespace dlx {

GptqResult gptq_quantize(Backend& be, const float* w0, int64_t n, int64_t k, std::vector<double> h,
                         const GptqOptions& opt) {
  const QuantScheme& s = opt.scheme;
  const int64_t gs = s.group_size;
  check(gs > 0 && k % gs == 0, "gptq: group size {} does not divide in_features {}", gs, k);
  check(int64_t(h.size()) == k * k, "gptq: Hessian has {} entries for in_features {}", h.size(), k);
  const int64_t G = k / gs;
  const int maxq = s.maxq();
  const bool grouped = gs < k;

  // Inputs that were always zero carry no information: fix H and drop their weights (as GPTQ does).
  std::vector<char> dead(static_cast<size_t>(k), 0);
  for (int64_t i = 0; i < k; ++i)
    if (h[size_t(i * k + i)] == 0.0) {
      h[size_t(i * k + i)] = 1.0;
      dead[size_t(i)] = 1;
    }
  auto weight = [&](int64_t r, int64_t col) { return dead[size_t(col)] ? 0.0f : w0[r * k + col]; };

  // Group parameters fixed from the original weights: with static groups, and with one group per row (gs == k),
  // where GPTQ (AutoGPTQ's fasterquant with groupsize -1) finds each row's parameters once, before any error
  // feedback. Otherwise a group's parameters come from its weights as updated when its first column is reached.
  const bool fixed_params = opt.static_groups || !grouped;
  std::vector<GroupParams> fixed;
  if (fixed_params) {
    fixed.resize(size_t(n * G));
    parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
      std::vector<float> row(static_cast<size_t>(gs));
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t g = 0; g < G; ++g) {
          for (int64_t i = 0; i < gs; ++i) row[size_t(i)] = weight(r, g * gs + i);
          fixed[size_t(r * G + g)] = find_params(row.data(), gs, s);
        }
    });
  }

  std::vector<int64_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return h[size_t(a * k + a)] > h[size_t(b * k + b)]; });

  // The factorization works on a copy of H in processing order, P H P^T (H itself stays for a retry with more
  // dampening). The copy is made in parallel straight from H (no permuted H in between), into memory that is
  // not zero-filled first: for down_proj (k = 18944) each pass over H is 2.9 GB.
  double mean_diag = 0;
  for (int64_t a = 0; a < k; ++a) mean_diag += h[size_t(perm[size_t(a)] * k + perm[size_t(a)])];
  mean_diag /= double(k);
  GptqResult res;
  std::unique_ptr<double[]> ud(new double[size_t(k * k)]);
  advise_huge_pages(ud.get(), size_t(k * k) * sizeof(double));
  for (double damp = opt.damp;; damp *= 10.0) {
    parallel_for(k, 16, [&](int64_t a0, int64_t a1) {
      for (int64_t a = a0; a < a1; ++a) {
        const double* src = h.data() + perm[size_t(a)] * k;
        double* dst = ud.get() + a * k;
        if (opt.act_order)
          for (int64_t b = 0; b < k; ++b) dst[b] = src[perm[size_t(b)]];
        else
          std::memcpy(dst, src, size_t(k) * sizeof(double));
        dst[a] += damp * mean_diag;
      }
    });
    if (be.cholesky_inverse_upper(ud.get(), k)) {
      res.damp = damp;
      break;
    }
    check(damp < 10.0, "gptq: the Hessian is not positive definite even with dampening {} (calibration inputs "
          "degenerate?)", damp);
  }
  h.clear();
  h.shrink_to_fit();

  int64_t block = std::max<int64_t>(1, opt.block_size);
  if (grouped) block = (block + gs - 1) / gs * gs;  // a group never straddles two blocks

  res.codes = make_codes(n, k, s);
  QuantCodes& c = res.codes;
  if (opt.act_order && !opt.static_groups && grouped) {
    c.g_idx.resize(size_t(k));
    for (int64_t j = 0; j < k; ++j) c.g_idx[size_t(perm[size_t(j)])] = int32_t(j / gs);
  }

  // On the backend: U (F32), W^T and E^T [k, n] in processing order (row j = column perm[j] of every output).
  Tensor ut = host_uninit(DType::F32, {k, k}), wt = host_uninit(DType::F32, {k, n});
  {
    float* up = ut.data<float>();
    float* wp = wt.data<float>();
    parallel_for(k, 16, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = 0; i < k; ++i) up[j * k + i] = float(ud[size_t(j * k + i)]);
    });
    // W^T in processing order: blocks of 16 output rows, each writing 16 neighbouring floats (one cache line) per
    // column j while reading its 16 rows (a loop over j with r inside would read W with a stride of k floats).
    constexpr int64_t kRows = 16;
    parallel_for((n + kRows - 1) / kRows, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t r0 = b0 * kRows; r0 < std::min(n, b1 * kRows); r0 += kRows) {
        const int64_t r1 = std::min(n, r0 + kRows);
        for (int64_t j = 0; j < k; ++j)
          for (int64_t r = r0; r < r1; ++r) wp[j * n + r] = weight(r, perm[size_t(j)]);
      }
    });
  }
  ud.reset();
  const Tensor u = be.upload(ut);
  Tensor wd = be.upload(wt);
  Tensor ed = be.empty(DType::F32, {k, n});

  std::vector<float> blk, ublk, eblk;
  Tensor e_up;  // the last block's errors as uploaded: kept until the next download has synchronized the backend
  for (int64_t i1 = 0; i1 < k; i1 += block) {
    const int64_t i2 = std::min(k, i1 + block), B = i2 - i1;
    // The errors of all earlier columns, at once: W^T[i1:i2] -= U[:i1, i1:i2]^T E^T[:i1].
    if (i1 > 0)
      be.gemm_f32(true, false, B, n, i1, -1.0f, u.data<float>() + i1, k, ed.data<float>(), n, 1.0f,
                  wd.data<float>() + i1 * n, n);
    const Tensor cur = be.to_host_f32(wd.slice_rows(i1, i2));  // [B, n]
    const float* cp = cur.data<float>();
    blk.assign(size_t(n * B), 0.0f);
    ublk.assign(size_t(B * B), 0.0f);
    eblk.assign(size_t(B * n), 0.0f);
    for (int64_t a = 0; a < B; ++a)
      for (int64_t b = a; b < B; ++b) ublk[size_t(a * B + b)] = ut.data<float>()[(i1 + a) * k + i1 + b];
    parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* wr = blk.data() + r * B;
        for (int64_t j = 0; j < B; ++j) wr[j] = cp[j * n + r];
        GroupParams p;
        for (int64_t j = 0; j < B; ++j) {
          const int64_t col = i1 + j, orig = perm[size_t(col)];
          if (fixed_params) {
            p = fixed[size_t(r * G + orig / gs)];
          } else if (col % gs == 0) {
            p = find_params(wr + j, gs, s);  // the group's weights as updated so far
            set_group(c, col / gs, r, p);
          }
          const int q = p.code(wr[j], maxq);
          c.q[size_t(r * k + orig)] = uint8_t(q);
          const float* uj = ublk.data() + j * B;
          const float e = (wr[j] - p.dequant(q)) / uj[j];
          eblk[size_t(j * n + r)] = e;
          for (int64_t t = j + 1; t < B; ++t) wr[t] -= e * uj[t];
        }
      }
    });
    if (i2 < k) {
      Tensor dst = ed.slice_rows(i1, i2);
      e_up = be.upload(Tensor::from_data(DType::F32, {B, n}, eblk.data()));
      be.copy(e_up, dst);
    }
  }
  if (fixed_params)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t g = 0; g < G; ++g) set_group(c, g, r, fixed[size_t(r * G + g)]);
  return res;
}

}  // namespace dlx
