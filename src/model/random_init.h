// Random weights made in a backend's memory without a checkpoint (the bench and Model::random): approximately
// normal(mean, std) bf16 values from a counter-based hash of (seed, index) — on the CPU four 16-bit uniforms of
// splitmix64 summed and scaled to unit variance, on CUDA the same kind of hash on the device.
#pragma once
#include <cstdint>

#include "core/hash.h"
#include "core/tensor.h"
#include "kernels/backend.h"

namespace dlx {

// A bf16 tensor of `shape` in be's memory.
Tensor random_weight(Backend& be, Shape shape, uint64_t seed, float mean, float std);

}  // namespace dlx
