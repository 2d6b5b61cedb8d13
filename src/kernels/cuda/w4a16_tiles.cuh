// Dequantization of the "CUDA W4A16 tiles" (layout: w4a16_mma.cu), shared by the mma.sync kernel (w4a16_mma.cu),
// the wgmma kernel (w4a16_wgmma.cu) and the dequantize-to-scratch kernel.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace dlx::cuda {

__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));  // (a & b) | c
  return d;
}
__device__ __forceinline__ uint32_t bsub_mul(uint32_t v, uint32_t z, uint32_t s) {
  __nv_bfloat162 d = __hmul2(__hsub2(*reinterpret_cast<__nv_bfloat162*>(&v), *reinterpret_cast<__nv_bfloat162*>(&z)),
                             *reinterpret_cast<__nv_bfloat162*>(&s));
  return *reinterpret_cast<uint32_t*>(&d);
}

// The four B registers (n8 tile 0: b0, b1; n8 tile 1: b0, b1) of one word; sz0 / sz1: {bf16 s, bf16 128+z} of the
// lane's row in each n8 tile.
__device__ __forceinline__ void dequant(uint32_t word, uint32_t sz0, uint32_t sz1, uint32_t (&b)[4]) {
  const uint32_t s0 = __byte_perm(sz0, 0, 0x1010), z0 = __byte_perm(sz0, 0, 0x3232);
  const uint32_t s1 = __byte_perm(sz1, 0, 0x1010), z1 = __byte_perm(sz1, 0, 0x3232);
  b[0] = bsub_mul(lop3_and_or(word, 0x000f000fu, 0x43004300u), z0, s0);
  b[1] = bsub_mul(lop3_and_or(word >> 4, 0x000f000fu, 0x43004300u), z0, s0);
  b[2] = bsub_mul(lop3_and_or(word >> 8, 0x000f000fu, 0x43004300u), z1, s1);
  b[3] = bsub_mul(lop3_and_or(word >> 12, 0x000f000fu, 0x43004300u), z1, s1);
}


// The scale-word group rows the k step `kt` (64 columns) needs: the first, ga, and how many, ng. With one group per
// k step (ONE_GROUP: group size a multiple of 64) the group is tracked incrementally: z_group / z_left (k steps
// left in it) advance one k step per call, spg = k steps per group.
template <bool ONE_GROUP>
__device__ __forceinline__ void step_groups(int kt, int K, int gs, int spg, int& z_group, int& z_left, int& ga,
                                            int& ng) {
  if (ONE_GROUP) {
    ga = z_group, ng = 1;
    if (--z_left == 0) ++z_group, z_left = spg;
  } else {
    const int k0 = kt * 64;
    ga = k0 / gs;
    ng = (min(k0 + 64, K) - 1) / gs - ga + 1;
  }
}

}  // namespace dlx::cuda
