// The M key of the CUDA backend's two timing tuners (the cuBLASLt algorithm in gemm.cc, the W4A16 path in
// cuda_backend.cc): one timed choice per weight shape and key, reused for every M of the key; and the W4A16 "fit"
// tile, which is chosen from the key so that the choice holds for the whole key. Plain C++, no CUDA headers, so that
// its test runs in every build.
#pragma once
#include <cstdint>
#include <initializer_list>

namespace dlx::cuda {

// The power of two at or above M up to 64 (token tiles of 8 to 64 rows), above that M rounded up to a multiple of 64
// (of 32 from 256 to 2048, of 256 past 2048), so that every M of a key gives each kernel the same number of token
// tiles of 64, 128 and 256 rows (and of the fitted tiles below), and the time measured at the key's first M holds for
// the others. A power-of-two key did not (docs/PERFORMANCE.md, session 15): a B = 8 decode step's window pass (264
// rows: Dream's window reaches back one row) took the W4A16 choice timed at the key's first M, the 512-row refresh
// pass: the 256-token "tall" tile, full at 512 rows and half empty at 264. The step took 13.9 ms, 10.2 with the 128-token tile forced. Past 2048 a key spans
// 256 rows (the count of keys, each tuned once, stays bounded: 7 up to 64, 3 up to 256, 56 up to 2048, one per 256
// rows above).
inline int64_t tuner_m_bucket(int64_t M) {
  if (M <= 64) {
    int64_t bucket = 1;
    while (bucket < M) bucket *= 2;
    return bucket;
  }
  const int64_t q = M <= 256 ? 64 : M <= 2048 ? 32 : 256;
  return (M + q - 1) / q * q;
}

// The token tile of the W4A16 wgmma kernel's "fit" variant (M > 256; launch.h W4A16Variant): of 136, 144 and 176 rows,
// the one that pads the key's M (above) the least (the larger on a tie), so that M splits into nearly full tiles
// where 128 and 256 do not: a B = 8 decode window of 264 rows (Dream's window reaches back a row) is 2 tiles of 144
// instead of 3 of 128 (the third with 8 rows) or 2 of 256 (the second with 8); 288 rows (a full forward at B = 1)
// 2 x 144; the B = 16, 32 and 64 windows (528, 1056, 2112 rows) 4 x 136, 6 x 176 and 15 x 144. One tile for every M
// of a key.
inline int fit_token_tile(int64_t M) {
  const int64_t key = tuner_m_bucket(M);
  int best = 0;
  int64_t best_rows = 0;
  for (int nt : {176, 144, 136}) {
    const int64_t rows = (key + nt - 1) / nt * nt;
    if (best == 0 || rows < best_rows) best = nt, best_rows = rows;
  }
  return best;
}

}  // namespace dlx::cuda
