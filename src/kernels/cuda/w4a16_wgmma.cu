// W4A16 on Hopper's warpgroup MMA (wgmma, sm_90a): y[M, N] = x[M, K] · W^T (+ bias) computed as Yᵀ = W · Xᵀ, so
// that the dequantized weight is wgmma's register operand A (64 output features per warpgroup and m64 block) and
// the tokens are its N operand (8 ... 256 a tile) from shared memory. Small and mid M stay efficient without padding
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
// 128-byte swizzle wants (chunk c of row r at c ^ (r % 8); the tile starts 1024-byte aligned), which is what the
// bulk tensor copy engine writes with CU_TENSOR_MAP_SWIZZLE_128B. The B descriptor is K-major with 128-byte swizzle,
// stride 1024 bytes between 8-row groups; the k16 slice j starts 32 j bytes in.
//
// Block: one producer warpgroup and WGS consumer warpgroups (128 threads each); consumer warpgroup c computes MB
// m64 blocks x NT tokens, so a block covers 64 * MB * WGS output features and NT tokens. K is walked in steps of 64
// through a STAGES-deep shared-memory ring guarded by mbarriers (full: the stage's bytes landed; empty: every
// consumer warp is done with it):
// - the producer (one thread) waits for a stage to be empty, then has the copy engine fill it: the x tile by a
//   tensor copy (rows past M and columns past K arrive as zeros), the block's weight units of the k step (one
//   contiguous run) and its scale-word rows by bulk copies, all completing on the stage's full barrier;
// - a consumer warp dequantizes step t + 1's weight words from shared memory into registers (lop3 to the bf16 pair
//   128 + q, minus the bf16 pair 128 + z, times the bf16 scale: the arithmetic of w4a16_mma.cu's dequant, so both
//   kernels give the same weights; with FOLD, below, without the scale) while the tensor cores run step t's 4 * MB
//   wgmma (two register sets, ping-pong), and frees step t - 1's stage once wgmma.wait_group 1 says that step is
//   done.
// No block-wide barrier is in the main loop: the copy engine, the dequantization and the MMA of different steps
// overlap. Register budgets move from the producer to the consumers with setmaxnreg where one block fills the SM.
// Persistent blocks walk units: first the tiles that fill whole waves of the grid, unsplit; then the tiles of the
// last, partial wave (every tile of a narrow shape with fewer tiles than the grid), split along K so that every
// block has work. Each split writes its fp32 accumulators, and the last split of a tile to finish (a per-tile
// counter, reset by that split for the next launch) sums them in split order into its registers and writes y as an
// unsplit block does: one launch, deterministic. The epilogue adds the bias, rounds to bf16 and, when N % 8 == 0,
// stages the tile in shared memory for 16-byte stores along y's rows (a thread's accumulators hold features 8
// apart, so direct stores would be 2-byte scatters).
#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>

#include "core/error.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/tuner_key.h"
#include "kernels/cuda/w4a16_tiles.cuh"
#include "kernels/cuda/wgmma.cuh"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "w4a16_wgmma.cu is built for sm_90a only (CMakeLists.txt: -gencode=arch=compute_90a,code=sm_90a)"
#endif

namespace dlx::cuda {

namespace {

constexpr int kBK = 64, kMaxGroups = 4;
// Per-tile arrival counters of the in-kernel split-K reduction (zero between launches); only the tiles of the last,
// partial wave of the persistent grid are split, fewer than this.
constexpr int kSplitCounters = 8192;

constexpr int round_up(int v, int to) { return (v + to - 1) / to * to; }

template <int NT, int MB, int WGS, int STAGES, bool ONE_GROUP>
struct WCfg {
  static constexpr int CONSUMERS = 128 * WGS;
  static constexpr int THREADS = CONSUMERS + 128;  // + the producer warpgroup
  static constexpr int BN = 64 * MB * WGS;         // output features a block
  static constexpr int UNITS = BN / 16;
  static constexpr int GROUPS = ONE_GROUP ? 1 : kMaxGroups;
  static constexpr int X_BYTES = NT * 128;  // a multiple of 1024 (NT % 8 == 0)
  static constexpr int W_BYTES = UNITS * 512;
  static constexpr int SZ_BYTES = GROUPS * BN * 4;
  static constexpr int STAGE = round_up(X_BYTES + W_BYTES + SZ_BYTES, 1024);
  static constexpr int LD = BN + 8;  // the epilogue's y tile: bf16 row stride, padded against bank conflicts
  // The ring, the epilogue's y tile [NT][LD] bf16, and slack to align the first stage to 1024 bytes.
  static constexpr int SMEM = STAGES * STAGE + NT * LD * 2 + 1024;
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

// FOLD: the A fragment of (q - z) only, exact small integers in bf16 ((128 + q) - (128 + z)); the group's scale
// multiplies the group's fp32 partial sums instead (fold below). z0 / z1: the bf16 pair 128 + z of rows gid / gid+8.
__device__ __forceinline__ void dequant_a_raw(uint32_t word, uint32_t z0, uint32_t z1, uint32_t (&a)[4]) {
  a[0] = bsub(lop3_and_or(word, 0x000f000fu, 0x43004300u), z0);
  a[2] = bsub(lop3_and_or(word >> 4, 0x000f000fu, 0x43004300u), z0);
  a[1] = bsub(lop3_and_or(word >> 8, 0x000f000fu, 0x43004300u), z1);
  a[3] = bsub(lop3_and_or(word >> 12, 0x000f000fu, 0x43004300u), z1);
}

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart.
// Its low word (the address / 16 in bits 0-13, the leading byte offset 1 at bit 16) and the whole descriptor from
// the low word. The address field never carries into the next one (shared memory is under 256 KB), so the low word
// of k16 slice kk of a tile is the tile's plus 2 kk.
__device__ __forceinline__ uint32_t sw128_desc_lo(uint32_t saddr) { return ((saddr & 0x3ffffu) >> 4) | (1u << 16); }
__device__ __forceinline__ uint64_t sw128_desc_of(uint32_t lo) {
  return uint64_t(lo) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
template <int R>
__device__ __forceinline__ void fence_regs(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// --- mbarriers and the copy engine -----------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// Arrives and adds `bytes` to the transaction count the phase waits for.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_addr(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}
// bytes (a multiple of 16) from global src to shared dst, completing on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
// The box of a 3-D tensor map at element coordinates (c0 innermost, c1, c2), completing on bar.
__device__ __forceinline__ void tensor_copy_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2,
                                               uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}
// The box of a 2-D tensor map at element coordinates (c0 innermost, c1), completing on bar.
__device__ __forceinline__ void tensor_copy_2d(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS));
}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS));
}
// Barrier among the consumer warpgroups only (the producer warpgroup has left by then).
__device__ __forceinline__ void consumer_sync(int threads) {
  asm volatile("bar.sync 1, %0;\n" ::"r"(threads) : "memory");
}

// The work of one block: units u = blockIdx.x, + gridDim.x, ... Units [0, dp_tiles) are whole tiles (the tiles
// that fill whole waves of the persistent grid, data-parallel); the units after them split each remaining tile
// `splits` ways along K (unit dp_tiles + v is split v % splits of tail tile v / splits), so that the last, partial
// wave is spread over every block instead of leaving most of them idle (the hybrid of data-parallel and split-K
// that stream-K kernels use). Tile t is token block t % mblocks of feature block t / mblocks, so the blocks that
// run at the same time share weight columns in L2. A unit's k steps: [kt_begin, kt_begin + nsteps).
struct Unit {
  int64_t m0, n0, tail;  // tail: the tile's index among the split tiles (its counter and partials); -1 unsplit
  int split, kt_begin, nsteps;
};
template <int NT, int BN>
__device__ __forceinline__ Unit unit_of(const W4A16KernelArgs& a, int u) {
  const int mblocks = int((a.M + NT - 1) / NT);
  Unit w;
  int64_t tile;
  if (u < a.dp_tiles || a.splits == 1) {
    tile = u, w.tail = -1, w.split = 0, w.kt_begin = 0, w.nsteps = int(a.kt);
  } else {
    const int64_t v = u - a.dp_tiles;
    w.tail = v / a.splits;
    tile = a.dp_tiles + w.tail;
    w.split = int(v % a.splits);
    w.kt_begin = w.split * a.kt_per_split;
    const int64_t end = min(a.kt, int64_t(w.kt_begin) + a.kt_per_split);
    w.nsteps = end > w.kt_begin ? int(end - w.kt_begin) : 0;
  }
  w.m0 = (tile % mblocks) * int64_t(NT);
  w.n0 = (tile / mblocks) * int64_t(BN);
  return w;
}

// REGS > 0: the register budget of a consumer thread after setmaxnreg (the producer warpgroup drops to 40).
// ACCS: accumulator sets a m64 block; k16 slice kk of a step goes to set kk % ACCS, so that consecutive wgmma are
// independent (a chain of wgmma on one accumulator waits out each one's latency, which dominates at small NT), and
// the sets are summed in a fixed order when the unit's k steps are done.
// FOLD (small token tiles, a group a multiple of the k step): the register operand is q - z without the scale, and
// each group's scale multiplies that group's fp32 partial sums once the group is done: 11 instructions a weight word
// (8 weights) instead of 15 at the small M where dequantization is most of a step's instructions (the measured
// effect and why it is small, the kernel waiting on its loads there: docs/PERFORMANCE.md). A group's sums take
// ACCS sets of their own; before the next group's first step the warp waits for the group's last wgmma (the other
// warps on the SM keep issuing meanwhile) and folds, and that step overwrites the sets (wgmma's scale-d predicate)
// instead of zeroing them.
template <int NT, int MB, int WGS, int STAGES, bool ONE_GROUP, int MINB, int REGS, int ACCS, bool FOLD>
__global__ void __launch_bounds__(128 * WGS + 128, MINB)
    w4a16_wgmma_kernel(const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap w_map,
                       const __grid_constant__ CUtensorMap z_map, bool tma_weights, W4A16KernelArgs a, int* counters,
                       int units) {
  using C = WCfg<NT, MB, WGS, STAGES, ONE_GROUP>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  __shared__ int last_split;
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, gid = lane / 4, tig = lane % 4;
  const int K = int(a.K), gs = int(a.gs), groups = int(a.groups), np = int(a.np);

  if (tid == 0) {
    // The activations' tensor map into the descriptor cache while the barriers are set up (the first copy would
    // otherwise fetch it first).
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&x_map)) : "memory");
    if (tma_weights)
      asm volatile("prefetch.tensormap [%0];\n prefetch.tensormap [%1];\n" ::"l"(reinterpret_cast<uint64_t>(&w_map)),
                   "l"(reinterpret_cast<uint64_t>(&z_map))
                   : "memory");
    for (int s = 0; s < STAGES; ++s) mbar_init(&full[s], 1), mbar_init(&empty[s], 4 * WGS);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (warp < 4) {
    // Producer warpgroup: one thread drives the copy engine through every unit's k steps (g counts the block's
    // steps: stage g % STAGES, phase g / STAGES); the rest leave.
    if (REGS > 0) setmaxnreg_dec<40>();
    if (tid != 0) return;
    const int spg = ONE_GROUP ? gs / kBK : 1;
    const int64_t w_step = a.np / 16 * 512;
    int g = 0;
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
      const Unit w = unit_of<NT, C::BN>(a, u);
      int z_group = ONE_GROUP ? w.kt_begin / spg : 0, z_left = ONE_GROUP ? spg - w.kt_begin % spg : 0;
      // The block's weight rows as pieces: one run of BN rows from n0 (cut at np), or with the SwiGLU epilogue the
      // gate rows hn .. hn + BN/2 and the up rows I + hn .. (each cut at I) into the stage's two halves.
      const int64_t si = a.swiglu_i, hn = w.n0 / 2;
      const int pieces = si ? 2 : 1;
      const int64_t rows = si ? min(int64_t(C::BN / 2), si - hn) : min(int64_t(C::BN), a.np - w.n0);
      const uint32_t w_bytes = uint32_t(rows / 16 * 512), z_bytes = uint32_t(rows * 4);
      const int64_t row_a = si ? hn : w.n0, row_b = si + hn;  // the pieces' first rows (row_b: SwiGLU's up rows)
      const unsigned char* w_base = reinterpret_cast<const unsigned char*>(a.tiles) + int64_t(w.kt_begin) * w_step;
      for (int t = 0; t < w.nsteps; ++t, ++g) {
        const int s = g % STAGES;
        if (g >= STAGES) mbar_wait(&empty[s], uint32_t((g / STAGES - 1) & 1));
        int ga, ng;
        step_groups<ONE_GROUP>(w.kt_begin + t, K, gs, spg, z_group, z_left, ga, ng);
        unsigned char* st = smem + s * C::STAGE;
        if (tma_weights) {
          // Tensor copies count their whole box, the units and scale words past np included (zeros, which the
          // consumers compute with and the epilogue drops): UNITS units and BN words a group.
          mbar_arrive_expect_tx(&full[s], uint32_t(C::X_BYTES + C::W_BYTES) + uint32_t(ng * C::BN * 4));
          tensor_copy_2d(st, &x_map, (w.kt_begin + t) * kBK, int(w.m0), &full[s]);
          tensor_copy_3d(st + C::X_BYTES, &w_map, 0, int(w.n0 / 16), w.kt_begin + t, &full[s]);
          for (int gi = 0; gi < ng; ++gi)
            tensor_copy_2d(st + C::X_BYTES + C::W_BYTES + gi * C::BN * 4, &z_map, int(w.n0), ga + gi, &full[s]);
          continue;
        }
        mbar_arrive_expect_tx(&full[s], uint32_t(C::X_BYTES) + uint32_t(pieces) * (w_bytes + uint32_t(ng) * z_bytes));
        tensor_copy_2d(st, &x_map, (w.kt_begin + t) * kBK, int(w.m0), &full[s]);
#pragma unroll
        for (int p = 0; p < 2; ++p) {
          if (p == pieces) break;
          const int64_t r0 = p ? row_b : row_a;
          bulk_copy(st + C::X_BYTES + p * (C::W_BYTES / 2), w_base + int64_t(t) * w_step + r0 / 16 * 512, w_bytes,
                    &full[s]);
          for (int gi = 0; gi < ng; ++gi)
            bulk_copy(st + C::X_BYTES + C::W_BYTES + gi * C::BN * 4 + p * (C::BN / 2) * 4,
                      a.sz + int64_t(ga + gi) * np + r0, z_bytes, &full[s]);
        }
      }
    }
    return;
  }

  // Consumer warpgroups.
  if (REGS > 0) setmaxnreg_inc<REGS>();
  const int ctid = tid - 128, cw = warp / 4 - 1, wi = warp % 4;
  // FOLD: accg[b][i] holds the current group's partial sums of (q - z) x (set i takes the k16 slices kk of each step
  // with kk % ACCS == i); once the group's last step has completed they are scaled by the group's scales into acc
  // (fold). Otherwise acc and acc_x are the ACCS sets of dequantized weights.
  float acc[MB][NT / 2];
  constexpr int XS = FOLD ? 0 : ACCS - 1;  // acc_x: sets 1 .. ACCS-1 without FOLD
  float acc_x[MB][XS > 0 ? XS : 1][NT / 2];
  float accg[MB][FOLD ? ACCS : 1][NT / 2];
  uint32_t a0[MB][4][4], a1[MB][4][4];
  uint32_t g0 = 0;  // the block's k steps before this unit's
  const int spg = ONE_GROUP ? gs / kBK : 1;  // k steps a group (FOLD)
  // This thread's weight words and scale words within a stage.
  const int q_off = C::X_BYTES + (cw * MB * 4 + wi) * 512 + lane * 16;
  const int z_off = C::X_BYTES + C::W_BYTES + ((cw * MB * 4 + wi) * 16 + gid) * 4;
  if constexpr (FOLD) {
#pragma unroll
    for (int b = 0; b < MB; ++b)
#pragma unroll
      for (int i = 0; i < ACCS; ++i)
#pragma unroll
        for (int e = 0; e < NT / 2; ++e) accg[b][i][e] = 0.0f;
  }

  // Step t's A fragments (weight words of its stage, dequantized), after waiting for the stage to land.
  auto dequant_step = [&](const Unit& w, int t, uint32_t(&af)[MB][4][4]) {
    const uint32_t g = g0 + uint32_t(t), s = g % STAGES;
    mbar_wait(&full[s], (g / STAGES) & 1);
    const unsigned char* st = smem + s * C::STAGE;
#pragma unroll
    for (int b = 0; b < MB; ++b) {
      // Unit (cw * MB + b) * 4 + wi of the block: 512 bytes of words, then 16 scale words.
      const uint4 q = *reinterpret_cast<const uint4*>(st + q_off + b * 4 * 512);
      const uint32_t* zs = reinterpret_cast<const uint32_t*>(st + z_off + b * 4 * 64);
      if constexpr (FOLD) {
        const uint32_t z0 = __byte_perm(zs[0], 0, 0x3232), z1 = __byte_perm(zs[8], 0, 0x3232);
        dequant_a_raw(q.x, z0, z1, af[b][0]);
        dequant_a_raw(q.y, z0, z1, af[b][1]);
        dequant_a_raw(q.z, z0, z1, af[b][2]);
        dequant_a_raw(q.w, z0, z1, af[b][3]);
      } else {
        const int k0 = (w.kt_begin + t) * kBK;
        const int ga = ONE_GROUP ? 0 : k0 / gs;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const int gi = ONE_GROUP ? 0 : min((k0 + 16 * kk) / gs, groups - 1) - ga;
          const uint32_t word = kk == 0 ? q.x : kk == 1 ? q.y : kk == 2 ? q.z : q.w;
          dequant_a(word, zs[gi * C::BN], zs[gi * C::BN + 8], af[b][kk]);
        }
      }
    }
  };
  auto fence_acc = [&](int b) {
    fence_regs(acc[b]);
#pragma unroll
    for (int i = 0; i < XS; ++i) fence_regs(acc_x[b][i]);
    if constexpr (FOLD) {
#pragma unroll
      for (int i = 0; i < ACCS; ++i) fence_regs(accg[b][i]);
    }
  };
  // FOLD: the group of step t is complete: acc += s * (its partial sums), s the bf16 scale of the row (the low half of the
  // scale word in step t's stage, which holds that group's words).
  auto fold = [&](int t) {
    const unsigned char* st = smem + ((g0 + uint32_t(t)) % STAGES) * C::STAGE;
#pragma unroll
    for (int b = 0; b < MB; ++b) {
      const uint32_t* zs = reinterpret_cast<const uint32_t*>(st + z_off + b * 4 * 64);
      const float s0 = __uint_as_float(zs[0] << 16), s1 = __uint_as_float(zs[8] << 16);
#pragma unroll
      for (int e = 0; e < NT / 2; ++e) {
        float sum = accg[b][0][e];
#pragma unroll
        for (int i = 1; i < ACCS; ++i) sum += accg[b][i][e];
        acc[b][e] = fmaf(e & 2 ? s1 : s0, sum, acc[b][e]);
      }
    }
  };
  // FOLD bookkeeping (warp-uniform): k steps left in the group of the step being issued.
  int ileft = 0, first_len = 0;
  auto mma_step = [&](int t, const uint32_t(&af)[MB][4][4]) {
    const uint32_t s = (g0 + uint32_t(t)) % STAGES;
    const uint32_t desc = sw128_desc_lo(smem_addr(smem + s * C::STAGE));
    bool first = false;
    if constexpr (FOLD) {
      first = ileft == 0;
      if (first) {
        ileft = t == 0 ? first_len : spg;
        // Step t starts a new group: the previous group's sums are folded once its last step (t - 1, whose stage is
        // still held) has completed, before this step's wgmma overwrite them.
        if (t > 0) {
          wgmma_wait<0>();
#pragma unroll
          for (int b = 0; b < MB; ++b) fence_acc(b);
          fold(t - 1);
        }
      }
      --ileft;
    }
#pragma unroll
    for (int b = 0; b < MB; ++b) fence_acc(b);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int b = 0; b < MB; ++b) {
        const uint64_t d = sw128_desc_of(desc + 2 * kk);
        if constexpr (FOLD) WgmmaRS<NT>::run(accg[b][kk % ACCS], af[b][kk], d, !(first && kk < ACCS));
        else if (kk % ACCS == 0) WgmmaRS<NT>::run(acc[b], af[b][kk], d);
        else WgmmaRS<NT>::run(acc_x[b][kk % ACCS - 1], af[b][kk], d);
      }
    wgmma_commit();
  };
  // Step t is done with its stage (its wgmma group has completed): the warp hands the stage back.
  auto release = [&](int t) {
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[(g0 + uint32_t(t)) % STAGES]);
  };
  auto settle = [&] {
    wgmma_wait<1>();
#pragma unroll
    for (int b = 0; b < MB; ++b) fence_acc(b);
  };

  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const Unit w = unit_of<NT, C::BN>(a, u);
    const int nsteps = w.nsteps;
    if constexpr (FOLD) ileft = 0, first_len = spg - w.kt_begin % spg;
#pragma unroll
    for (int b = 0; b < MB; ++b)
#pragma unroll
      for (int e = 0; e < NT / 2; ++e) {
        acc[b][e] = 0.0f;
#pragma unroll
        for (int i = 0; i < XS; ++i) acc_x[b][i][e] = 0.0f;
      }
    // Ping-pong: step t + 1 is dequantized into the other register set while step t's wgmma group runs;
    // wgmma.wait_group 1 after issuing a step means the step before it is done (its registers and stage are free).
    if (nsteps > 0) dequant_step(w, 0, a0);
    for (int t = 0; t < nsteps; t += 2) {
      mma_step(t, a0);
      settle();
      if (t > 0) release(t - 1);
      if (t + 1 >= nsteps) break;
      dequant_step(w, t + 1, a1);
      mma_step(t + 1, a1);
      settle();
      release(t);
      if (t + 2 < nsteps) dequant_step(w, t + 2, a0);
    }
    wgmma_wait<0>();
#pragma unroll
    for (int b = 0; b < MB; ++b) {
      fence_acc(b);
#pragma unroll
      for (int i = 0; i < XS; ++i)
#pragma unroll
        for (int e = 0; e < NT / 2; ++e) acc[b][e] += acc_x[b][i][e];
    }
    if (nsteps > 0) {
      if constexpr (FOLD) fold(nsteps - 1);  // the unit's last group
      release(nsteps - 1);
    }
    g0 += uint32_t(nsteps);

    if (w.tail >= 0) {
      // Split-K: each split stores its accumulators for the tile in register order (coalesced: slot r of consumer
      // thread t at r * CONSUMERS + t), and the last split of the tile to arrive sums all of them, in split order,
      // back into the same registers; it then writes y like an unsplit tile.
      constexpr int SLOTS = MB * NT / 2;
      float* mine = a.partial + (w.tail * a.splits + w.split) * int64_t(SLOTS * C::CONSUMERS) + ctid;
#pragma unroll
      for (int b = 0; b < MB; ++b)
#pragma unroll
        for (int e = 0; e < NT / 2; ++e) mine[(b * NT / 2 + e) * C::CONSUMERS] = acc[b][e];
      __threadfence();
      consumer_sync(C::CONSUMERS);
      if (ctid == 0) {
        int* counter = counters + w.tail;
        const int arrived = atomicAdd(counter, 1);
        last_split = arrived == a.splits - 1;
        if (last_split) *counter = 0;  // every split has arrived: ready for the next launch
      }
      consumer_sync(C::CONSUMERS);
      if (!last_split) continue;
      __threadfence();
#pragma unroll
      for (int b = 0; b < MB; ++b)
#pragma unroll
        for (int e = 0; e < NT / 2; ++e) acc[b][e] = 0.0f;
      // The small tiles (a few partial values a thread) load R splits' partials before adding any, so that their L2
      // round trips overlap instead of making a chain of `splits` of them after the arrival counter's; the sum is in
      // split order either way. The larger tiles have enough loads in flight a split (and no registers to spare).
      constexpr int R = SLOTS <= 4 ? 4 : SLOTS <= 8 ? 2 : 1;  // <= 16 more registers (the small tiles have ~80)
      const float* src = a.partial + w.tail * a.splits * int64_t(SLOTS * C::CONSUMERS) + ctid;
      for (int sp = 0; sp < a.splits; sp += R) {
        if constexpr (R == 1) {
#pragma unroll
          for (int b = 0; b < MB; ++b)
#pragma unroll
            for (int e = 0; e < NT / 2; ++e)
              acc[b][e] += __ldcg(src + (sp * SLOTS + b * NT / 2 + e) * int64_t(C::CONSUMERS));
        } else {
          float v[R][SLOTS];
#pragma unroll
          for (int r = 0; r < R; ++r)
#pragma unroll
            for (int i = 0; i < SLOTS; ++i)
              v[r][i] = sp + r < a.splits ? __ldcg(src + ((sp + r) * SLOTS + i) * int64_t(C::CONSUMERS)) : 0.0f;
#pragma unroll
          for (int r = 0; r < R; ++r)
#pragma unroll
            for (int i = 0; i < SLOTS; ++i)
              if (sp + r < a.splits) acc[i / (NT / 2)][i % (NT / 2)] += v[r][i];
        }
      }
    }

    // Epilogue. acc[b][4j + e]: feature row (cw*MB + b)*64 + 16 wi + gid (+8 for e >= 2), token 8j + 2tig + (e&1).
    if (a.y_vec) {
      // Through the epilogue's own shared memory (the ring is already being refilled for the next unit): the y tile
      // [NT tokens][BN features] in bf16, bias added, then 16-byte stores along each token's row.
      bf16_t* ys = reinterpret_cast<bf16_t*>(smem + STAGES * C::STAGE);
      consumer_sync(C::CONSUMERS);  // the previous unit's stores have read the tile
#pragma unroll
      for (int b = 0; b < MB; ++b)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int nl = (cw * MB + b) * 64 + 16 * wi + gid + 8 * h;
          const float bias = a.bias && w.n0 + nl < a.N ? load_elt(a.bias, a.bias_type, w.n0 + nl) : 0.0f;
#pragma unroll
          for (int j = 0; j < NT / 8; ++j)
#pragma unroll
            for (int e = 0; e < 2; ++e)
              ys[(8 * j + 2 * tig + e) * C::LD + nl] = f2bf(acc[b][4 * j + 2 * h + e] + bias);
        }
      consumer_sync(C::CONSUMERS);
      if (a.swiglu_i) {
        // SwiGLU: features [0, BN/2) of the tile are gate rows hn + f, [BN/2, BN) the up rows I + hn + f; out[m, hn + f]
        // = silu(gate) * up from the bf16-rounded products, as launch_silu_mul_fused computes it.
        constexpr int HALF = C::BN / 2, CH = NT * (HALF / 8);
        const int64_t hn = w.n0 / 2;
#pragma unroll 4
        for (int c = ctid; c < CH; c += C::CONSUMERS) {
          const int r = c / (HALF / 8), cc = c % (HALF / 8);
          const int64_t m = w.m0 + r, n = hn + cc * 8;
          if (m >= a.M || n >= a.swiglu_i) continue;  // I % 8 == 0: a chunk is wholly inside or outside
          Bf16x8 g, u, o;
          g.u = *reinterpret_cast<const uint4*>(ys + r * C::LD + cc * 8);
          u.u = *reinterpret_cast<const uint4*>(ys + r * C::LD + HALF + cc * 8);
#pragma unroll
          for (int j = 0; j < 8; ++j) o.h[j] = f2bf(silu_mul1(bf2f(g.h[j]), bf2f(u.h[j])));
          *reinterpret_cast<uint4*>(a.y + m * a.swiglu_i + n) = o.u;
        }
        continue;
      }
      constexpr int CHUNKS = NT * (C::BN / 8);
#pragma unroll 4
      for (int c = ctid; c < CHUNKS; c += C::CONSUMERS) {
        const int r = c / (C::BN / 8), cc = c % (C::BN / 8);
        const int64_t m = w.m0 + r, n = w.n0 + cc * 8;
        if (m < a.M && n < a.N)  // N % 8 == 0 (y_vec): a chunk is wholly inside or outside
          *reinterpret_cast<uint4*>(a.y + m * a.N + n) = *reinterpret_cast<const uint4*>(ys + r * C::LD + cc * 8);
      }
      continue;
    }
#pragma unroll
    for (int b = 0; b < MB; ++b)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t n = w.n0 + (cw * MB + b) * 64 + 16 * wi + gid + 8 * h;
        if (n >= a.N) continue;
        const float bias = a.bias ? load_elt(a.bias, a.bias_type, n) : 0.0f;
#pragma unroll
        for (int j = 0; j < NT / 8; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int64_t m = w.m0 + 8 * j + 2 * tig + e;
            if (m < a.M) a.y[m * a.N + n] = f2bf(acc[b][4 * j + 2 * h + e] + bias);
          }
      }
  }
}

// Tile configurations by token tile NT and variant V: (MB, WGS, STAGES, resident blocks, consumer registers after
// setmaxnreg, accumulator sets: at least two independent wgmma chains a warpgroup, four at the smallest NT;
// FOLD_ACCS > 0: fold the scales, with that many sets for a group's sums, when the group size allows it).
// Variant 0 is the widest block (256 output features from NT = 64 on: each x tile serves the most weights, the best
// at large M); variant 1 ("narrow", NT = 64 and 128 only) halves the features a block to 128, twice the tiles for
// the narrow shapes at mid M, which otherwise have too few tiles for the GPU and lean on split-K; variant 2 ("tall",
// NT = 256) is 128 features x 256 tokens, one m64n256k16 a k16 slice and warpgroup (launch.h W4A16Variant). The
// backend times each (cuda_backend.cc).
template <int NT, int V>
struct Tile;
template <> struct Tile<8, 0> { static constexpr int MB = 1, WGS = 2, STAGES = 8, MINB = 2, REGS = 96, ACCS = 4, FOLD_ACCS = 4; };
template <> struct Tile<16, 0> { static constexpr int MB = 1, WGS = 2, STAGES = 8, MINB = 2, REGS = 96, ACCS = 4, FOLD_ACCS = 2; };
template <> struct Tile<32, 0> { static constexpr int MB = 1, WGS = 2, STAGES = 6, MINB = 2, REGS = 96, ACCS = 2, FOLD_ACCS = 1; };
template <> struct Tile<64, 0> { static constexpr int MB = 2, WGS = 2, STAGES = 6, MINB = 1, REGS = 232, ACCS = 1, FOLD_ACCS = 0; };
template <> struct Tile<128, 0> { static constexpr int MB = 2, WGS = 2, STAGES = 5, MINB = 1, REGS = 232, ACCS = 1, FOLD_ACCS = 0; };
template <> struct Tile<64, 1> { static constexpr int MB = 1, WGS = 2, STAGES = 8, MINB = 1, REGS = 232, ACCS = 2, FOLD_ACCS = 0; };
template <> struct Tile<256, 2> { static constexpr int MB = 1, WGS = 2, STAGES = 4, MINB = 1, REGS = 232, ACCS = 1, FOLD_ACCS = 0; };
template <> struct Tile<128, 1> { static constexpr int MB = 1, WGS = 2, STAGES = 6, MINB = 1, REGS = 232, ACCS = 2, FOLD_ACCS = 0; };
// Variant 3 ("deep", up to 32 tokens): the small tiles with as many stages as two blocks an SM leave room for (about
// 100 KB of ring a block instead of 48-60): at M <= 32 the kernel waits on its loads (docs/PERFORMANCE.md, fourth
// version), so more of them in flight is the experiment; the tuner keeps it where it is faster.
template <> struct Tile<8, 3> { static constexpr int MB = 1, WGS = 2, STAGES = 14, MINB = 2, REGS = 96, ACCS = 4, FOLD_ACCS = 4; };
template <> struct Tile<16, 3> { static constexpr int MB = 1, WGS = 2, STAGES = 12, MINB = 2, REGS = 96, ACCS = 4, FOLD_ACCS = 2; };
template <> struct Tile<32, 3> { static constexpr int MB = 1, WGS = 2, STAGES = 9, MINB = 2, REGS = 96, ACCS = 2, FOLD_ACCS = 1; };
// Variant 4 ("fit", M > 256): the tall tile's shape (128 features, one wgmma a k16 slice and warpgroup) with 136, 144
// or 176 tokens (tuner_key.h fit_token_tile), so that M splits into nearly full token tiles (~175-192 KB a block).
template <> struct Tile<136, 4> { static constexpr int MB = 1, WGS = 2, STAGES = 6, MINB = 1, REGS = 232, ACCS = 1, FOLD_ACCS = 0; };
template <> struct Tile<144, 4> { static constexpr int MB = 1, WGS = 2, STAGES = 6, MINB = 1, REGS = 232, ACCS = 1, FOLD_ACCS = 0; };
template <> struct Tile<176, 4> { static constexpr int MB = 1, WGS = 2, STAGES = 5, MINB = 1, REGS = 232, ACCS = 1, FOLD_ACCS = 0; };

// What the planner needs of a token tile's configuration: output features a block, blocks an SM.
struct TileShape {
  int features, minb;
};
template <int NT, int V>
constexpr TileShape tile_shape() {
  return {64 * Tile<NT, V>::MB * Tile<NT, V>::WGS, Tile<NT, V>::MINB};
}
TileShape tile_shape_of(int nt, int v) {
  switch (nt) {
    case 8: return v ? tile_shape<8, 3>() : tile_shape<8, 0>();
    case 16: return v ? tile_shape<16, 3>() : tile_shape<16, 0>();
    case 32: return v ? tile_shape<32, 3>() : tile_shape<32, 0>();
    case 64: return v ? tile_shape<64, 1>() : tile_shape<64, 0>();
    case 128: return v ? tile_shape<128, 1>() : tile_shape<128, 0>();
    case 136: return tile_shape<136, 4>();
    case 144: return tile_shape<144, 4>();
    case 176: return tile_shape<176, 4>();
    default: return tile_shape<256, 2>();
  }
}

// cuTensorMapEncodeTiled from the driver (through the runtime: no link against libcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    (void)cudaGetLastError();
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// x [M, K] bf16 as 64 x NT boxes, 128-byte swizzle, zeros outside.
CUtensorMap x_tensor_map(const bf16_t* x, int64_t M, int64_t K, int nt) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {cuuint64_t(K), cuuint64_t(M)};
  const cuuint64_t strides[1] = {cuuint64_t(K) * 2};
  const cuuint32_t box[2] = {cuuint32_t(kBK), cuuint32_t(nt)};
  const cuuint32_t elem[2] = {1, 1};
  auto encode = tensor_map_encoder();
  check(encode != nullptr, "matmul_packed (w4a16 wgmma): the driver has no cuTensorMapEncodeTiled");
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<bf16_t*>(x), dims, strides, box,
                            elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  check(r == CUDA_SUCCESS, "matmul_packed (w4a16 wgmma): cuTensorMapEncodeTiled failed ({}) for x [{}, {}]", int(r), M,
        K);
  return map;
}

// The weight tiles [kt][np / 16 units][128 words] as u32 boxes of `units` whole units of one k step, and the scale
// words [groups][np] as boxes of `bn` words of one group (tma_weights; zeros past np). Every stage destination is
// 128-byte aligned (the stage 1024, X_BYTES a multiple of 1024, W_BYTES of 512, BN * 4 of 256).
CUtensorMap w_tensor_map(const uint32_t* tiles, int64_t np, int64_t kt, int units) {
  CUtensorMap map{};
  const cuuint64_t dims[3] = {128, cuuint64_t(np / 16), cuuint64_t(kt)};
  const cuuint64_t strides[2] = {512, cuuint64_t(np / 16) * 512};
  const cuuint32_t box[3] = {128, cuuint32_t(units), 1};
  const cuuint32_t elem[3] = {1, 1, 1};
  const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, const_cast<uint32_t*>(tiles), dims,
                                          strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                          CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  check(r == CUDA_SUCCESS, "matmul_packed (w4a16 wgmma): cuTensorMapEncodeTiled failed ({}) for the tiles [{}, {}]",
        int(r), kt, np);
  return map;
}
CUtensorMap z_tensor_map(const uint32_t* sz, int64_t groups, int64_t np, int bn) {
  CUtensorMap map{};
  const cuuint64_t dims[2] = {cuuint64_t(np), cuuint64_t(groups)};
  const cuuint64_t strides[1] = {cuuint64_t(np) * 4};
  const cuuint32_t box[2] = {cuuint32_t(bn), 1};
  const cuuint32_t elem[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_UINT32, 2, const_cast<uint32_t*>(sz), dims,
                                          strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                          CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  check(r == CUDA_SUCCESS,
        "matmul_packed (w4a16 wgmma): cuTensorMapEncodeTiled failed ({}) for the scale words [{}, {}]", int(r), groups,
        np);
  return map;
}

bool& tma_weights_flag() {
  static bool on = [] {
    const char* v = std::getenv("DIFFULEX_W4A16_TMA_WEIGHTS");
    return v && std::string(v) == "1";
  }();
  return on;
}

// The split-K arrival counters (zeroed once; each launch leaves them zero). Made by w4a16_wgmma_available, before
// any stream capture.
int* split_counters() {
  static int* counters = [] {
    int* p = nullptr;
    if (cudaMalloc(&p, kSplitCounters * sizeof(int)) != cudaSuccess || cudaMemset(p, 0, kSplitCounters * sizeof(int)) != cudaSuccess ||
        cudaDeviceSynchronize() != cudaSuccess) {
      (void)cudaGetLastError();
      if (p) (void)cudaFree(p);
      p = nullptr;
    }
    return p;
  }();
  return counters;
}

template <int NT, int V, bool ONE_GROUP>
auto kernel_of() {
  using T = Tile<NT, V>;
  constexpr bool fold = ONE_GROUP && T::FOLD_ACCS > 0;
  return w4a16_wgmma_kernel<NT, T::MB, T::WGS, T::STAGES, ONE_GROUP, T::MINB, T::REGS, fold ? T::FOLD_ACCS : T::ACCS,
                            fold>;
}

template <int NT, int V, bool ONE_GROUP>
void launch_one(const W4A16KernelArgs& a, const CUtensorMap& map, int* counters, cudaStream_t stream) {
  using T = Tile<NT, V>;
  using C = WCfg<NT, T::MB, T::WGS, T::STAGES, ONE_GROUP>;
  auto* kernel = kernel_of<NT, V, ONE_GROUP>();
  static int resident = 0;  // blocks an SM holds (the persistent grid's size is that times the SMs)
  static std::once_flag configured;
  std::call_once(configured, [&] {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM),
               "matmul_packed (w4a16 wgmma shared memory)");
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, C::THREADS, C::SMEM),
               "matmul_packed (w4a16 wgmma occupancy)");
    check(resident >= 1, "matmul_packed (w4a16 wgmma): the kernel does not fit an SM");
  });
  const int64_t tiles = ((a.M + NT - 1) / NT) * ((a.np + C::BN - 1) / C::BN);
  const int64_t units = a.dp_tiles + (tiles - a.dp_tiles) * a.splits;
  const int grid = int(std::min<int64_t>(units, int64_t(cuda_sm_count()) * resident));
  static_assert(C::BN <= 256 && C::UNITS <= 256, "a tensor map's box holds at most 256 elements a dimension");
  const bool tma = tma_weights_flag();
  const CUtensorMap w_map =
      tma ? w_tensor_map(reinterpret_cast<const uint32_t*>(a.tiles), a.np, a.kt, C::UNITS) : CUtensorMap{};
  const CUtensorMap z_map = tma ? z_tensor_map(a.sz, a.groups, a.np, C::BN) : CUtensorMap{};
  kernel<<<grid, C::THREADS, C::SMEM, stream>>>(map, w_map, z_map, tma, a, counters, int(units));
  check_launch("matmul_packed (w4a16 wgmma)");
}

template <int NT, int V>
void launch_nt(const W4A16KernelArgs& a, bool one_group, const bf16_t* x, cudaStream_t stream) {
  const CUtensorMap map = x_tensor_map(x, a.M, a.K, NT);
  if (one_group) launch_one<NT, V, true>(a, map, split_counters(), stream);
  else launch_one<NT, V, false>(a, map, split_counters(), stream);
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
    if (tensor_map_encoder() == nullptr || split_counters() == nullptr) return false;
    cudaFuncAttributes attr{};
    const bool loaded = cudaFuncGetAttributes(&attr, kernel_of<8, 0, true>()) == cudaSuccess && attr.maxThreadsPerBlock > 0;
    (void)cudaGetLastError();
    return loaded;
  }();
  return ok;
}

void w4a16_wgmma_set_tma_weights(bool on) { tma_weights_flag() = on; }
bool w4a16_wgmma_tma_weights() { return tma_weights_flag(); }

bool w4a16_wgmma_has_variant(int variant, int64_t M) {
  return variant == kW4A16Wide || (variant == kW4A16Narrow && M > 32) || (variant == kW4A16Tall && M > 128) ||
         (variant == kW4A16Deep && M <= 32) || (variant == kW4A16Fit && M > 256);
}

W4A16Args w4a16_wgmma_plan(int64_t M, int64_t N, int64_t K, int64_t group_size, int force_splits, int variant) {
  const W4A16Dims d = w4a16_dims(N, K, group_size);
  W4A16Args p{};
  p.M = M, p.N = N, p.K = K;
  // kTall runs at any M it is asked for (the tests force it on small M too); kNarrow, kDeep and kFit only where
  // they differ.
  p.wg_variant = variant == kW4A16Tall                ? kW4A16Tall
                 : variant == kW4A16Narrow && M > 32  ? kW4A16Narrow
                 : variant == kW4A16Deep && M <= 32   ? kW4A16Deep
                 : variant == kW4A16Fit && M > 256    ? kW4A16Fit
                                                      : kW4A16Wide;
  p.wg_nt = p.wg_variant == kW4A16Tall  ? 256
            : p.wg_variant == kW4A16Fit ? fit_token_tile(M)
            : M <= 8                    ? 8
            : M <= 16                   ? 16
            : M <= 32                   ? 32
            : M <= 64                   ? 64
                                        : 128;
  const TileShape ts = tile_shape_of(p.wg_nt, p.wg_variant);
  p.minb = ts.minb;
  const int bn = ts.features;
  const int64_t mblocks = (M + p.wg_nt - 1) / p.wg_nt;
  const int64_t tiles = mblocks * ((d.np + bn - 1) / bn);
  // The tiles that make whole waves of the persistent grid run unsplit; the rest (all of them when they are fewer
  // than the grid) are split along K when w4a16_pick_splits's model says the grid is better filled that way, each
  // split at least 3 k steps. The reduction is in the kernel: no launch, but the last block of a tile reads NT x BN
  // fp32 a split at one SM's share of L2 bandwidth (~1/24 of the GPU's: 96 bytes of model per partial byte).
  const int64_t slots = int64_t(cuda_sm_count()) * p.minb;
  p.dp_tiles = tiles / slots * slots;
  const int64_t tail = tiles - p.dp_tiles;  // < slots <= kSplitCounters
  w4a16_pick_splits(p, d.kt, tail, slots, double(bn) * 32 + double(p.wg_nt) * kBK * 2, std::max<int64_t>(1, d.kt / 3),
                    force_splits, 0.0, 96.0 * p.wg_nt * bn);
  if (p.splits == 1 || tail == 0) p.splits = 1, p.kt_per_split = int(d.kt), p.dp_tiles = tiles;
  p.partial_floats = p.splits > 1 ? int64_t(p.splits) * tail * p.wg_nt * bn : 0;
  return p;
}

namespace {

void launch_wgmma(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles, const uint32_t* sz, int64_t group_size,
                  const void* bias, Elt bias_type, bf16_t* y, float* partial, int64_t swiglu_i, cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return;
  W4A16KernelArgs a = w4a16_kernel_args(p, x, tiles, sz, group_size, bias, bias_type, y, partial);
  if (swiglu_i) {
    check(w4a16_wgmma_swiglu_supported(p.N, y) && !bias,
          "matmul_packed (w4a16 wgmma): no SwiGLU epilogue for N = {} (or with a bias, or tensor-copy weights)", p.N);
    a.swiglu_i = swiglu_i, a.y_vec = true;
  }
  check(p.splits == 1 || partial, "matmul_packed (w4a16 wgmma): split-K needs a partial-sum buffer");
  check(w4a16_wgmma_available(), "matmul_packed (w4a16 wgmma): not available on this GPU");
  const int bn = tile_shape_of(p.wg_nt, p.wg_variant).features;
  check(p.splits == 1 || ((p.M + p.wg_nt - 1) / p.wg_nt) * ((a.np + bn - 1) / bn) - p.dp_tiles <= kSplitCounters,
        "matmul_packed (w4a16 wgmma): {} x {} tiles are too many to split", p.M, p.N);
  const bool one_group = a.tile_in_one_group;
  switch (p.wg_nt * 4 + p.wg_variant) {
    case 32: launch_nt<8, 0>(a, one_group, x, stream); break;
    case 35: launch_nt<8, 3>(a, one_group, x, stream); break;
    case 64: launch_nt<16, 0>(a, one_group, x, stream); break;
    case 67: launch_nt<16, 3>(a, one_group, x, stream); break;
    case 128: launch_nt<32, 0>(a, one_group, x, stream); break;
    case 131: launch_nt<32, 3>(a, one_group, x, stream); break;
    case 256: launch_nt<64, 0>(a, one_group, x, stream); break;
    case 257: launch_nt<64, 1>(a, one_group, x, stream); break;
    case 512: launch_nt<128, 0>(a, one_group, x, stream); break;
    case 513: launch_nt<128, 1>(a, one_group, x, stream); break;
    case 548: launch_nt<136, 4>(a, one_group, x, stream); break;
    case 580: launch_nt<144, 4>(a, one_group, x, stream); break;
    case 708: launch_nt<176, 4>(a, one_group, x, stream); break;
    case 1026: launch_nt<256, 2>(a, one_group, x, stream); break;
    default: fail("matmul_packed (w4a16 wgmma): no token tile {} (variant {})", p.wg_nt, p.wg_variant);
  }
}

}  // namespace

void launch_w4a16_wgmma(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles, const uint32_t* sz,
                        int64_t group_size, const void* bias, Elt bias_type, bf16_t* y, float* partial,
                        cudaStream_t stream) {
  launch_wgmma(p, x, tiles, sz, group_size, bias, bias_type, y, partial, 0, stream);
}

bool w4a16_wgmma_swiglu_supported(int64_t N, const void* out) {
  // Each half a whole number of 16-row units (the pieces the producer copies) and of 8-feature output chunks.
  return N > 0 && N % 32 == 0 && aligned16(out) && !tma_weights_flag();
}

void launch_w4a16_wgmma_swiglu(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles, const uint32_t* sz,
                               int64_t group_size, bf16_t* out, float* partial, cudaStream_t stream) {
  launch_wgmma(p, x, tiles, sz, group_size, nullptr, Elt::BF16, out, partial, p.N / 2, stream);
}

}  // namespace dlx::cuda
