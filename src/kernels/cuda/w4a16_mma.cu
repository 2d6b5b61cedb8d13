// W4A16 on tensor cores: 4-bit weights (GPTQ / AWQ / RTN, any group size that is a multiple of 16 or one group per
// row, symmetric or integer zero points, act-order) times bf16 activations, fp32 accumulation. The weight is
// converted once at load (w4a16_repack, called by CudaBackend::upload_packed) from the canonical PackedWeight
// (kernels/packed_weight.h) into the layout below; the canonical tensors are not kept on the GPU and there is no
// bf16 copy of the weight.
//
// Layout ("CUDA W4A16 tiles", PackedWeight::layout == kW4A16TileLayout)
//   Np = N rounded up to 16, Kp = K rounded up to 64, KT = Kp / 64. Padding codes are 0 (their activations are 0).
//   tiles  u32 [KT][Np/16][32 lanes][4 words]: one 512-byte unit per (16 output rows, 64 input columns), i.e. one
//          16-byte load per lane of a warp; the units of one k step lie side by side, so a block's k step reads one
//          contiguous 4-16 KB run (DRAM-friendly). For lane l (gid = l / 4, tig = l % 4) word w (0..3) holds the weights
//          of the w-th k16 step, k = 64*kt + 16*w + {2tig, 2tig+1, 2tig+8, 2tig+9}, at rows n = 16*nt + gid (nibbles
//          0,4,1,5) and n = 16*nt + 8 + gid (nibbles 2,6,3,7), in that k order. Nibble j and nibble j+4 land in the two
//          bf16 halves of one register after (word >> 4j) & 0x000f000f, which is exactly the B fragment
//          {b0, b1} of mma.m16n8k16 for the two n8 tiles: no shuffles, no shared-memory transposes.
//   sz     u32 [G][Np]: per group and row, bf16(scale) in the low half and bf16(128 + z) in the high half, z the
//          integer zero point (zeros/scales of the canonical form; upload_packed keeps the canonical layout and the
//          SIMT kernel when a zero point is not an integer in [-128, 127]). W = s * (q - z).
//
// Dequantization in registers: (word >> 4j) & 0x000f000f | 0x43004300 (one lop3) is the bf16 pair 128 + q
// (0x4300 is 128.0 and the mantissa's unit is 1); subtracting the bf16 pair 128 + z is exact (small integers), and
// the product with the bf16 scale rounds once. So the only rounding beyond the f32 reference is bf16(s) (2^-9
// relative, per group) and bf16(s * (q - z)) (2^-9 relative, per element), the same as a bf16 weight.
// The fold (M <= 32, group size a multiple of 128): the MMAs take the raw 128 + q and the scale and zero point are
// applied per group to fp32 sums (see FOLD at the kernel): 7 instructions per word of codes instead of 15.
//
// The kernel (w4a16_kernel<MT, NU, ONE_GROUP, FOLD, MINB>): 256 threads = 8 warps, MINB blocks an SM; a block computes a (16*MT) x (128*NU) tile of y; each
// warp owns 16*NU output columns and all the block's rows. K is walked in steps of 64 through a 4-stage cp.async
// pipeline that brings the activation tile (rows swizzled in 16-byte chunks so that ldmatrix is conflict-free), the
// weight units (512 contiguous bytes each) and the group scales of the step into shared memory; each warp then
// loads its weight words (one 16-byte ld.shared per lane per unit), dequantizes them in registers and issues
// 2*MT*NU mma.sync per k16 step. Blocks with the same output columns are adjacent in the launch order (grid.x is the
// row tile), so a weight tile is read from DRAM once and from L2 by the other row tiles.
// Tiles: 16 x 256 (3 blocks an SM) for M <= 16, 32 x 256 with the fold or 32 x 512, 64 x 128 or 64 x 256 above.
// Split-K: when the tiles are too few to fill the GPU (small M, small N), grid.z splits the k steps (the count from
// a wave-quantization model in w4a16_plan); each split writes
// fp32 partial sums to a scratch buffer and a second kernel adds them (in a fixed order: deterministic), adds the
// bias and rounds to bf16. Without a split the bias is added in the epilogue.
// Act-order: the activation columns are gathered through perm into a scratch buffer first (w4a16_permute).
// Large M: w4a16_dequant writes a transient bf16 [N, K] scratch for cuBLASLt; the backend picks that path or the
// fused kernel per (shape, M bucket) by timing both once (cuda_backend.cc).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/w4a16_tiles.cuh"

namespace dlx::cuda {

namespace {

constexpr int kThreads = 256, kWarps = 8, kBK = 64, kMaxGroups = 4;

__host__ __device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// FOLD: the four B registers hold the raw bf16 pairs 128 + q (one LOP3 each); the zero point and the scale are
// applied per group to fp32 sums instead (see the fold in the kernel).
__device__ __forceinline__ void dequant_raw(uint32_t word, uint32_t (&b)[4]) {
  b[0] = lop3_and_or(word, 0x000f000fu, 0x43004300u);
  b[1] = lop3_and_or(word >> 4, 0x000f000fu, 0x43004300u);
  b[2] = lop3_and_or(word >> 8, 0x000f000fu, 0x43004300u);
  b[3] = lop3_and_or(word >> 12, 0x000f000fu, 0x43004300u);
}

template <int MT, int NU, bool ONE_GROUP>
struct Cfg {
  static constexpr int BM = 16 * MT, BN = 128 * NU, GROUPS = ONE_GROUP ? 1 : kMaxGroups;
  static constexpr int A_BYTES = BM * kBK * 2, B_BYTES = BN * 32, SZ_BYTES = GROUPS * BN * 4;
  static constexpr int STAGE = A_BYTES + B_BYTES + SZ_BYTES;
  static constexpr int STAGES = 4;
  static constexpr int SMEM = STAGES * STAGE;
  // 16-byte chunks per stage, and per thread (rounded up).
  static constexpr int A_CHUNKS = BM * 8, B_CHUNKS = BN * 2, SZ_CHUNKS = GROUPS * BN / 4;
  static constexpr int A_ITERS = (A_CHUNKS + kThreads - 1) / kThreads, B_ITERS = B_CHUNKS / kThreads;
  static constexpr int Z_ITERS = (SZ_CHUNKS + kThreads - 1) / kThreads;
};

// ONE_GROUP: group_size % 64 == 0, so a k step lies in one group and the scale words are loaded once per step.
// FOLD (ONE_GROUP only): the MMAs take the raw codes 128 + q and accumulate one group into acc_g; at the group's
// last k step acc += s * (acc_g - (128 + z) * xsum) per output, where xsum (the group's row sums of x) comes from
// one extra MMA per k16 step with an all-ones B. Dequantization drops from 15 instructions per word of codes to 7,
// and the result is closer to exact (no per-weight bf16 rounding; fp32 cancellation error ~2^-17 relative).
template <int MT, int NU, bool ONE_GROUP, bool FOLD, int MINB>
__global__ void __launch_bounds__(kThreads, MINB) w4a16_kernel(W4A16KernelArgs a) {
  static_assert(ONE_GROUP || !FOLD, "the fold needs whole groups per k step");
  using C = Cfg<MT, NU, ONE_GROUP>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gid = lane / 4, tig = lane % 4;
  const int64_t m0 = int64_t(blockIdx.x) * C::BM, n0 = int64_t(blockIdx.y) * C::BN;
  const int split = blockIdx.z;
  const int kt_begin = split * a.kt_per_split;
  const int kt_end = int(imin(a.kt, int64_t(kt_begin) + a.kt_per_split));
  const int nsteps = kt_end > kt_begin ? kt_end - kt_begin : 0;
  const int K = int(a.K), gs = int(a.gs), groups = int(a.groups), np = int(a.np);

  // Per-thread copy state. The loads run for kt = kt_begin, kt_begin + 1, ... in order, so every source pointer
  // just advances by one k step per call (no 64-bit index arithmetic or divisions in the loop).
  // A: chunk i of this thread is row tid / 8 + 32 i, 16-byte column chunk tid % 8 (the same swizzle for every i).
  const int a_r = tid / 8, a_ch = tid % 8;
  const int a_dst = (a_r * 8 + (a_ch ^ (a_r & 7))) * 16;
  int a_col = kt_begin * kBK + a_ch * 8;
  const bf16_t* a_ptr = a.x + (m0 + a_r < a.M ? (m0 + a_r) * a.K + a_col : 0);
  uint32_t a_ok = 0;
#pragma unroll
  for (int i = 0; i < C::A_ITERS; ++i)
    a_ok |= uint32_t(tid + i * kThreads < C::A_CHUNKS && m0 + a_r + 32 * i < a.M) << i;
  // B: chunk i of this thread is unit (tid / 32 + 8 i) of the block, lane tid % 32; units are 32 chunks apart.
  const int64_t b_unit_stride = int64_t(kWarps) * 32;
  const int64_t nt_first = n0 / 16 + tid / 32;
  const int64_t b_step = a.np / 16 * 32;  // one k step further: the next row of units
  const uint4* b_ptr = a.tiles + (nt_first < a.np / 16 ? int64_t(kt_begin) * b_step + nt_first * 32 + tid % 32 : 0);
  uint32_t b_ok = 0;
#pragma unroll
  for (int i = 0; i < C::B_ITERS; ++i) b_ok |= uint32_t(nt_first + kWarps * i < a.np / 16) << i;
  // Scale words: chunk z_c is 4 columns (from z_col) of the step's group row z_gi.
  int z_gi[C::Z_ITERS];
  bool z_ok[C::Z_ITERS];
  const uint32_t* z_base[C::Z_ITERS];
#pragma unroll
  for (int i = 0; i < C::Z_ITERS; ++i) {
    const int c = tid + i * kThreads, col = (c % (C::BN / 4)) * 4;
    z_gi[i] = c / (C::BN / 4);
    z_ok[i] = c < C::SZ_CHUNKS && n0 + col < a.np;
    z_base[i] = a.sz + (z_ok[i] ? n0 + col : 0);
  }
  // ONE_GROUP: the group of k step kt is kt / spg (spg = k steps per group), tracked incrementally.
  const int spg = ONE_GROUP ? gs / kBK : 1;
  int z_group = ONE_GROUP ? kt_begin / spg : 0, z_left = ONE_GROUP ? spg - kt_begin % spg : 0;
  int load_kt = kt_begin;

  auto load = [&](int s) {
    unsigned char* st = smem + s * C::STAGE;
#pragma unroll
    for (int i = 0; i < C::A_ITERS; ++i) {
      if (tid + i * kThreads >= C::A_CHUNKS) break;
      const bool ok = ((a_ok >> i) & 1u) && a_col < K;
      cp_async16(st + a_dst + i * (32 * 8 * 16), ok ? a_ptr + int64_t(32 * i) * a.K : a.x, ok ? 16 : 0);
    }
    a_ptr += kBK;
    a_col += kBK;
#pragma unroll
    for (int i = 0; i < C::B_ITERS; ++i) {
      const bool ok = (b_ok >> i) & 1u;
      cp_async16(st + C::A_BYTES + (tid + i * kThreads) * 16, ok ? b_ptr + i * b_unit_stride : a.tiles, ok ? 16 : 0);
    }
    b_ptr += b_step;
    {
      int ga, ng;
      step_groups<ONE_GROUP>(load_kt, K, gs, spg, z_group, z_left, ga, ng);
#pragma unroll
      for (int i = 0; i < C::Z_ITERS; ++i) {
        const int c = tid + i * kThreads;
        if (c < C::SZ_CHUNKS && z_gi[i] < ng)
          cp_async16(st + C::A_BYTES + C::B_BYTES + c * 16, z_ok[i] ? z_base[i] + int64_t(ga + z_gi[i]) * np : a.sz,
                     z_ok[i] ? 16 : 0);
      }
    }
    ++load_kt;
  };

  float acc[MT][NU][2][4];
  // FOLD: this group's sums over the raw codes, and the group's row sums of x (rows gid: [0], gid + 8: [2]).
  float acc_g[FOLD ? MT : 1][FOLD ? NU : 1][2][4], xsum[FOLD ? MT : 1][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NU; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          acc[i][j][h][e] = 0.0f;
          if (FOLD) acc_g[i][j][h][e] = 0.0f;
        }
  if (FOLD) {
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) xsum[i][e] = 0.0f;
  }
  // FOLD: k steps left in the group being accumulated.
  int fold_left = ONE_GROUP ? spg - kt_begin % spg : 0;

#pragma unroll
  for (int s = 0; s < C::STAGES - 1; ++s) {
    if (s < nsteps) load(s);
    cp_async_commit();
  }
  int read_stage = 0, write_stage = C::STAGES - 1;

  // ldmatrix row / chunk of this lane for m16 tile 0 (tile mt adds 16 rows).
  const int lr = (lane & 7) + ((lane >> 3) & 1) * 8, lch = lane >> 4;

  for (int step = 0; step < nsteps; ++step) {
    cp_async_wait<C::STAGES - 2>();
    __syncthreads();
    if (step + C::STAGES - 1 < nsteps) load(write_stage);
    cp_async_commit();
    write_stage = write_stage == C::STAGES - 1 ? 0 : write_stage + 1;
    const int s = read_stage;
    read_stage = read_stage == C::STAGES - 1 ? 0 : read_stage + 1;
    const int k0 = (kt_begin + step) * kBK;
    const unsigned char* as = smem + s * C::STAGE;
    const uint4* bs = reinterpret_cast<const uint4*>(as + C::A_BYTES);
    const uint32_t* zs = reinterpret_cast<const uint32_t*>(as + C::A_BYTES + C::B_BYTES);
    uint4 bw[NU];
#pragma unroll
    for (int j = 0; j < NU; ++j) bw[j] = bs[(warp * NU + j) * 32 + lane];
    uint32_t szw[NU][2];
    if (ONE_GROUP && !FOLD) {
#pragma unroll
      for (int j = 0; j < NU; ++j) {
        const int nl = (warp * NU + j) * 16 + gid;
        szw[j][0] = zs[nl];
        szw[j][1] = zs[nl + 8];
      }
    }
    const int ga = ONE_GROUP ? 0 : k0 / gs;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      uint32_t af[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int r = mt * 16 + lr, ch = 2 * w + lch;
        ldmatrix_x4(af[mt], as + (r * 8 + (ch ^ (r & 7))) * 16);
      }
      if (!ONE_GROUP) {
        const int gi = min((k0 + 16 * w) / gs, groups - 1) - ga;
#pragma unroll
        for (int j = 0; j < NU; ++j) {
          const int nl = (warp * NU + j) * 16 + gid;
          szw[j][0] = zs[gi * C::BN + nl];
          szw[j][1] = zs[gi * C::BN + nl + 8];
        }
      }
      if (FOLD) {
        constexpr uint32_t kOnes = 0x3f803f80u;  // bf16 pair (1, 1)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma16816(xsum[mt], af[mt], kOnes, kOnes);
      }
#pragma unroll
      for (int j = 0; j < NU; ++j) {
        const uint32_t word = w == 0 ? bw[j].x : w == 1 ? bw[j].y : w == 2 ? bw[j].z : bw[j].w;
        uint32_t b[4];
        if (FOLD) {
          dequant_raw(word, b);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma16816(acc_g[mt][j][0], af[mt], b[0], b[1]);
            mma16816(acc_g[mt][j][1], af[mt], b[2], b[3]);
          }
        } else {
          dequant(word, szw[j][0], szw[j][1], b);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma16816(acc[mt][j][0], af[mt], b[0], b[1]);
            mma16816(acc[mt][j][1], af[mt], b[2], b[3]);
          }
        }
      }
    }
    if (FOLD && (--fold_left == 0 || step == nsteps - 1)) {
      // The group ends here (or this split does): the scale words of its columns are in this stage.
      fold_left = spg;
#pragma unroll
      for (int j = 0; j < NU; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint2 w2 = *reinterpret_cast<const uint2*>(zs + (warp * NU + j) * 16 + h * 8 + 2 * tig);
          const float s0 = __uint_as_float(w2.x << 16), z0 = __uint_as_float(w2.x & 0xffff0000u);
          const float s1 = __uint_as_float(w2.y << 16), z1 = __uint_as_float(w2.y & 0xffff0000u);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int rr = 0; rr < 2; ++rr) {
              float* g = &acc_g[mt][j][h][2 * rr];
              float* o = &acc[mt][j][h][2 * rr];
              const float xr = xsum[mt][2 * rr];
              o[0] = fmaf(s0, fmaf(-z0, xr, g[0]), o[0]);
              o[1] = fmaf(s1, fmaf(-z1, xr, g[1]), o[1]);
              g[0] = g[1] = 0.0f;
            }
        }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int e = 0; e < 4; ++e) xsum[mt][e] = 0.0f;
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NU; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          const int64_t m = m0 + mt * 16 + gid + rr * 8;
          if (m >= a.M) continue;
          const int64_t n = n0 + (warp * NU + j) * 16 + h * 8 + 2 * tig;
          const float v0 = acc[mt][j][h][rr * 2], v1 = acc[mt][j][h][rr * 2 + 1];
          if (a.splits > 1) {
            float* p = a.partial + (int64_t(split) * a.M + m) * a.N + n;
            if (n + 1 < a.N && a.n_even) {
              *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
            } else {
              if (n < a.N) p[0] = v0;
              if (n + 1 < a.N) p[1] = v1;
            }
          } else {
            const float b0 = a.bias && n < a.N ? load_elt(a.bias, a.bias_type, n) : 0.0f;
            const float b1 = a.bias && n + 1 < a.N ? load_elt(a.bias, a.bias_type, n + 1) : 0.0f;
            bf16_t* p = a.y + m * a.N + n;
            if (n + 1 < a.N && a.n_even) {
              *reinterpret_cast<uint32_t*>(p) = uint32_t(f2bf(v0 + b0)) | (uint32_t(f2bf(v1 + b1)) << 16);
            } else {
              if (n < a.N) p[0] = f2bf(v0 + b0);
              if (n + 1 < a.N) p[1] = f2bf(v1 + b1);
            }
          }
        }
}

__global__ void splitk_reduce_kernel(const float* partial, int splits, int64_t M, int64_t N, const void* bias,
                                     Elt bias_type, bf16_t* y) {
  const int64_t total = M * N;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    float v = 0.0f;
    for (int s = 0; s < splits; ++s) v += partial[int64_t(s) * total + i];
    if (bias) v += load_elt(bias, bias_type, i % N);
    y[i] = f2bf(v);
  }
}

__global__ void permute_kernel(const bf16_t* x, const int32_t* perm, int64_t M, int64_t K, bf16_t* out) {
  const int64_t total = M * K;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = i / K, j = i % K;
    out[i] = x[m * K + perm[j]];
  }
}

// One thread per 16 bytes of the output w [N, K]: row n = 16 nt + r, columns k = 64 kt + 16 w + 8 h .. + 7. Those 8
// codes sit in the words w of the four lanes (gid = r % 8, tig = 0..3) of unit (nt, kt), at nibbles p and p + 4 with
// p = 2 (r / 8) + h: one shift-and-mask per lane gives the bf16 pair (k = 2 tig, 2 tig + 1), already in output order.
// Eight consecutive threads write one row's 128 contiguous bytes.
__global__ void dequant_kernel(const uint32_t* tiles, const uint32_t* sz, int64_t N, int64_t K, int64_t np, int64_t kt,
                               int64_t groups, int64_t gs, bf16_t* w) {
  const int64_t total = (np / 16) * kt * 128;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int chunk = int(i % 8), r = int((i / 8) % 16);
    const int64_t unit = i / 128, nt = unit % (np / 16), ktile = unit / (np / 16);
    const int ws = chunk / 2, h = chunk % 2, gid = r % 8, p = 2 * (r / 8) + h;
    const int64_t n = nt * 16 + r, k = ktile * kBK + 16 * ws + 8 * h;
    if (n >= N || k >= K) continue;  // K % 8 == 0: a chunk is wholly inside K or wholly outside
    const uint32_t zw = sz[imin(k / gs, groups - 1) * np + n];
    const uint32_t s2 = __byte_perm(zw, 0, 0x1010), z2 = __byte_perm(zw, 0, 0x3232);
    const uint32_t* u = tiles + unit * 128 + gid * 16 + ws;
    uint4 o;
    o.x = bsub_mul(lop3_and_or(u[0] >> (4 * p), 0x000f000fu, 0x43004300u), z2, s2);
    o.y = bsub_mul(lop3_and_or(u[4] >> (4 * p), 0x000f000fu, 0x43004300u), z2, s2);
    o.z = bsub_mul(lop3_and_or(u[8] >> (4 * p), 0x000f000fu, 0x43004300u), z2, s2);
    o.w = bsub_mul(lop3_and_or(u[12] >> (4 * p), 0x000f000fu, 0x43004300u), z2, s2);
    *reinterpret_cast<uint4*>(w + n * K + k) = o;
  }
}

template <int MT, int NU, bool ONE_GROUP, bool FOLD, int MINB>
void launch_one(const W4A16KernelArgs& a, cudaStream_t stream) {
  using C = Cfg<MT, NU, ONE_GROUP>;
  static bool configured = false;
  if (!configured) {
    check_cuda(cudaFuncSetAttribute(w4a16_kernel<MT, NU, ONE_GROUP, FOLD, MINB>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM),
               "matmul_packed (w4a16 shared memory)");
    configured = true;
  }
  dim3 grid(unsigned((a.M + C::BM - 1) / C::BM), unsigned((a.np + C::BN - 1) / C::BN), unsigned(a.splits));
  w4a16_kernel<MT, NU, ONE_GROUP, FOLD, MINB><<<grid, kThreads, C::SMEM, stream>>>(a);
  check_launch("matmul_packed (w4a16)");
}

template <int MT, int NU, int MINB = 2, bool CAN_FOLD = true>
void launch_cfg(const W4A16KernelArgs& a, bool fold, cudaStream_t stream) {
  if constexpr (CAN_FOLD) {
    if (fold) return launch_one<MT, NU, true, true, MINB>(a, stream);
  }
  check(!fold, "matmul_packed (w4a16): the fold is not built for this tile configuration");
  if (a.tile_in_one_group) launch_one<MT, NU, true, false, MINB>(a, stream);
  else launch_one<MT, NU, false, false, MINB>(a, stream);
}

uint16_t host_f2bf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

}  // namespace

int cuda_sm_count() {
  static int n = [] {
    int dev = 0, v = 0;
    check_cuda(cudaGetDevice(&dev), "matmul_packed (device)");
    check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev), "matmul_packed (device)");
    return v;
  }();
  return n;
}

void launch_w4a16_splitk_reduce(const float* partial, int splits, int64_t M, int64_t N, const void* bias,
                                Elt bias_type, bf16_t* y, cudaStream_t stream) {
  splitk_reduce_kernel<<<blocks_for(M * N, 256, 4096), 256, 0, stream>>>(partial, splits, M, N, bias, bias_type, y);
  check_launch("matmul_packed (w4a16 split-K reduce)");
}

bool w4a16_supported(int bits, int64_t K, int64_t group_size) {
  return bits == 4 && K > 0 && K % 8 == 0 && group_size > 0 && K % group_size == 0 &&
         (group_size % 16 == 0 || group_size == K);
}

W4A16Dims w4a16_dims(int64_t N, int64_t K, int64_t group_size) {
  W4A16Dims d;
  d.np = (N + 15) / 16 * 16;
  d.kt = (K + kBK - 1) / kBK;
  d.groups = K / group_size;
  return d;
}

bool w4a16_repack(const uint32_t* qweight, const float* scales, const float* zeros, int64_t N, int64_t K,
                  int64_t group_size, uint32_t* tiles, uint32_t* sz) {
  const W4A16Dims d = w4a16_dims(N, K, group_size);
  const int64_t G = d.groups, words = K / 8;
  // Scales and integer zero points first: a non-integer zero point means this layout cannot hold the weight.
  bool ok = true;
  for (int64_t g = 0; g < G && ok; ++g)
    for (int64_t n = 0; n < d.np; ++n) {
      float s = 0.0f, z = 0.0f;
      if (n < N) {
        s = scales[n * G + g];
        const float zs = zeros[n * G + g];
        if (s == 0.0f) {
          if (zs != 0.0f) { ok = false; break; }
        } else {
          const float zf = zs / s, zr = std::nearbyint(zf);
          if (!std::isfinite(zf) || std::fabs(zf - zr) > 1e-3f * std::max(1.0f, std::fabs(zr)) || zr < -128.0f ||
              zr > 127.0f) { ok = false; break; }
          z = zr;
        }
      }
      sz[g * d.np + n] = uint32_t(host_f2bf(s)) | (uint32_t(host_f2bf(128.0f + z)) << 16);
    }
  if (!ok) return false;
  auto code = [&](int64_t n, int64_t k) -> uint32_t {
    if (n >= N || k >= K) return 0;
    return (qweight[n * words + k / 8] >> (4 * (k % 8))) & 0xfu;
  };
  parallel_for(d.np / 16, 4, [&](int64_t a, int64_t b) {
    for (int64_t nt = a; nt < b; ++nt)
      for (int64_t kt = 0; kt < d.kt; ++kt)
        for (int lane = 0; lane < 32; ++lane) {
          const int gid = lane / 4, tig = lane % 4;
          const int64_t na = nt * 16 + gid, nb = na + 8;
          for (int w = 0; w < 4; ++w) {
            const int64_t k = kt * kBK + 16 * w + 2 * tig;
            const uint32_t nib[8] = {code(na, k), code(na, k + 8), code(nb, k), code(nb, k + 8),
                                     code(na, k + 1), code(na, k + 9), code(nb, k + 1), code(nb, k + 9)};
            uint32_t word = 0;
            for (int j = 0; j < 8; ++j) word |= nib[j] << (4 * j);
            tiles[((kt * (d.np / 16) + nt) * 32 + lane) * 4 + w] = word;
          }
        }
  });
  return true;
}

void launch_w4a16_permute(const bf16_t* x, const int32_t* perm, int64_t M, int64_t K, bf16_t* out,
                          cudaStream_t stream) {
  if (M * K == 0) return;
  permute_kernel<<<blocks_for(M * K, 256, 4096), 256, 0, stream>>>(x, perm, M, K, out);
  check_launch("matmul_packed (act-order permute)");
}

size_t w4a16_partial_floats(const W4A16Args& p) { return size_t(p.partial_floats); }

W4A16Args w4a16_plan(int64_t M, int64_t N, int64_t K, int64_t group_size, int force_splits) {
  const W4A16Dims d = w4a16_dims(N, K, group_size);
  W4A16Args p{};
  p.M = M, p.N = N, p.K = K;
  p.mt = M <= 16 ? 1 : M <= 32 ? 2 : 4;
  const int64_t mblocks = (M + 16 * p.mt - 1) / (16 * p.mt);
  const int sms = cuda_sm_count();
  // The fold (see the kernel) pays when a group spans at least two k steps; its second accumulator set limits the
  // 32-row tile to 256 columns (128 registers a thread).
  static const bool fold_on = [] {  // DIFFULEX_W4A16_FOLD=0: the per-weight dequantization (for A/B timing)
    const char* v = std::getenv("DIFFULEX_W4A16_FOLD");
    return !(v && std::string(v) == "0");
  }();
  p.fold = fold_on && p.mt <= 2 && group_size % 128 == 0;
  // Small M: 16 x 256 tiles, 3 blocks an SM (24 warps hide the dequantization's dependent latencies); 32 rows:
  // 32 x 256 with the fold, else 32 x 512. Split-K makes up the parallelism. M > 32: 64 x 256 tiles when there are
  // enough of them, else 64 x 128.
  if (p.mt == 1) p.nu = 2, p.minb = 3;
  else if (p.mt == 2) p.nu = p.fold ? 2 : 4;
  else p.nu = mblocks * ((d.np + 255) / 256) >= sms ? 2 : 1;
  // Split-K for M <= 32: the count that minimizes w4a16_pick_splits's model, each split at least 3 k steps. Larger
  // M splits only when the tiles do not fill one wave (as many splits as fit); there the partial sums cost more
  // than the model's waves save (measured: LLaDA gate_up M = 256, 0.206 vs 0.166 ms).
  const int64_t slots = int64_t(sms) * p.minb;
  const int64_t blocks = mblocks * ((d.np + 128 * p.nu - 1) / (128 * p.nu));
  const double step_bytes = 128.0 * p.nu * 32 + 16.0 * p.mt * kBK * 2;
  if (p.mt <= 2 || force_splits > 0) {
    w4a16_pick_splits(p, d.kt, blocks, slots, step_bytes, std::max<int64_t>(1, d.kt / 3), force_splits);
  } else {
    const int64_t fill = blocks < slots ? std::min<int64_t>(slots / blocks, std::max<int64_t>(1, d.kt / 3)) : 1;
    w4a16_pick_splits(p, d.kt, blocks, slots, step_bytes, 0, int(std::max<int64_t>(1, fill)));
  }
  p.partial_floats = p.splits > 1 ? int64_t(p.splits) * M * N : 0;
  return p;
}

void launch_w4a16(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles, const uint32_t* sz, int64_t group_size,
                  const void* bias, Elt bias_type, bf16_t* y, float* partial, cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return;
  const W4A16KernelArgs a = w4a16_kernel_args(p, x, tiles, sz, group_size, bias, bias_type, y, partial);
  check(p.splits == 1 || partial, "matmul_packed (w4a16): split-K needs a partial-sum buffer");
  // (mt, nu, resident blocks) -> the instantiated tile configurations.
  const int key = p.mt * 100 + p.nu * 10 + p.minb;
  switch (key) {
    case 123: launch_cfg<1, 2, 3>(a, p.fold, stream); break;
    case 242: launch_cfg<2, 4, 2, false>(a, p.fold, stream); break;
    case 222: launch_cfg<2, 2>(a, p.fold, stream); break;
    case 412: launch_cfg<4, 1, 2, false>(a, p.fold, stream); break;
    case 422: launch_cfg<4, 2, 2, false>(a, p.fold, stream); break;
    default: fail("matmul_packed (w4a16): no tile configuration mt {} nu {} blocks {}", p.mt, p.nu, p.minb);
  }
  if (p.splits > 1) launch_w4a16_splitk_reduce(partial, p.splits, p.M, p.N, bias, bias_type, y, stream);
}

void launch_w4a16_dequant(const uint32_t* tiles, const uint32_t* sz, int64_t N, int64_t K, int64_t group_size,
                          bf16_t* w, cudaStream_t stream) {
  const W4A16Dims d = w4a16_dims(N, K, group_size);
  check(aligned16(w), "matmul_packed (w4a16 dequant): the scratch must be 16-byte aligned");
  const int64_t total = (d.np / 16) * d.kt * 128;
  dequant_kernel<<<blocks_for(total, 256, 16384), 256, 0, stream>>>(tiles, sz, N, K, d.np, d.kt, d.groups, group_size,
                                                                    w);
  check_launch("matmul_packed (w4a16 dequant)");
}

}  // namespace dlx::cuda
