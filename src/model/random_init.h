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

// A random 4-bit weight [N, K] on the host in the canonical layout: codes from splitmix64, zero point 8, scales
// 0.0043 +- 10% (the dequantized weight has about the bf16 weights' std of 0.02). Backend::upload_packed takes it
// to a device. K must be a multiple of 8 and of group_size.
PackedWeight random_packed_w4(int64_t N, int64_t K, int64_t group_size, uint64_t seed);

}  // namespace dlx
