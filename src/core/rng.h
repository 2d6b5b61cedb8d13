// Seeded, reproducible random numbers for the samplers: xoshiro256** (Blackman & Vigna) whose 256-bit state
// is filled by splitmix64. Only integer arithmetic produces the bits and the conversions to double are exact,
// so a seed gives the same numbers on every platform, compiler and thread count. We do not try to reproduce
// torch's generator streams (docs/SAMPLERS.md).
//
// Samplers never share one sequential stream between positions: each random decision draws from a short
// stream keyed by (seed, purpose, row, step, position) — see Rng::keyed — so results do not depend on how
// positions are split across threads, nor on the other rows of the batch.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "core/hash.h"

namespace dlx {


class Rng {
 public:
  // State from four splitmix64 outputs of `seed`.
  explicit Rng(uint64_t seed = 0);
  // An independent stream for (seed, key...): the key words are absorbed one by one through splitmix64 mixing.
  static Rng keyed(uint64_t seed, std::initializer_list<uint64_t> key);
  // Raw state (must not be all zero); for tests against the published reference outputs.
  static Rng from_state(uint64_t s0, uint64_t s1, uint64_t s2, uint64_t s3);

  uint64_t next_u64();
  // Uniform in [0, 1) with 53 random bits.
  double uniform();
  // Uniform in (0, 1): never 0, so log(u) is finite.
  double uniform_open();
  // Standard Gumbel: -log(-log(u)), u in (0, 1).
  double gumbel();

 private:
  uint64_t s_[4];
};

}  // namespace dlx
