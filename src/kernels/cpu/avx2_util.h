// Small AVX2 helpers shared by the *_avx2.cc kernels (include only from files compiled with -mavx2).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace dlx::avx2 {

// The sum of the 8 lanes.
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

// Prefetches the cache lines that start in [lo, hi) of the `size` bytes at p.
inline void prefetch_lines(const char* p, int64_t size, int64_t lo, int64_t hi) {
  for (int64_t off = (lo + 63) & ~int64_t(63); off < hi && off < size; off += 64) _mm_prefetch(p + off, _MM_HINT_T0);
}

}  // namespace dlx::avx2
