// Dequantization of the "CUDA W4A16 tiles" (layout: w4a16_mma.cu), shared by the mma.sync kernel (w4a16_mma.cu),
// the wgmma kernel (w4a16_wgmma.cu) and the dequantize-to-scratch kernel.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/launch.h"

namespace dlx::cuda {

// What both kernels read: the call's shape, the tiles, the output and the split-K partition.
struct W4A16KernelArgs {
  const bf16_t* x;  // [M, K], columns already in kernel order
  int64_t M, K, N, np, kt, groups, gs;
  const uint4* tiles;
  const uint32_t* sz;
  const void* bias;
  Elt bias_type;
  bf16_t* y;
  float* partial;  // [splits, M, N] when splits > 1
  int splits, kt_per_split;
  int64_t dp_tiles;  // wgmma kernel: tiles [0, dp_tiles) unsplit, the rest split `splits` ways
  bool tile_in_one_group;  // group_size % 64 == 0
  bool n_even;             // N even: y and the partial sums take paired stores
  bool y_vec;              // N % 8 == 0 and y 16-byte aligned: 16-byte stores along y's rows
  // wgmma kernel, SwiGLU epilogue (launch_w4a16_wgmma_swiglu): I = N / 2 when the weight is [gate; up] and y is
  // out [M, I] = silu(gate) * up; 0 otherwise. A block of BN features then takes BN / 2 gate rows and the same up rows.
  int64_t swiglu_i;
};

inline W4A16KernelArgs w4a16_kernel_args(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles,
                                         const uint32_t* sz, int64_t group_size, const void* bias, Elt bias_type,
                                         bf16_t* y, float* partial) {
  const W4A16Dims d = w4a16_dims(p.N, p.K, group_size);
  W4A16KernelArgs a{};
  a.x = x, a.M = p.M, a.K = p.K, a.N = p.N, a.np = d.np, a.kt = d.kt, a.groups = d.groups, a.gs = group_size;
  a.tiles = reinterpret_cast<const uint4*>(tiles), a.sz = sz;
  a.bias = bias, a.bias_type = bias_type, a.y = y, a.partial = partial;
  a.splits = p.splits, a.kt_per_split = p.kt_per_split, a.dp_tiles = p.dp_tiles;
  a.tile_in_one_group = group_size % 64 == 0;
  a.n_even = p.N % 2 == 0;
  a.y_vec = p.N % 8 == 0 && aligned16(y);
  return a;
}

// Split-K: the split count (at most max_splits, at least 1) that minimizes a time model in bytes moved: the weight
// streams in waves of `slots` resident blocks (a partly filled last wave costs a full one), each block moving
// step_bytes a k step, plus the fp32 partial sums written and read back, plus what the reduction itself costs:
// reduce_fixed_bytes where it is a launch of its own (~2 us, ~6 MB at 3 TB/s), reduce_split_bytes a split where
// one block of each tile reads every split's partials. Writes the k steps a split and the split count into p.
inline void w4a16_pick_splits(W4A16Args& p, int64_t kt, int64_t blocks, int64_t slots, double step_bytes,
                              int64_t max_splits, int force_splits, double reduce_fixed_bytes = 6e6,
                              double reduce_split_bytes = 0) {
  auto model = [&](int64_t s) {
    const int64_t per = (kt + s - 1) / s, waves = (blocks * s + slots - 1) / slots;
    return double(waves * per) * double(slots) * step_bytes +
           (s > 1 ? double(s) * (double(p.M) * p.N * 8 + reduce_split_bytes) + reduce_fixed_bytes : 0.0);
  };
  int64_t splits = 1;
  if (force_splits > 0) {
    splits = force_splits;
  } else {
    for (int64_t s = 2; s <= max_splits; ++s)
      if (model(s) < model(splits)) splits = s;
  }
  splits = std::max<int64_t>(1, std::min<int64_t>(splits, kt));
  const int64_t per = (kt + splits - 1) / splits;
  p.kt_per_split = int(per);
  p.splits = int((kt + per - 1) / per);
}

__device__ __forceinline__ uint32_t lop3_and_or(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));  // (a & b) | c
  return d;
}
// bf16 pairs: v - z, and (v - z) * s (each step rounded to bf16).
__device__ __forceinline__ uint32_t bsub(uint32_t v, uint32_t z) {
  __nv_bfloat162 d = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&v), *reinterpret_cast<__nv_bfloat162*>(&z));
  return *reinterpret_cast<uint32_t*>(&d);
}
__device__ __forceinline__ uint32_t bsub_mul(uint32_t v, uint32_t z, uint32_t s) {
  uint32_t d = bsub(v, z);
  __nv_bfloat162 p = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&d), *reinterpret_cast<__nv_bfloat162*>(&s));
  return *reinterpret_cast<uint32_t*>(&p);
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
