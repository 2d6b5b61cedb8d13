// AVX2 + FMA + F16C path of the CPU dense matmul (see matmul.h): the shared panel engine (panel_avx2.h) in its
// dot form, fed widened slices. Compiled with -mavx2 -mfma -mf16c and called only after cpu_has_avx2().
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/panel_avx2.h"

namespace dlx::matmul_impl {

namespace {

// Widens the `count` elements of w (dtype t) from element `base` into out (F32): 8 at a time with one load and
// one conversion (bf16: zero-extend and shift into the top half; f16: F16C), the tail one by one.
inline void widen_row(const void* w, DType t, size_t base, int64_t count, float* out) {
  int64_t k = 0;
  if (t == DType::BF16) {
    const uint16_t* src = static_cast<const uint16_t*>(w) + base;
    for (; k + 8 <= count; k += 8) {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k));
      __m256i u = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
      _mm256_storeu_ps(out + k, _mm256_castsi256_ps(u));
    }
  } else if (t == DType::F16) {
    const uint16_t* src = static_cast<const uint16_t*>(w) + base;
    for (; k + 8 <= count; k += 8)
      _mm256_storeu_ps(out + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k))));
  } else if (t == DType::F32) {
    const float* src = static_cast<const float*>(w) + base;
    for (; k + 8 <= count; k += 8) _mm256_storeu_ps(out + k, _mm256_loadu_ps(src + k));
  }
  for (; k < count; ++k) out[k] = load_as_f32(w, t, base + size_t(k));
}

// The engine's loader (panel_avx2.h): slices of weight rows widened into its scratch.
struct WidenSlices {
  const void* w;
  DType t;
  int64_t K, es, row_bytes;  // es: bytes per element
  void load(int64_t n, int rows, int64_t k0, int64_t kc, float* out) const {
    const int64_t count = std::min(kc, K - k0);
    for (int r = 0; r < rows; ++r) {
      float* o = out + r * panel::kColsW;
      widen_row(w, t, size_t((n + r) * K + k0), count, o);
      std::fill(o + count, o + kc, 0.0f);
    }
  }
  const char* row(int64_t n) const { return static_cast<const char*>(w) + n * row_bytes; }
  int64_t bytes(int64_t k) const { return k * es; }
  float tail(int64_t n, int64_t k) const { return load_as_f32(w, t, size_t(n * K + k)); }
};

}  // namespace

void rows_avx2(const float* x, int64_t M, const void* w, DType t, int64_t K, int64_t n0, int64_t n1, float* y,
               int64_t ldy) {
  const int64_t es = int64_t(dtype_size(t));
  panel::panel_rows(panel::DotTiles{x, M, K}, WidenSlices{w, t, K, es, K * es}, n0, n1, y, ldy);
}

}  // namespace dlx::matmul_impl
