// The x side of the CPU panel engine's k-major form (kernels/cpu/panel_avx2.h, KMajorTiles; the W4A16 matmul,
// cpu/qmatmul.h, takes it): x rearranged once per call into k-major tiles of kPanelM rows (arrange_kmajor,
// below). This part has no AVX2 code, so that the callers' portable files build it.
#pragma once
#include <cstdint>
#include <vector>

namespace dlx::panel {

// Rows of x per micro-tile of the k-major form (two ymm).
constexpr int64_t kPanelM = 16;

// A thread's scratch of n floats in v, 64-byte aligned (the panel tiles use aligned loads and stores).
inline float* aligned_scratch(std::vector<float>& v, size_t n) {
  v.resize(n + 16);
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~uintptr_t(63));
}

// x as the engine reads it: the rows [0, m) of x, padded with zero rows to mp (a multiple of 8) and with zero
// columns to kp (a multiple of 8), in tiles of kPanelM rows (the last tile 8 rows when mp % 16 == 8), each tile
// k-major and contiguous: x[r, k] of tile t = r / 16 of width wt is at xkm[16 t kp + k wt + r % 16], 64-byte
// aligned. The engine writes the rows [0, m) of y.
struct PanelX {
  const float* xkm;
  int64_t m, mp, kp;
};

// Arranges rows [0, m) of x (row stride K) into buf; kernel column k holds x[:, source[k]] (source null: x[:, k]).
PanelX arrange_kmajor(const float* x, int64_t m, int64_t K, const int64_t* source, std::vector<float>& buf);

}  // namespace dlx::panel
