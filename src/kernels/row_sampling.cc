#include "kernels/row_sampling.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/rng.h"
#include "engine/sampling.h"

namespace dlx {

void check_row_sampling(const RowSampling& how, const std::vector<RowDraw>& draws, int64_t rows, const char* op) {
  check(how.temperature >= 0 && std::isfinite(how.temperature), "{}: temperature must be >= 0 (got {})", op,
        how.temperature);
  check(how.top_p > 0 && how.top_p <= 1, "{}: top_p must be in (0, 1] (got {})", op, how.top_p);
  check(how.top_k >= 0, "{}: top_k must be >= 0 (got {})", op, how.top_k);
  check(how.cfg_scale >= 0 && std::isfinite(how.cfg_scale), "{}: cfg_scale must be >= 0 (got {})", op, how.cfg_scale);
  for (size_t i = 0; i < draws.size(); ++i) {
    const RowDraw& d = draws[i];
    check(d.row >= 0 && d.row < rows, "{}: draw {} reads row {} of {} logits rows", op, i, d.row, rows);
    check(how.cfg_scale <= 0 || (d.uncond_row >= 0 && d.uncond_row < rows),
          "{}: draw {} needs an unconditional row in [0, {}) for cfg_scale {} (got {})", op, i, rows, how.cfg_scale,
          d.uncond_row);
    check(how.rule != RowSampling::Rule::Dream || how.temperature <= 0 || (d.u >= 0 && d.u < 1),
          "{}: draw {} has uniform {} outside [0, 1)", op, i, d.u);
  }
}

std::vector<TokenChoice> sample_rows_host(const std::function<const float*(int64_t)>& row, int64_t V,
                                          const RowSampling& how, const std::vector<RowDraw>& draws) {
  check(V >= 1, "sample_rows: empty vocabulary");
  std::vector<TokenChoice> out(draws.size());
  const TokenSampling sampling{how.temperature, how.top_p, how.top_k};
  parallel_for(int64_t(draws.size()), 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> x(static_cast<size_t>(V));
    for (int64_t i = lo; i < hi; ++i) {
      const RowDraw& d = draws[size_t(i)];
      const float* cond = row(d.row);
      if (how.cfg_scale > 0)
        cfg_combine(cond, row(d.uncond_row), V, how.cfg_scale, x.data());
      else
        std::copy(cond, cond + V, x.begin());
      suppress_tokens(x.data(), V, how.suppress);
      if (how.rule == RowSampling::Rule::Dream) {
        out[size_t(i)] = sample_token(x.data(), V, sampling, how.confidence, d.u);
      } else {
        Rng noise = Rng::keyed(how.seed, {d.noise_key[0], d.noise_key[1], d.noise_key[2], d.noise_key[3]});
        out[size_t(i)] = gumbel_choice(x.data(), V, how.temperature, &noise);
      }
    }
  });
  return out;
}

}  // namespace dlx
