#include "core/rng.h"

#include <cmath>

#include "core/error.h"

namespace dlx {

namespace {
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t sm = seed;
  for (uint64_t& w : s_) w = splitmix64_next(sm);
}

Rng Rng::keyed(uint64_t seed, std::initializer_list<uint64_t> key) {
  // Absorb each key word: h = splitmix64-mix(h ^ word). Distinct keys give unrelated 64-bit seeds; the state
  // is then expanded by the plain constructor.
  uint64_t h = seed;
  uint64_t mixed = splitmix64_next(h);
  for (uint64_t word : key) {
    h = mixed ^ word;
    mixed = splitmix64_next(h);
  }
  return Rng(mixed);
}

Rng Rng::from_state(uint64_t s0, uint64_t s1, uint64_t s2, uint64_t s3) {
  check((s0 | s1 | s2 | s3) != 0, "xoshiro256** state must not be all zero");
  Rng r;
  r.s_[0] = s0;
  r.s_[1] = s1;
  r.s_[2] = s2;
  r.s_[3] = s3;
  return r;
}

uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }

double Rng::uniform_open() {
  // (k + 0.5) / 2^53 for k in [0, 2^53): symmetric, exact, never 0 or 1.
  return (double(next_u64() >> 11) + 0.5) * 0x1.0p-53;
}

double Rng::gumbel() { return -std::log(-std::log(uniform_open())); }

}  // namespace dlx
