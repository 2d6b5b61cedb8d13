// AVX2 + FMA + F16C inner steps of the CPU matmul (see matmul.h). Compiled with -mavx2 -mfma -mf16c and
// called only after cpu_has_avx2().
#include <immintrin.h>

#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/matmul.h"

namespace dlx::matmul_impl {

namespace {

using avx2::hsum;

// Up to 2 rows of x against `rows` (<= 4) panel rows: 8 accumulators, 14 registers live.
template <int MR, int NR>
void tile(const float* x, int64_t K, const float* panel, float* y, int64_t ldy, int64_t n0) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm256_loadu_ps(panel + j * K + k);
    for (int i = 0; i < MR; ++i) {
      __m256 xv = _mm256_loadu_ps(x + i * K + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t kk = k; kk < K; ++kk) s += x[i * K + kk] * panel[j * K + kk];
      y[i * ldy + n0 + j] = s;
    }
  }
}

template <int NR>
void rows_loop(const float* x, int64_t M, int64_t K, const float* panel, float* y, int64_t ldy, int64_t n0) {
  int64_t m = 0;
  for (; m + 2 <= M; m += 2) tile<2, NR>(x + m * K, K, panel, y + m * ldy, ldy, n0);
  if (m < M) tile<1, NR>(x + m * K, K, panel, y + m * ldy, ldy, n0);
}

}  // namespace

void widen_avx2(const void* w, DType t, int64_t n0, int rows, int64_t K, float* panel) {
  for (int r = 0; r < rows; ++r) {
    float* out = panel + r * K;
    int64_t base = (n0 + r) * K, k = 0;
    if (t == DType::BF16) {
      const uint16_t* src = static_cast<const uint16_t*>(w) + base;
      for (; k + 8 <= K; k += 8) {
        __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k));
        __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(out + k, _mm256_castsi256_ps(u));
      }
    } else if (t == DType::F16) {
      const uint16_t* src = static_cast<const uint16_t*>(w) + base;
      for (; k + 8 <= K; k += 8)
        _mm256_storeu_ps(out + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
    } else if (t == DType::F32) {
      const float* src = static_cast<const float*>(w) + base;
      for (; k + 8 <= K; k += 8) _mm256_storeu_ps(out + k, _mm256_loadu_ps(src + k));
    }
    for (; k < K; ++k) out[k] = load_as_f32(w, t, size_t(base + k));
  }
}

void panel_avx2(const float* x, int64_t M, int64_t K, const float* panel, int rows, float* y, int64_t ldy, int64_t n0) {
  switch (rows) {
    case 4: rows_loop<4>(x, M, K, panel, y, ldy, n0); break;
    case 3: rows_loop<3>(x, M, K, panel, y, ldy, n0); break;
    case 2: rows_loop<2>(x, M, K, panel, y, ldy, n0); break;
    default: rows_loop<1>(x, M, K, panel, y, ldy, n0); break;
  }
}

}  // namespace dlx::matmul_impl
