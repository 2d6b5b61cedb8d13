// The per-slot reference for Backend::attention_slots, written out with the one-slot ops, for the tests of every
// backend's version (tests/kernels/backend_test.cc, tests/kernels/cuda/cuda_ops_test.cc): for each slot, its window
// rows of k and v copied into its cache at rows [begin, begin + width), then attention_block_causal of its queries
// over the cache; without a cache, over its own window rows. Writes the slots' caches and their rows of out.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "kernels/backend.h"

namespace dlx::test {

inline void attention_slots_one_by_one(Backend& be, const Tensor& q, const Tensor& k, const Tensor& v,
                                       const std::vector<AttnSlotRef>& slots, int64_t block, Tensor& out) {
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = k.dim(1), qrow = Hq * D, kvrow = Hkv * D;
  for (const AttnSlotRef& s : slots) {
    const int64_t W = s.width;
    const Tensor qs = q.reshape({T, qrow}).slice_rows(s.row, s.row + W).reshape({1, W, Hq, D});
    Tensor os = out.reshape({T, qrow}).slice_rows(s.row, s.row + W).reshape({1, W, Hq, D});
    const Tensor ks = k.reshape({T, kvrow}).slice_rows(s.row, s.row + W);
    const Tensor vs = v.reshape({T, kvrow}).slice_rows(s.row, s.row + W);
    const Tensor* mask = s.key_mask.defined() ? &s.key_mask : nullptr;
    if (!s.k_cache.defined()) {
      be.attention_block_causal(qs, ks.reshape({1, W, Hkv, D}), vs.reshape({1, W, Hkv, D}), mask, block, 0, os);
      continue;
    }
    const int64_t L = s.k_cache.dim(1);
    Tensor dk = s.k_cache.reshape({L, kvrow}).slice_rows(s.begin, s.begin + W);
    Tensor dv = s.v_cache.reshape({L, kvrow}).slice_rows(s.begin, s.begin + W);
    be.copy(ks, dk);
    be.copy(vs, dv);
    be.attention_block_causal(qs, s.k_cache, s.v_cache, mask, block, s.begin, os);
  }
}

}  // namespace dlx::test
