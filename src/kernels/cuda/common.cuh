// Device helpers shared by the kernels: bf16 <-> f32, reading a float of any stored dtype, 16-byte vectors.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.h"

namespace dlx::cuda {

__device__ __forceinline__ float bf2f(bf16_t h) { return __uint_as_float(uint32_t(h) << 16); }
// Round to nearest even (NaN stays NaN), as the host's f32_to_bf16.
__device__ __forceinline__ bf16_t f2bf(float f) { return __bfloat16_as_ushort(__float2bfloat16_rn(f)); }

// Element i of a float buffer stored as `t`.
__device__ __forceinline__ float load_elt(const void* p, Elt t, int64_t i) {
  switch (t) {
    case Elt::BF16: return bf2f(static_cast<const bf16_t*>(p)[i]);
    case Elt::F16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// SwiGLU of one element, silu(g) * u in fp32 (every kernel that computes it: silu_mul, silu_mul_fused and the wgmma
// W4A16 kernel's SwiGLU epilogue: the same bits from the same bf16 inputs).
__device__ __forceinline__ float silu_mul1(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// 8 bf16 in one 16-byte word.
union Bf16x8 {
  uint4 u;
  bf16_t h[8];
};

// Block-causal attention (launch.h): the keys [0, end) that query row r (sequence index q_offset + r) sees; S for
// bidirectional attention (block <= 0).
__device__ __forceinline__ int64_t block_causal_end(int64_t r, int64_t block, int64_t q_offset, int64_t S) {
  return block > 0 ? min(S, ((q_offset + r) / block + 1) * block) : S;
}

inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 32) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return unsigned(b < cap ? b : cap);
}

}  // namespace dlx::cuda
