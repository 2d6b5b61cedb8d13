// AVX2 + FMA inner loops of the CPU low-bit matmul (see qmatmul.h). Compiled with -mavx2 -mfma and called only
// after cpu_has_avx2().
//
// Unpacking 8 codes into 8 floats (one ymm), in kernel column order k .. k+7:
//   4-bit: one word w holds k .. k+7 at bits 4i:      broadcast w, shift lane i right by 4i, & 0xF, to float
//   8-bit: two words hold k .. k+3 and k+4 .. k+7:   lanes 0-3 <- w0, lanes 4-7 <- w1, shift by 8*(i%4), & 0xFF
// so a group of group_size (multiple of 8) columns is group_size/8 such steps. When the group size allows,
// the fused strategy uses the cheaper block form described in qmatmul.h (one load per 8 words, then one AND
// and one conversion per 8 codes, against the pre-arranged xt).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cpu/avx2_util.h"
#include "kernels/cpu/panel_avx2.h"
#include "kernels/cpu/qmatmul.h"

namespace dlx::qmatmul_impl {

namespace {

using avx2::hsum;
using avx2::prefetch_lines;
using panel::kColsW;
using panel::kRowsW;

// The fused tiles prefetch the next tile's rows (avx2::prefetch_lines): those follow the current rows in memory
// and are only K*bits/8 bytes each, too short for the hardware prefetcher to get going, so without it the small-M
// kernel waits on memory (it made M = 1 at 4608x3584 1.7x faster). The panel strategy prefetches the next K-slice
// of its rows.

// Where the rows after [n0, n0 + NR) start, and how many bytes of them there are (at most NR rows; a.ldy = N).
struct NextRows {
  const char* p;
  int64_t size;
};
inline NextRows next_rows(const Args& a, int64_t n0, int nr) {
  const int64_t n1 = std::min(a.ldy, n0 + 2 * nr);
  const int64_t rows = std::max<int64_t>(0, n1 - (n0 + nr));
  return {reinterpret_cast<const char*>(a.qweight + std::min(a.ldy, n0 + nr) * a.words), rows * a.words * 4};
}

// total += acc * scale[n, g] for the tile's NR output rows (the scale applies once per group).
template <int MR, int NR>
inline void add_group(const Args& a, int64_t n0, int64_t g, const __m256 (&acc)[MR][NR], __m256 (&total)[MR][NR]) {
  for (int r = 0; r < NR; ++r) {
    __m256 sv = _mm256_set1_ps(a.scales[(n0 + r) * a.G + g]);
    for (int i = 0; i < MR; ++i) total[i][r] = _mm256_fmadd_ps(acc[i][r], sv, total[i][r]);
  }
}

// y[m, n] = sum(total) - sum_g zs[n, g] * (sum of x[m, :] over group g): the zero points as one dot per output.
template <int MR, int NR>
inline void store_tile(const Args& a, int64_t m0, int64_t n0, const __m256 (&total)[MR][NR]) {
  const int64_t G = a.G;
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) {
      const float* zs = a.zeros + (n0 + r) * G;
      const float* xs = a.xsum + (m0 + i) * G;
      float z = 0;
      for (int64_t g = 0; g < G; ++g) z += zs[g] * xs[g];
      a.y[(m0 + i) * a.ldy + n0 + r] = hsum(total[i][r]) - z;
    }
}

template <int BITS>
struct Unpack {
  __m256i shifts, mask, spread;
  Unpack() {
    if constexpr (BITS == 4) {
      shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    } else {
      shifts = _mm256_setr_epi32(0, 8, 16, 24, 0, 8, 16, 24);
      spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    }
    mask = _mm256_set1_epi32((1 << BITS) - 1);
  }
  // Codes of columns 8*step .. 8*step + 7 of a row of words.
  inline __m256 operator()(const uint32_t* row, int64_t step) const {
    __m256i v;
    if constexpr (BITS == 4) {
      v = _mm256_set1_epi32(int(row[step]));
    } else {
      __m128i two = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 2 * step));
      v = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(two), spread);
    }
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(v, shifts), mask));
  }
};

// MR rows of x against NR output rows starting at n0, fused: the codes never leave registers.
template <int BITS, int MR, int NR>
void fused_tile(const Args& a, int64_t m0, int64_t n0, const Unpack<BITS>& unpack) {
  const int64_t K = a.K, G = a.G, steps = a.group_size / 8;
  const uint32_t* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = a.qweight + (n0 + r) * a.words;
  const NextRows next = next_rows(a, n0, NR);  // prefetched NR*BITS bytes per step of 8 columns
  __m256 total[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) total[i][r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_ps();
    const int64_t s0 = g * steps;
    for (int64_t s = s0; s < s0 + steps; ++s) {
      prefetch_lines(next.p, next.size, s * NR * BITS, (s + 1) * NR * BITS);
      __m256 wv[NR];
      for (int r = 0; r < NR; ++r) wv[r] = unpack(rows[r], s);
      for (int i = 0; i < MR; ++i) {
        __m256 xv = _mm256_loadu_ps(a.x + (m0 + i) * K + s * 8);
        for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(xv, wv[r], acc[i][r]);
      }
    }
    add_group<MR, NR>(a, n0, g, acc, total);
  }
  store_tile<MR, NR>(a, m0, n0, total);
}

// Code I of each word of w as floats, scaled by 2^(bits*I) except for the top code (see qmatmul.h).
template <int BITS, int I>
inline __m256 code_part(__m256i w) {
  if constexpr (I == 32 / BITS - 1) {
    return _mm256_cvtepi32_ps(_mm256_srli_epi32(w, BITS * I));
  } else {
    return _mm256_cvtepi32_ps(_mm256_and_si256(w, _mm256_set1_epi32(int(((1u << BITS) - 1) << (BITS * I)))));
  }
}

template <int BITS, int MR, int NR, int I>
inline void block_step(const __m256i (&wv)[NR], const float* const (&x)[MR], __m256 (&acc)[MR][NR]) {
  __m256 f[NR];  // dequantized once, used by the tile's MR rows of x
  for (int r = 0; r < NR; ++r) f[r] = code_part<BITS, I>(wv[r]);
  for (int i = 0; i < MR; ++i) {
    __m256 xv = _mm256_loadu_ps(x[i] + 8 * I);
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(f[r], xv, acc[i][r]);
  }
}

template <int BITS, int MR, int NR, int... I>
inline void block_steps(std::integer_sequence<int, I...>, const __m256i (&wv)[NR], const float* const (&x)[MR],
                        __m256 (&acc)[MR][NR]) {
  (block_step<BITS, MR, NR, I>(wv, x, acc), ...);
}

// The fused tile in block form: group_size % (8p) == 0 and a.xt arranged as in qmatmul.h.
template <int BITS, int MR, int NR>
void block_tile(const Args& a, int64_t m0, int64_t n0) {
  constexpr int P = 32 / BITS, B = 8 * P;
  const int64_t K = a.K, G = a.G, blocks = a.group_size / B;
  const uint32_t* rows[NR];
  for (int r = 0; r < NR; ++r) rows[r] = a.qweight + (n0 + r) * a.words;
  const NextRows next = next_rows(a, n0, NR);  // prefetched NR*32 bytes per block of 8 words
  __m256 total[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) total[i][r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m256 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_ps();
    for (int64_t b = g * blocks; b < (g + 1) * blocks; ++b) {
      prefetch_lines(next.p, next.size, b * NR * 32, (b + 1) * NR * 32);
      __m256i wv[NR];
      for (int r = 0; r < NR; ++r) wv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + b * 8));
      const float* x[MR];
      for (int i = 0; i < MR; ++i) x[i] = a.xt + (m0 + i) * K + b * B;
      block_steps<BITS, MR, NR>(std::make_integer_sequence<int, P>{}, wv, x, acc);
    }
    add_group<MR, NR>(a, n0, g, acc, total);
  }
  store_tile<MR, NR>(a, m0, n0, total);
}

template <int BITS, int MR, int NR>
inline void tile(const Args& a, int64_t m, int64_t n, const Unpack<BITS>& u) {
  if (a.xt)
    block_tile<BITS, MR, NR>(a, m, n);
  else
    fused_tile<BITS, MR, NR>(a, m, n, u);
}

// MR (<= 4) rows of x from m against output rows [n, n1): NR output rows a tile, then the rest one by one. NR is
// 4 for one or two rows of x, 3 for three or four: per 8 columns a tile loads MR vectors of x and dequantizes NR
// vectors of codes for MR * NR FMAs, and keeps MR * NR accumulators, NR codes and one x in the 16 ymm registers.
// Fewer loads per FMA is what counts on the Zen 4 CI machines: 8 rows x 1 output row (one x load per FMA) ran
// M = 8 1.7x slower than 4 x 3 (docs/PERFORMANCE.md, "CPU W4A16 matmul").
template <int BITS, int MR>
inline void tile_rows(const Args& a, int64_t m, int64_t n, int64_t n1, const Unpack<BITS>& u) {
  constexpr int NR = MR <= 2 ? 4 : 3;
  for (; n + NR <= n1; n += NR) tile<BITS, MR, NR>(a, m, n, u);
  for (; n < n1; ++n) tile<BITS, MR, 1>(a, m, n, u);
}

// Output rows [n0, n1) in chunks of 12 (three tiles of 4 or four of 3); for each chunk, the M (<= kQFusedMaxRows)
// rows of x in as few blocks of at most kFusedBlockRows rows as possible, of balanced sizes, so each packed word is
// dequantized ceil(M / 4) times per call while the chunk's 12 rows stay in cache.
constexpr int64_t kFusedBlockRows = 4, kFusedChunkN = 12;

template <int BITS>
void fused_rows(const Args& a, int64_t n0, int64_t n1, const Unpack<BITS>& u) {
  const int64_t m0 = a.fused_m0, rows = a.M - m0, blocks = (rows + kFusedBlockRows - 1) / kFusedBlockRows;
  for (int64_t n = n0; n < n1; n += kFusedChunkN) {
    const int64_t ne = std::min(n + kFusedChunkN, n1);
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t m = m0 + rows * b / blocks, mr = m0 + rows * (b + 1) / blocks - m;
      switch (mr) {
        case 4: tile_rows<BITS, 4>(a, m, n, ne, u); break;
        case 3: tile_rows<BITS, 3>(a, m, n, ne, u); break;
        case 2: tile_rows<BITS, 2>(a, m, n, ne, u); break;
        default: tile_rows<BITS, 1>(a, m, n, ne, u); break;
      }
    }
  }
}

// Dequantizes `rows` (<= kRowsW) output rows from n0, columns [k0, k0 + kc), into w (row stride kColsW): s*q - zs,
// in the column order of the panel's x (a.panel). Block order (a.block_order, see qmatmul.h): one load per 8
// words, then per code one AND (or the top code's shift), one conversion and one FMA with the scale pre-divided by
// 2^(bits*i), which undoes the code's position exactly; the codes come out in the order xt and a.panel use.
// Otherwise one word is broadcast and shifted per 8 columns.
template <int BITS, int... I>
inline void dequant_codes(std::integer_sequence<int, I...>, __m256i wv, const float* sc, __m256 zs, float* out) {
  (_mm256_store_ps(out + 8 * I, _mm256_fmsub_ps(code_part<BITS, I>(wv), _mm256_broadcast_ss(sc + I), zs)), ...);
}

template <int BITS>
void dequant_block(const Args& a, int64_t n0, int rows, int64_t k0, int64_t kc, float* w, const Unpack<BITS>& unpack) {
  constexpr int P = 32 / BITS, B = 8 * P;
  const int64_t G = a.G;
  for (int r = 0; r < rows; ++r) {
    const uint32_t* row = a.qweight + (n0 + r) * a.words;
    const float* sc = a.scales + (n0 + r) * G;
    const float* zs = a.zeros + (n0 + r) * G;
    float* out = w + r * kColsW - k0;
    if (a.block_order) {
      alignas(32) float scp[P];  // the group's scale over 2^(bits*i), for code i of each word
      int64_t g_cur = -1;
      for (int64_t k = k0; k < k0 + kc; k += B) {
        const int64_t g = k / a.group_size;
        if (g != g_cur) {
          g_cur = g;
          for (int i = 0; i < P; ++i) scp[i] = i == P - 1 ? sc[g] : sc[g] / float(1u << (BITS * i));  // exact
        }
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k / P));
        dequant_codes<BITS>(std::make_integer_sequence<int, P>{}, wv, scp, _mm256_set1_ps(zs[g]), out + k);
      }
    } else {
      for (int64_t k = k0; k < k0 + kc; k += 8) {
        const int64_t g = k / a.group_size;
        _mm256_store_ps(out + k, _mm256_fmsub_ps(unpack(row, k / 8), _mm256_set1_ps(sc[g]), _mm256_set1_ps(zs[g])));
      }
    }
  }
}

// The panel strategy: the shared engine (panel_avx2.h) fed dequantized slices.
template <int BITS>
struct DequantSlices {
  const Args& a;
  const Unpack<BITS>& unpack;
  int64_t row_bytes;
  void load(int64_t n, int rows, int64_t k0, int64_t kc, float* w) const {
    dequant_block<BITS>(a, n, rows, k0, kc, w, unpack);
  }
  const char* row(int64_t n) const { return reinterpret_cast<const char*>(a.qweight + n * a.words); }
  static int64_t bytes(int64_t k) { return k * BITS / 8; }
};

template <int BITS>
void rows_bits(const Args& a, int64_t n0, int64_t n1) {
  const Unpack<BITS> u;
  if (a.fused_m0 > 0)
    panel::panel_rows(panel::KMajorTiles{a.panel}, DequantSlices<BITS>{a, u, a.words * 4}, n0, n1, a.y, a.ldy);
  if (a.fused_m0 < a.M) fused_rows<BITS>(a, n0, n1, u);
}

}  // namespace

void rows_avx2(const Args& a, int64_t n0, int64_t n1) {
  if (a.bits == 4)
    rows_bits<4>(a, n0, n1);
  else
    rows_bits<8>(a, n0, n1);
}

}  // namespace dlx::qmatmul_impl
