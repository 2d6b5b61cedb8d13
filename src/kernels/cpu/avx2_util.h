// Small AVX2 helpers shared by the *_avx2.cc kernels (include only from files compiled with -mavx2).
#pragma once
#include <immintrin.h>

namespace dlx::avx2 {

// The sum of the 8 lanes.
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

}  // namespace dlx::avx2
