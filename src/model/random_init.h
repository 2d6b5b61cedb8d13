// Random weights made in a backend's memory without a checkpoint (the bench and Model::random): approximately
// normal(mean, std) bf16 values from a counter-based hash of (seed, index) — on the CPU four 16-bit uniforms of
// splitmix64 summed and scaled to unit variance, on CUDA the same kind of hash on the device.
#pragma once
#include <cstdint>

#include "core/hash.h"
#include "core/tensor.h"
#include "kernels/backend.h"
#include "kernels/packed_weight.h"

namespace dlx {

// A bf16 tensor of `shape` in be's memory.
Tensor random_weight(Backend& be, Shape shape, uint64_t seed, float mean, float std);
// The same on the host (the CPU's generator), for tensors a Linear keeps on the host (a packed layer's bias).
Tensor random_host_weight(Shape shape, uint64_t seed, float mean, float std);

// The one generator of random packed low-bit weights (Model::random, the W4A16 bench, the kernel tests): a
// PackedWeight [N, K] on the host in the canonical layout, codes from a splitmix64 hash of (seed, index),
// scales uniform in [scale_lo, scale_hi), integer zero points (2^(bits-1) when sym, else uniform over the codes),
// and with act_order a random permutation of the inputs. The defaults give a 4-bit weight whose dequantized values
// have about the bf16 weights' std of 0.02. Backend::upload_packed takes it to a device.
struct RandomPackedOptions {
  int bits = 4;                   // 2, 4 or 8 (whole codes a 32-bit word)
  int64_t group_size = 128;       // divides K; kOneGroupPerRow (formats/quant_codes.h): one group
  bool sym = true;
  bool act_order = false;
  float scale_lo = 0.0043f * 0.9f, scale_hi = 0.0043f * 1.1f;
};
PackedWeight random_packed_weight(int64_t N, int64_t K, const RandomPackedOptions& o, uint64_t seed);

}  // namespace dlx
