#include "kernels/cpu/panel.h"

#include <algorithm>

namespace dlx::panel {

PanelX arrange_kmajor(const float* x, int64_t m, int64_t K, const int64_t* source, std::vector<float>& buf) {
  const int64_t mp = (m + 7) / 8 * 8, kp = (K + 7) / 8 * 8;
  float* xkm = aligned_scratch(buf, size_t(kp * mp));
  std::fill(xkm, xkm + kp * mp, 0.0f);  // the padding rows and columns
  for (int64_t m0 = 0; m0 < mp; m0 += kPanelM) {
    const int64_t wt = std::min(kPanelM, mp - m0);
    float* tile = xkm + m0 * kp;
    for (int64_t k0 = 0; k0 < K; k0 += 64)  // blocks of columns, so the strided writes stay in cache
      for (int64_t r = m0; r < std::min(m, m0 + wt); ++r) {
        const float* xr = x + r * K;
        const int64_t k1 = std::min(K, k0 + 64);
        if (source)
          for (int64_t k = k0; k < k1; ++k) tile[k * wt + r - m0] = xr[source[k]];
        else
          for (int64_t k = k0; k < k1; ++k) tile[k * wt + r - m0] = xr[k];
      }
  }
  return {xkm, m, mp, kp};
}

}  // namespace dlx::panel
