#include "formats/packed_convert.h"

namespace dlx {

Tensor dequantize_packed(const PackedWeight& w) {
  Tensor out = Tensor::zeros(DType::F32, {w.n, w.k});
  float* o = out.data<float>();
  const int64_t G = w.groups();
  const float* sc = w.scales.data<float>();
  const float* zs = w.zeros.data<float>();
  const int32_t* perm = w.perm.defined() ? w.perm.data<int32_t>() : nullptr;
  parallel_for(w.n, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t j = 0; j < w.k; ++j) {
        int64_t g = j / w.group_size;
        o[n * w.k + (perm ? perm[j] : j)] = sc[n * G + g] * float(packed_code(w, n, j)) - zs[n * G + g];
      }
  });
  return out;
}

}  // namespace dlx
