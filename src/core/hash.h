// splitmix64 (Steele, Lea and Flood, 2014): the well-mixed 64-bit hash of a counter that seeds the random streams,
// masks the eval positions and makes random weights. (The CUDA kernels have their own copy in elementwise.cu.)
#pragma once
#include <cstdint>

namespace dlx {

// The mix of x + the golden-ratio increment.
inline uint64_t splitmix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The generator form: returns splitmix64(state) and advances state by the increment.
inline uint64_t splitmix64_next(uint64_t& state) {
  const uint64_t out = splitmix64(state);
  state += 0x9e3779b97f4a7c15ull;
  return out;
}

}  // namespace dlx
