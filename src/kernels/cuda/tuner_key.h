// The M key of the CUDA backend's two timing tuners (the cuBLASLt algorithm in gemm.cc, the W4A16 path in
// cuda_backend.cc): one timed choice per weight shape and key, reused for every M of the key. Plain C++, no CUDA
// headers, so that its test runs in every build.
#pragma once
#include <cstdint>

namespace dlx::cuda {

// The power of two at or above M up to 64 (token tiles of 8 to 64 rows), above that M rounded up to a multiple of 64
// (of 256 past 2048), so that every M of a key gives each kernel the same number of token tiles of 64, 128 and 256
// rows, and the time measured at the key's first M holds for the others. A power-of-two key did not
// (docs/PERFORMANCE.md, session 15): a B = 8 decode step's window pass (264 rows: Dream's window reaches back one
// row) took the W4A16 choice timed at the key's first M, the 512-row refresh pass: the 256-token "tall" tile, full at
// 512 rows and half empty at 264. The step took 13.9 ms, 10.2 with the 128-token tile forced. Past 2048 a key spans
// 256 rows (the count of keys, each tuned once, stays bounded: 7 up to 64, 31 up to 2048, one per 256 rows above).
inline int64_t tuner_m_bucket(int64_t M) {
  if (M <= 64) {
    int64_t bucket = 1;
    while (bucket < M) bucket *= 2;
    return bucket;
  }
  const int64_t q = M <= 2048 ? 64 : 256;
  return (M + q - 1) / q * q;
}

}  // namespace dlx::cuda
