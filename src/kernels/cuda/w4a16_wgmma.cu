// W4A16 on Hopper's warpgroup MMA (wgmma, sm_90a): y[M, N] = x[M, K] · W^T (+ bias) computed as Yᵀ = W · Xᵀ, so
// that the dequantized weight is wgmma's register operand A (64 output features per warpgroup and m64 block) and
// the tokens are its N operand (8 ... 128 a tile) from shared memory. Small and mid M stay efficient without padding
// the tokens to 64, and the tensor cores run at wgmma's rate (mma.sync, w4a16_mma.cu, tops out well below it).
//
// Weights: the same "CUDA W4A16 tiles" and scale/zero words as w4a16_mma.cu (layout described there), converted
// once at load. That layout already is wgmma's A fragment: a warpgroup's warp w takes rows 16w .. 16w+15 of the
// m64 block, and the A fragment of one warp for one k16 step is the mma.m16n8k16 A fragment, {a0a1, a2a3, a4a5,
// a6a7} = {(row gid, k 2tig..+1), (row gid+8, k 2tig..+1), (row gid, k 2tig+8..+9), (row gid+8, k 2tig+8..+9)}.
// The tile word w of lane (gid, tig) holds exactly these codes: (word >> 4j) & 0x000f000f for j = 0, 2, 1, 3.
// So one 16-byte load per lane gives the warp its A fragments of four k16 steps, and both kernels share the
// weight in memory (the backend picks per shape and M bucket, cuda_backend.cc).
//
// Activations: x tile [NT tokens][64 k] bf16 per k step, 128 bytes a row, 16-byte chunks swizzled as wgmma's
// 128-byte swizzle wants (chunk c of row r at c ^ (r % 8); the tile starts 1024-byte aligned). The B descriptor is
// K-major with 128-byte swizzle, stride 1024 bytes between 8-row groups; the k16 slice j starts 32 j bytes in.
//
// Block: WGS warpgroups (128 threads each), each computing MB m64 blocks x NT tokens, so a block covers
// 64 * MB * WGS output features and NT tokens. K is walked in steps of 64 through a STAGES-deep cp.async pipeline
// (every thread copies: activations, weight units, scale words). Per k step a warp loads its weight words
// (one 16-byte ld.shared per lane and m64 block), dequantizes them in registers (lop3 to the bf16 pair 128 + q,
// minus the bf16 pair 128 + z, times the bf16 scale: the same arithmetic as w4a16_mma.cu's dequant, so both kernels
// give the same weights), and issues 4 * MB wgmma, then waits for them (the other warpgroups and blocks of the SM
// keep the tensor cores busy meanwhile), so the stage is free at the next barrier.
// Split-K is that of w4a16_mma.cu: fp32 partial sums reduced by launch_w4a16_splitk_reduce. Without a split the
// epilogue adds the bias, rounds to bf16 and, when N % 8 == 0, stages the tile in shared memory for 16-byte stores
// along y's rows (a thread's accumulators hold features 8 apart, so direct stores would be 2-byte scatters).
#include <algorithm>

#include "core/error.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/w4a16_tiles.cuh"
#include "kernels/cuda/wgmma.cuh"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "w4a16_wgmma.cu is built for sm_90a only (CMakeLists.txt: -gencode=arch=compute_90a,code=sm_90a)"
#endif

namespace dlx::cuda {

namespace {

constexpr int kBK = 64, kMaxGroups = 4;

constexpr int round_up(int v, int to) { return (v + to - 1) / to * to; }

template <int NT, int MB, int WGS, int STAGES, bool ONE_GROUP>
struct WCfg {
  static constexpr int THREADS = 128 * WGS;
  static constexpr int BN = 64 * MB * WGS;  // output features a block
  static constexpr int UNITS = BN / 16;
  static constexpr int GROUPS = ONE_GROUP ? 1 : kMaxGroups;
  static constexpr int X_BYTES = NT * 128;  // a multiple of 1024 (NT % 8 == 0)
  static constexpr int W_BYTES = UNITS * 512;
  static constexpr int SZ_BYTES = GROUPS * BN * 4;
  static constexpr int STAGE = round_up(X_BYTES + W_BYTES + SZ_BYTES, 1024);
  static constexpr int SMEM = STAGES * STAGE + 1024;  // + slack to align the first stage to 1024 bytes
  static constexpr int X_CHUNKS = NT * 8, W_CHUNKS = UNITS * 32, SZ_CHUNKS = GROUPS * BN / 4;
  static constexpr int X_ITERS = (X_CHUNKS + THREADS - 1) / THREADS;
  static constexpr int W_ITERS = (W_CHUNKS + THREADS - 1) / THREADS;
  static constexpr int Z_ITERS = (SZ_CHUNKS + THREADS - 1) / THREADS;
  static_assert(NT % 8 == 0 && NT <= 256, "wgmma N is a multiple of 8 up to 256");
};

// wgmma's A fragment of one k16 step from one tile word: the mma.sync kernel's B registers (nibble pairs 0..3:
// rows gid / gid+8, k 2tig / 2tig+8) in the A fragment's register order {a0a1, a2a3, a4a5, a6a7} = {(row gid, k lo),
// (row gid+8, k lo), (row gid, k hi), (row gid+8, k hi)}.
__device__ __forceinline__ void dequant_a(uint32_t word, uint32_t sz0, uint32_t sz1, uint32_t (&a)[4]) {
  uint32_t b[4];
  dequant(word, sz0, sz1, b);
  a[0] = b[0], a[1] = b[2], a[2] = b[1], a[3] = b[3];
}

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t saddr) {
  return uint64_t((saddr & 0x3ffffu) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

__device__ __forceinline__ void fence_view_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
template <int R>
__device__ __forceinline__ void fence_regs(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

template <int NT, int MB, int WGS, int STAGES, bool ONE_GROUP, int MINB>
__global__ void __launch_bounds__(128 * WGS, MINB) w4a16_wgmma_kernel(W4A16KernelArgs a) {
  using C = WCfg<NT, MB, WGS, STAGES, ONE_GROUP>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gid = lane / 4, tig = lane % 4;
  const int wg = warp / 4, wi = warp % 4;
  const int64_t m0 = int64_t(blockIdx.x) * NT, n0 = int64_t(blockIdx.y) * C::BN;
  const int split = blockIdx.z;
  const int kt_begin = split * a.kt_per_split;
  const int kt_end = int(min(a.kt, int64_t(kt_begin) + a.kt_per_split));
  const int nsteps = kt_end > kt_begin ? kt_end - kt_begin : 0;
  const int K = int(a.K), gs = int(a.gs), groups = int(a.groups), np = int(a.np);

  // Copy state; every source pointer advances by one k step per load.
  // X: chunk c = tid + i * THREADS is row c / 8, 16-byte column chunk c % 8 (c % 8 == tid % 8 when THREADS % 8 == 0).
  const int x_ch = tid % 8;
  int x_col = kt_begin * kBK + x_ch * 8;
  const bf16_t* x_ptr[C::X_ITERS];
  int x_dst[C::X_ITERS];
  uint32_t x_ok = 0;
#pragma unroll
  for (int i = 0; i < C::X_ITERS; ++i) {
    const int c = tid + i * C::THREADS, r = c / 8;
    const bool ok = c < C::X_CHUNKS && m0 + r < a.M;
    x_ok |= uint32_t(ok) << i;
    x_ptr[i] = ok ? a.x + (m0 + r) * a.K + x_col : a.x;
    x_dst[i] = (r * 8 + (x_ch ^ (r & 7))) * 16;
  }
  // W: the block's units of one k step are contiguous (UNITS * 32 chunks); the next k step is np / 16 units on.
  const int64_t w_step = a.np / 16 * 32;
  const int64_t nt_first = n0 / 16;
  const uint4* w_ptr = a.tiles + int64_t(kt_begin) * w_step + nt_first * 32;
  uint32_t w_ok = 0;
#pragma unroll
  for (int i = 0; i < C::W_ITERS; ++i) {
    const int c = tid + i * C::THREADS;
    w_ok |= uint32_t(c < C::W_CHUNKS && nt_first + c / 32 < a.np / 16) << i;
  }
  // Scale words: chunk c is 4 columns of group row c / (BN / 4).
  const int spg = ONE_GROUP ? gs / kBK : 1;
  int z_group = ONE_GROUP ? kt_begin / spg : 0, z_left = ONE_GROUP ? spg - kt_begin % spg : 0;
  int load_kt = kt_begin;

  auto load = [&](int s) {
    unsigned char* st = smem + s * C::STAGE;
#pragma unroll
    for (int i = 0; i < C::X_ITERS; ++i) {
      if (tid + i * C::THREADS >= C::X_CHUNKS) break;
      const bool ok = ((x_ok >> i) & 1u) && x_col < K;
      cp_async16(st + x_dst[i], ok ? x_ptr[i] : a.x, ok ? 16 : 0);
      x_ptr[i] += kBK;
    }
    x_col += kBK;
#pragma unroll
    for (int i = 0; i < C::W_ITERS; ++i) {
      const int c = tid + i * C::THREADS;
      if (c >= C::W_CHUNKS) break;
      const bool ok = (w_ok >> i) & 1u;
      cp_async16(st + C::X_BYTES + c * 16, ok ? w_ptr + c : a.tiles, ok ? 16 : 0);
    }
    w_ptr += w_step;
    int ga, ng;
    step_groups<ONE_GROUP>(load_kt, K, gs, spg, z_group, z_left, ga, ng);
#pragma unroll
    for (int i = 0; i < C::Z_ITERS; ++i) {
      const int c = tid + i * C::THREADS;
      if (c >= C::SZ_CHUNKS) break;
      const int gi = c / (C::BN / 4), col = (c % (C::BN / 4)) * 4;
      if (gi < ng) {
        const bool ok = n0 + col < np;
        cp_async16(st + C::X_BYTES + C::W_BYTES + c * 16, ok ? a.sz + int64_t(ga + gi) * np + n0 + col : a.sz,
                   ok ? 16 : 0);
      }
    }
    ++load_kt;
  };

  float acc[MB][NT / 2];
#pragma unroll
  for (int b = 0; b < MB; ++b)
#pragma unroll
    for (int e = 0; e < NT / 2; ++e) acc[b][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nsteps) load(s);
    cp_async_commit();
  }
  int read_stage = 0, write_stage = STAGES - 1;

  for (int step = 0; step < nsteps; ++step) {
    cp_async_wait<STAGES - 2>();
    fence_view_async_shared();  // the copies above are read by wgmma (the async proxy)
    __syncthreads();            // every thread's copies landed; every warpgroup finished the previous step's wgmma
    if (step + STAGES - 1 < nsteps) load(write_stage);
    cp_async_commit();
    write_stage = write_stage == STAGES - 1 ? 0 : write_stage + 1;
    const unsigned char* st = smem + read_stage * C::STAGE;
    read_stage = read_stage == STAGES - 1 ? 0 : read_stage + 1;
    const uint4* ws = reinterpret_cast<const uint4*>(st + C::X_BYTES);
    const uint32_t* zs = reinterpret_cast<const uint32_t*>(st + C::X_BYTES + C::W_BYTES);
    const int k0 = (kt_begin + step) * kBK;
    const int ga = ONE_GROUP ? 0 : k0 / gs;

    uint32_t af[MB][4][4];
#pragma unroll
    for (int b = 0; b < MB; ++b) {
      const int unit = (wg * MB + b) * 4 + wi;
      const uint4 q = ws[unit * 32 + lane];
      const int r0 = unit * 16 + gid;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const int gi = ONE_GROUP ? 0 : min((k0 + 16 * kk) / gs, groups - 1) - ga;
        const uint32_t word = kk == 0 ? q.x : kk == 1 ? q.y : kk == 2 ? q.z : q.w;
        dequant_a(word, zs[gi * C::BN + r0], zs[gi * C::BN + r0 + 8], af[b][kk]);
      }
    }
    const uint32_t xs = smem_addr(st);
#pragma unroll
    for (int b = 0; b < MB; ++b) fence_regs(acc[b]);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int b = 0; b < MB; ++b) WgmmaRS<NT>::run(acc[b], af[b][kk], sw128_desc(xs + 32 * kk));
    wgmma_commit();
    wgmma_wait_all();
#pragma unroll
    for (int b = 0; b < MB; ++b) fence_regs(acc[b]);
  }
  cp_async_wait<0>();

  // Epilogue. acc[b][4j + e]: feature row (wg*MB + b)*64 + 16 wi + gid (+8 for e >= 2), token 8j + 2tig + (e & 1).
  const bool has_bias = a.bias && a.splits == 1;
  if (a.splits == 1 && a.y_vec) {
    // Through shared memory (the stages are free now): the block's y tile [NT tokens][BN features] in bf16, bias
    // added, then 16-byte stores along each token's row (a thread's own values are 8 rows apart in y).
    constexpr int LD = C::BN + 8;  // bf16 row stride, padded against bank conflicts
    static_assert(NT * LD * 2 <= STAGES * C::STAGE, "the y tile fits in the pipeline's shared memory");
    bf16_t* ys = reinterpret_cast<bf16_t*>(smem);
    __syncthreads();  // every warpgroup is past its last read of the stages
#pragma unroll
    for (int b = 0; b < MB; ++b)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int nl = (wg * MB + b) * 64 + 16 * wi + gid + 8 * h;
        const float bias = has_bias && n0 + nl < a.N ? load_elt(a.bias, a.bias_type, n0 + nl) : 0.0f;
#pragma unroll
        for (int j = 0; j < NT / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) ys[(8 * j + 2 * tig + e) * LD + nl] = f2bf(acc[b][4 * j + 2 * h + e] + bias);
      }
    __syncthreads();
    constexpr int CHUNKS = NT * (C::BN / 8);
#pragma unroll 4
    for (int c = tid; c < CHUNKS; c += C::THREADS) {
      const int r = c / (C::BN / 8), cc = c % (C::BN / 8);
      const int64_t m = m0 + r, n = n0 + cc * 8;
      if (m < a.M && n < a.N)  // N % 8 == 0 (y_vec): a chunk is wholly inside or outside
        *reinterpret_cast<uint4*>(a.y + m * a.N + n) = *reinterpret_cast<const uint4*>(ys + r * LD + cc * 8);
    }
    return;
  }
#pragma unroll
  for (int b = 0; b < MB; ++b)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t n = n0 + (wg * MB + b) * 64 + 16 * wi + gid + 8 * h;
      if (n >= a.N) continue;
      const float bias = has_bias ? load_elt(a.bias, a.bias_type, n) : 0.0f;
#pragma unroll
      for (int j = 0; j < NT / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t m = m0 + 8 * j + 2 * tig + e;
          if (m >= a.M) continue;
          const float v = acc[b][4 * j + 2 * h + e];
          if (a.splits > 1) a.partial[(int64_t(split) * a.M + m) * a.N + n] = v;
          else a.y[m * a.N + n] = f2bf(v + bias);
        }
    }
}

template <int NT, int MB, int WGS, int STAGES, bool ONE_GROUP, int MINB>
void launch_one(const W4A16KernelArgs& a, cudaStream_t stream) {
  using C = WCfg<NT, MB, WGS, STAGES, ONE_GROUP>;
  auto* kernel = w4a16_wgmma_kernel<NT, MB, WGS, STAGES, ONE_GROUP, MINB>;
  static bool configured = false;
  if (!configured) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM),
               "matmul_packed (w4a16 wgmma shared memory)");
    configured = true;
  }
  dim3 grid(unsigned((a.M + NT - 1) / NT), unsigned((a.np + C::BN - 1) / C::BN), unsigned(a.splits));
  kernel<<<grid, C::THREADS, C::SMEM, stream>>>(a);
  check_launch("matmul_packed (w4a16 wgmma)");
}

// Tile configurations by token tile: (MB, WGS, STAGES, resident blocks).
template <int NT>
struct Tile;
template <> struct Tile<8> { static constexpr int MB = 2, WGS = 2, STAGES = 6, MINB = 2; };
template <> struct Tile<16> { static constexpr int MB = 2, WGS = 2, STAGES = 6, MINB = 2; };
template <> struct Tile<32> { static constexpr int MB = 2, WGS = 2, STAGES = 5, MINB = 2; };
template <> struct Tile<64> { static constexpr int MB = 2, WGS = 2, STAGES = 4, MINB = 1; };
template <> struct Tile<128> { static constexpr int MB = 2, WGS = 2, STAGES = 4, MINB = 1; };

template <int NT>
void launch_nt(const W4A16KernelArgs& a, bool one_group, cudaStream_t stream) {
  using T = Tile<NT>;
  if (one_group) launch_one<NT, T::MB, T::WGS, T::STAGES, true, T::MINB>(a, stream);
  else launch_one<NT, T::MB, T::WGS, T::STAGES, false, T::MINB>(a, stream);
}

int block_features(int nt) {
  switch (nt) {
    case 8: return 64 * Tile<8>::MB * Tile<8>::WGS;
    case 16: return 64 * Tile<16>::MB * Tile<16>::WGS;
    case 32: return 64 * Tile<32>::MB * Tile<32>::WGS;
    case 64: return 64 * Tile<64>::MB * Tile<64>::WGS;
    default: return 64 * Tile<128>::MB * Tile<128>::WGS;
  }
}

}  // namespace

bool w4a16_wgmma_available() {
  static const bool ok = [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
      return false;
    if (major != 9 || minor != 0) return false;  // sm_90a machine code runs on compute capability 9.0 only
    cudaFuncAttributes attr{};
    const bool loaded =
        cudaFuncGetAttributes(&attr, w4a16_wgmma_kernel<8, 2, 2, 6, true, 2>) == cudaSuccess && attr.maxThreadsPerBlock > 0;
    (void)cudaGetLastError();
    return loaded;
  }();
  return ok;
}

W4A16Args w4a16_wgmma_plan(int64_t M, int64_t N, int64_t K, int64_t group_size, int force_splits) {
  const W4A16Dims d = w4a16_dims(N, K, group_size);
  W4A16Args p{};
  p.M = M, p.N = N, p.K = K;
  p.wg_nt = M <= 8 ? 8 : M <= 16 ? 16 : M <= 32 ? 32 : M <= 64 ? 64 : 128;
  p.minb = p.wg_nt <= 32 ? 2 : 1;
  const int bn = block_features(p.wg_nt);
  const int64_t mblocks = (M + p.wg_nt - 1) / p.wg_nt;
  const int64_t blocks = mblocks * ((d.np + bn - 1) / bn);
  // Split-K when the tiles are too few for the GPU (w4a16_pick_splits's model), at least 3 k steps a split.
  const int64_t slots = int64_t(cuda_sm_count()) * p.minb;
  w4a16_pick_splits(p, d.kt, blocks, slots, double(bn) * 32 + double(p.wg_nt) * kBK * 2,
                    std::max<int64_t>(1, d.kt / 3), force_splits);
  return p;
}

void launch_w4a16_wgmma(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles, const uint32_t* sz,
                        int64_t group_size, const void* bias, Elt bias_type, bf16_t* y, float* partial,
                        cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return;
  const W4A16KernelArgs a = w4a16_kernel_args(p, x, tiles, sz, group_size, bias, bias_type, y, partial);
  check(p.splits == 1 || partial, "matmul_packed (w4a16 wgmma): split-K needs a partial-sum buffer");
  const bool one_group = a.tile_in_one_group;
  switch (p.wg_nt) {
    case 8: launch_nt<8>(a, one_group, stream); break;
    case 16: launch_nt<16>(a, one_group, stream); break;
    case 32: launch_nt<32>(a, one_group, stream); break;
    case 64: launch_nt<64>(a, one_group, stream); break;
    case 128: launch_nt<128>(a, one_group, stream); break;
    default: fail("matmul_packed (w4a16 wgmma): no token tile {}", p.wg_nt);
  }
  if (p.splits > 1) launch_w4a16_splitk_reduce(partial, p.splits, p.M, p.N, bias, bias_type, y, stream);
}

}  // namespace dlx::cuda
