// Grouped-query attention (bidirectional or block-causal) for head dims 8..128 (multiples of 8), FlashAttention-2
// style: scores, probabilities and the output accumulator live in registers; no [Lq, S] matrix exists anywhere in
// memory.
//
// Layouts (bf16): q [B, Lq, Hq, D], k/v [B, S, Hkv, D], out [B, Lq, Hq, D]; mask U8 [B, S] (1 = attend) or none;
// query head h reads key/value head h / (Hq / Hkv).
//
// A block of 4 warps owns 64 query rows of one (batch, head); warp w owns rows 16w .. 16w+15. Keys are walked in
// tiles of 64 with a two-stage cp.async pipeline: while tile t is being used, tile t+1 (K, V and a per-key bias of
// 0 or -inf for masked / out-of-range keys) is already on its way into the other shared-memory stage. Per tile a
// warp runs, with mma.sync m16n8k16 (bf16 in, fp32 accumulate):
//   S[16 x 64] = Q K^T      Q's fragments are loaded once (ldmatrix) and kept in registers; K fragments come from
//                           shared memory with ldmatrix (K row-major [key][d] is the column-major B operand);
//   online softmax          in the accumulator layout: a thread holds rows g = lane/4 and g+8, columns
//                           2*(lane%4)+{0,1} of each 8-key slice, so row max / sum need two quad shuffles; scores
//                           are pre-scaled by log2(e)/sqrt(D) and exponentiated with exp2;
//   O[16 x D] += P V        P is re-packed from the S accumulators straight into A fragments (the m16n8 C layout
//                           of two adjacent key slices is the m16k16 A layout), V fragments via ldmatrix.trans.
// Rows (Q, K, V tiles) are padded by 8 bf16 so that the 8 row addresses of an ldmatrix fall in distinct banks.
// Head dims that are multiples of 8 below 128 run the next instantiated D (16, 32, 64, 128) with the stored head dim
// hd as the row stride: columns hd .. D of the tiles are zeros, which changes no score, and only hd columns are
// written back.
// Rows whose keys are all masked produce zeros, as in the CPU reference.
// Block-causal (block > 0, launch.h): the block walks only the key tiles before its last row's block end, and a
// score whose key lies at or past its own row's block end gets -inf (rows g and g+8 of a thread have one end each).
// SLOTS (launch_attention_slots, a ragged pass): blockIdx.z is a slot instead of a batch row; the slot's descriptor
// (launch.h AttnSlotDesc) gives what the arguments give otherwise (its rows of q and out, its keys, values, mask,
// key count and q_offset), and the grid covers the widest slot, so a block whose query tile lies past its slot's
// width returns before touching memory. Everything after that prologue is the same code as one call per slot.
// Split-KV (splits > 1, never with SLOTS; launch.h): blockIdx.x is query tile x splits + split, and a block walks
// only its split's share of the query tile's key tiles (possibly none), then writes its rows unnormalized with their
// running max (log2 units) and sum to `part` instead of out; attention_combine_kernel merges the splits.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/ptx.cuh"

namespace dlx::cuda {

namespace {

constexpr int kWarps = 4, kBQ = 16 * kWarps, kBK = 64;
static_assert(kBQ == kBK, "load_rows moves tiles of kBK rows, Q's included");

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

template <int D>
constexpr size_t fa2_smem_bytes() {
  return size_t(kBQ + 4 * kBK) * (D + 8) * 2 + 2 * kBK * 4;
}

template <int D, bool SLOTS>
__global__ void __launch_bounds__(kWarps * 32) fa2_kernel(const bf16_t* __restrict__ q, const bf16_t* __restrict__ k,
                                                          const bf16_t* __restrict__ v,
                                                          const uint8_t* __restrict__ mask, bf16_t* __restrict__ out,
                                                          int64_t Lq, int64_t S, int64_t Hq, int64_t Hkv, int hd,
                                                          float scale_log2, int64_t block, int64_t q_offset,
                                                          const AttnSlotDesc* __restrict__ slots, int splits,
                                                          float* __restrict__ part) {
  constexpr int LD = D + 8;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem);
  bf16_t* Ks = Qs + kBQ * LD;     // [2][kBK][LD]
  bf16_t* Vs = Ks + 2 * kBK * LD;  // [2][kBK][LD]
  float* kbias = reinterpret_cast<float*>(Vs + 2 * kBK * LD);  // [2][kBK]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int mi = lane / 8, mr = lane % 8;  // which 8x8 matrix this lane addresses in an ldmatrix.x4, and its row
  int64_t b = blockIdx.z;
  // Split-KV (splits > 1, never with SLOTS): blockIdx.x is query tile * splits + split.
  const int split = int(blockIdx.x) % splits;
  const int64_t h = blockIdx.y, q0 = int64_t(blockIdx.x / splits) * kBQ;
  if constexpr (SLOTS) {
    const AttnSlotDesc& d = slots[blockIdx.z];
    Lq = d.width;
    if (q0 >= Lq) return;  // the whole block (no barrier passed yet)
    q += d.row * Hq * hd;
    out += d.row * Hq * hd;
    k = d.k;
    v = d.v;
    mask = d.mask;
    S = d.keys;
    q_offset = d.q_offset;
    b = 0;
  }
  const int64_t kh = h / (Hq / Hkv);
  // Keys visible to query row r: [0, end(r)).
  auto end_of = [&](int64_t r) { return block_causal_end(r, block, q_offset, S); };
  const int64_t keys = end_of(min(q0 + kBQ, Lq) - 1);  // the block's last row sees the most
  const int ntiles = int((keys + kBK - 1) / kBK);
  // This block's key tiles [t_begin, t_end): all of them, or its split's share (possibly none).
  const int per_split = (ntiles + splits - 1) / splits;
  const int t_begin = min(ntiles, split * per_split), t_end = min(ntiles, t_begin + per_split);
  const int64_t end0 = end_of(q0 + warp * 16 + g), end1 = end_of(q0 + warp * 16 + g + 8);

  // Rows [r0, r0 + 64) of head `head` of a [*, heads, hd] tensor into a shared tile (zeros past `limit`, in rows
  // whose rmask byte is 0, and in columns hd .. D).
  auto load_rows = [&](bf16_t* dst, const bf16_t* src, int64_t row_base, int64_t r0, int64_t limit, int64_t heads,
                       int64_t head, const uint8_t* rmask) {
    constexpr int kVecs = D / 8;
    for (int i = threadIdx.x; i < kBK * kVecs; i += kWarps * 32) {
      const int r = i / kVecs, cc = i % kVecs;
      const bool ok = r0 + r < limit && cc * 8 < hd && (rmask == nullptr || rmask[r0 + r] != 0);
      const bf16_t* s = ok ? src + ((row_base + r0 + r) * heads + head) * hd + cc * 8 : src;
      cp_async16(dst + r * LD + cc * 8, s, ok ? 16 : 0);
    }
  };
  auto load_kv = [&](int t, int stage) {
    const int64_t j0 = int64_t(t) * kBK;
    // Keys past the block's last visible one, and masked keys, load as zeros rather than from memory: a cache row
    // nobody wrote may hold NaN, and a zero probability times a NaN value is NaN.
    const uint8_t* kmask = mask ? mask + b * S : nullptr;
    load_rows(Ks + stage * kBK * LD, k, b * S, j0, keys, Hkv, kh, kmask);
    load_rows(Vs + stage * kBK * LD, v, b * S, j0, keys, Hkv, kh, kmask);
    for (int j = threadIdx.x; j < kBK; j += kWarps * 32) {
      const bool ok = j0 + j < S && (mask == nullptr || mask[b * S + j0 + j] != 0);
      kbias[stage * kBK + j] = ok ? 0.0f : -INFINITY;
    }
  };

  load_rows(Qs, q, b * Lq, q0, Lq, Hq, h, nullptr);
  if (t_begin < t_end) load_kv(t_begin, 0);
  cp_async_commit();

  uint32_t qf[D / 16][4];
  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // rows g and g+8

  for (int t = t_begin; t < t_end; ++t) {
    const int st = (t - t_begin) & 1;
    if (t + 1 < t_end) load_kv(t + 1, st ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // everything but the tile just issued has landed
    __syncthreads();
    if (t == t_begin) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(qf[kk], Qs + (warp * 16 + (mi % 2) * 8 + mr) * LD + kk * 16 + (mi / 2) * 8);
    }
    const bf16_t* Kt = Ks + st * kBK * LD;
    const bf16_t* Vt = Vs + st * kBK * LD;
    const float* bias = kbias + st * kBK;

    // S = Q K^T: 8 slices of 8 keys.
    float s[kBK / 8][4];
#pragma unroll
    for (int j = 0; j < kBK / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int jp = 0; jp < kBK / 16; ++jp) {
        uint32_t kf[4];
        ldmatrix_x4(kf, Kt + (jp * 16 + (mi / 2) * 8 + mr) * LD + kk * 16 + (mi % 2) * 8);
        mma16816(s[2 * jp], qf[kk], kf[0], kf[1]);
        mma16816(s[2 * jp + 1], qf[kk], kf[2], kf[3]);
      }
    }

    // Online softmax.
    float mx0 = -INFINITY, mx1 = -INFINITY;
    const int64_t jt = int64_t(t) * kBK;
#pragma unroll
    for (int j = 0; j < kBK / 8; ++j) {
      const float b0 = bias[j * 8 + 2 * c], b1 = bias[j * 8 + 2 * c + 1];
      const int64_t j_abs = jt + j * 8 + 2 * c;  // the key of s[j][0] and s[j][2]; j_abs + 1 that of [1] and [3]
      s[j][0] = j_abs < end0 ? s[j][0] * scale_log2 + b0 : -INFINITY;
      s[j][1] = j_abs + 1 < end0 ? s[j][1] * scale_log2 + b1 : -INFINITY;
      s[j][2] = j_abs < end1 ? s[j][2] * scale_log2 + b0 : -INFINITY;
      s[j][3] = j_abs + 1 < end1 ? s[j][3] * scale_log2 + b1 : -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    // A row with no unmasked key yet keeps p = 0 and alpha = 1 (avoids -inf - -inf).
    const bool live0 = mn0 != -INFINITY, live1 = mn1 != -INFINITY;
    const float alpha0 = live0 ? exp2f(m0 - mn0) : 1.0f, alpha1 = live1 ? exp2f(m1 - mn1) : 1.0f;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int j = 0; j < kBK / 8; ++j) {
      s[j][0] = live0 ? exp2f(s[j][0] - mn0) : 0.0f;
      s[j][1] = live0 ? exp2f(s[j][1] - mn0) : 0.0f;
      s[j][2] = live1 ? exp2f(s[j][2] - mn1) : 0.0f;
      s[j][3] = live1 ? exp2f(s[j][3] - mn1) : 0.0f;
      sum0 += s[j][0] + s[j][1];
      sum1 += s[j][2] + s[j][3];
    }
    l0 = l0 * alpha0 + sum0;  // per-thread partial sums; the quad is reduced at the end
    l1 = l1 * alpha1 + sum1;
    m0 = mn0;
    m1 = mn1;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[i][0] *= alpha0;
      o[i][1] *= alpha0;
      o[i][2] *= alpha1;
      o[i][3] *= alpha1;
    }

    // O += P V: 4 steps of 16 keys.
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, Vt + (kk * 16 + (mi % 2) * 8 + mr) * LD + dp * 16 + (mi / 2) * 8);
        mma16816(o[2 * dp], pa, vf[0], vf[1]);
        mma16816(o[2 * dp + 1], pa, vf[2], vf[3]);
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }
  cp_async_wait<0>();

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const int64_t r0 = q0 + warp * 16 + g, r1 = r0 + 8;
  if (!SLOTS && splits > 1) {
    // The split's unnormalized rows, their running max (log2 units) and sum, for attention_combine_kernel.
    const int64_t ps = hd + 2;
    // Row r from o[*][2 HI], o[*][2 HI + 1] (HI a compile-time constant, so o stays in registers).
    auto put = [&](int64_t r, float m, float l, auto hi_c) {
      constexpr int HI = decltype(hi_c)::value;
      if (r >= Lq) return;
      float* p = part + (((b * Lq + r) * Hq + h) * splits + split) * ps;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        const int col = i * 8 + 2 * c;
        if (col >= hd) break;
        *reinterpret_cast<float2*>(p + col) = make_float2(o[i][2 * HI], o[i][2 * HI + 1]);
      }
      if (c == 0) *reinterpret_cast<float2*>(p + hd) = make_float2(m, l);
    };
    put(r0, m0, l0, std::integral_constant<int, 0>{});
    put(r1, m1, l1, std::integral_constant<int, 1>{});
    return;
  }
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
  for (int i = 0; i < D / 8; ++i) {
    const int col = i * 8 + 2 * c;
    if (col >= hd) break;  // hd % 8 == 0: col and col + 1 are both inside or both outside
    if (r0 < Lq)
      *reinterpret_cast<uint32_t*>(out + ((b * Lq + r0) * Hq + h) * hd + col) = pack_bf16x2(o[i][0] * inv0, o[i][1] * inv0);
    if (r1 < Lq)
      *reinterpret_cast<uint32_t*>(out + ((b * Lq + r1) * Hq + h) * hd + col) = pack_bf16x2(o[i][2] * inv1, o[i][3] * inv1);
  }
}

// The dynamic shared memory of fa2_kernel<D, SLOTS>, its limit raised on the first call (once per kernel is enough).
template <int D, bool SLOTS>
size_t fa2_configure() {
  constexpr size_t bytes = fa2_smem_bytes<D>();
  static bool configured = false;
  if (!configured) {
    check_cuda(cudaFuncSetAttribute(fa2_kernel<D, SLOTS>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
               SLOTS ? "attention_slots (shared memory size)" : "attention (shared memory size)");
    configured = true;
  }
  return bytes;
}

float fa2_scale_log2(int hd) { return float(1.4426950408889634 / std::sqrt(double(hd))); }

// Split-KV's second launch: one warp per (token row, head) merges the splits' partial rows. With m_s the splits'
// maxima, M their max and w_s = 2^(m_s - M) (0 for a split that saw no key of the row), out = sum w_s o_s /
// sum w_s l_s: the softmax over all keys, as the unsplit kernel computes it in one pass. Rows with no key give zeros.
__global__ void attention_combine_kernel(const float* __restrict__ part, bf16_t* __restrict__ out, int64_t rows,
                                         int splits, int hd) {
  const int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;  // (b * Lq + r) * Hq + h
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t ps = hd + 2;
  const float* p = part + row * splits * ps;
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, p[s * ps + hd]);
  float l = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float m = p[s * ps + hd];
    if (m != -INFINITY) l += exp2f(m - mx) * p[s * ps + hd + 1];
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int col = 2 * lane; col < hd; col += 64) {
    float a0 = 0.0f, a1 = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float m = p[s * ps + hd];
      if (m == -INFINITY) continue;
      const float w = exp2f(m - mx);
      const float2 o = *reinterpret_cast<const float2*>(p + s * ps + col);
      a0 += w * o.x;
      a1 += w * o.y;
    }
    *reinterpret_cast<uint32_t*>(out + row * hd + col) = pack_bf16x2(a0 * inv, a1 * inv);
  }
}

template <int D>
void launch_fa2_d(const bf16_t* q, const bf16_t* k, const bf16_t* v, const uint8_t* mask, bf16_t* out, int64_t B,
                  int64_t Lq, int64_t S, int64_t Hq, int64_t Hkv, int hd, int64_t block, int64_t q_offset,
                  int splits, float* part, cudaStream_t stream) {
  const size_t bytes = fa2_configure<D, false>();
  dim3 grid(unsigned((Lq + kBQ - 1) / kBQ * splits), unsigned(Hq), unsigned(B));
  fa2_kernel<D, false><<<grid, kWarps * 32, bytes, stream>>>(q, k, v, mask, out, Lq, S, Hq, Hkv, hd,
                                                             fa2_scale_log2(hd), block, q_offset, nullptr, splits,
                                                             part);
  check_launch("attention");
  if (splits > 1) {
    const int64_t rows = B * Lq * Hq;
    constexpr int kThreads = 256;
    attention_combine_kernel<<<unsigned((rows * 32 + kThreads - 1) / kThreads), kThreads, 0, stream>>>(part, out, rows,
                                                                                                       splits, hd);
    check_launch("attention (split-KV combine)");
  }
}

template <int D>
void launch_fa2_slots_d(const bf16_t* q, const AttnSlotDesc* slots, int n, bf16_t* out, int64_t max_width,
                        int64_t Hq, int64_t Hkv, int hd, int64_t block, cudaStream_t stream) {
  const size_t bytes = fa2_configure<D, true>();
  dim3 grid(unsigned((max_width + kBQ - 1) / kBQ), unsigned(Hq), unsigned(n));
  fa2_kernel<D, true><<<grid, kWarps * 32, bytes, stream>>>(q, nullptr, nullptr, nullptr, out, 0, 0, Hq, Hkv, hd,
                                                            fa2_scale_log2(hd), block, 0, slots, 1, nullptr);
  check_launch("attention_slots");
}

// Grid-stride copy of a slot's window rows (blockIdx.y: the slot) into its cache, 16 bytes at a time.
__global__ void kv_write_slots_kernel(const AttnSlotDesc* __restrict__ slots, const uint4* __restrict__ k,
                                      const uint4* __restrict__ v, int64_t row_vecs) {
  const AttnSlotDesc& d = slots[blockIdx.y];
  if (!d.cached) return;
  const int64_t n = d.width * row_vecs;
  const uint4* sk = k + d.row * row_vecs;
  const uint4* sv = v + d.row * row_vecs;
  uint4* dk = reinterpret_cast<uint4*>(d.k) + d.q_offset * row_vecs;
  uint4* dv = reinterpret_cast<uint4*>(d.v) + d.q_offset * row_vecs;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    dk[i] = sk[i];
    dv[i] = sv[i];
  }
}

}  // namespace

void launch_kv_write_slots(const AttnSlotDesc* slots, int n, const bf16_t* k, const bf16_t* v, int64_t row_elems,
                           int64_t max_width, cudaStream_t stream) {
  if (n == 0 || max_width == 0) return;
  if (row_elems % 8 != 0 || !aligned16(k) || !aligned16(v)) check_cuda(cudaErrorInvalidValue, "kv_write_slots (alignment)");
  const int64_t row_vecs = row_elems / 8;
  constexpr int kThreads = 256;
  dim3 grid(blocks_for(max_width * row_vecs, kThreads, 1024), unsigned(n));
  kv_write_slots_kernel<<<grid, kThreads, 0, stream>>>(slots, reinterpret_cast<const uint4*>(k),
                                                       reinterpret_cast<const uint4*>(v), row_vecs);
  check_launch("kv_write_slots");
}

void launch_attention_slots(const bf16_t* q, const AttnSlotDesc* slots, int n, bf16_t* out, int64_t max_width,
                            int64_t Hq, int64_t Hkv, int64_t D, int64_t block, cudaStream_t stream) {
  if (!flash_attention_supports(D)) check_cuda(cudaErrorInvalidValue, "attention_slots (unsupported head dim)");
  if (n == 0 || max_width == 0) return;
  const int hd = int(D);
  if (D <= 16) return launch_fa2_slots_d<16>(q, slots, n, out, max_width, Hq, Hkv, hd, block, stream);
  if (D <= 32) return launch_fa2_slots_d<32>(q, slots, n, out, max_width, Hq, Hkv, hd, block, stream);
  if (D <= 64) return launch_fa2_slots_d<64>(q, slots, n, out, max_width, Hq, Hkv, hd, block, stream);
  return launch_fa2_slots_d<128>(q, slots, n, out, max_width, Hq, Hkv, hd, block, stream);
}

bool flash_attention_supports(int64_t D) { return D >= 8 && D <= 128 && D % 8 == 0; }

void launch_flash_attention(const bf16_t* q, const bf16_t* k, const bf16_t* v, const uint8_t* mask, bf16_t* out,
                            int64_t B, int64_t Lq, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t block,
                            int64_t q_offset, int splits, float* part, cudaStream_t stream) {
  if (!flash_attention_supports(D)) check_cuda(cudaErrorInvalidValue, "attention (unsupported head dim)");
  if (splits < 1 || (splits > 1 && part == nullptr)) check_cuda(cudaErrorInvalidValue, "attention (split-KV partials)");
  const int hd = int(D);
  if (D <= 16) return launch_fa2_d<16>(q, k, v, mask, out, B, Lq, S, Hq, Hkv, hd, block, q_offset, splits, part, stream);
  if (D <= 32) return launch_fa2_d<32>(q, k, v, mask, out, B, Lq, S, Hq, Hkv, hd, block, q_offset, splits, part, stream);
  if (D <= 64) return launch_fa2_d<64>(q, k, v, mask, out, B, Lq, S, Hq, Hkv, hd, block, q_offset, splits, part, stream);
  return launch_fa2_d<128>(q, k, v, mask, out, B, Lq, S, Hq, Hkv, hd, block, q_offset, splits, part, stream);
}

namespace {
int& split_kv_mode() {  // -1: the rule below; 0: never split; n >= 2: n splits wherever there are 2 key tiles or more
  static int mode = [] {
    const char* v = std::getenv("DIFFULEX_ATTENTION_SPLIT_KV");
    if (!v || std::string(v) == "0") return 0;
    if (std::string(v) == "1") return -1;
    const int n = std::atoi(v);
    return n >= 2 ? n : 0;
  }();
  return mode;
}
}  // namespace

void set_attention_split_kv(int mode) { split_kv_mode() = mode < 0 ? -1 : mode; }
int attention_split_kv_mode() { return split_kv_mode(); }

int attention_kv_splits(int64_t B, int64_t Lq, int64_t S, int64_t Hq, int64_t D, int64_t block, int64_t q_offset) {
  const int mode = split_kv_mode();
  if (mode == 0 || mode == 1 || !flash_attention_supports(D) || B * Lq * Hq == 0) return 1;
  // Key tiles of the last query tile (it sees the most keys).
  const int64_t last = q_offset + Lq - 1;
  const int64_t keys = block > 0 ? std::min(S, (last / block + 1) * block) : S;
  const int64_t ntiles = (keys + kBK - 1) / kBK;
  if (ntiles < 2) return 1;
  int64_t splits = mode;
  if (mode < 0) {
    // Only where the unsplit grid leaves SMs idle: then enough splits for about two blocks an SM (fa2 fits two at
    // D = 128), and about two key tiles a split (ntiles / 2 rounded up splits) so that a split's pipeline overlaps
    // a copy with a tile's math.
    const int64_t blocks = (Lq + kBQ - 1) / kBQ * Hq * B, sms = cuda_sm_count();
    if (blocks >= sms) return 1;
    splits = std::min<int64_t>((2 * sms) / blocks, (ntiles + 1) / 2);
  }
  splits = std::min<int64_t>({splits, ntiles, 64});
  // No split without a key tile: the same count with fewer tiles each is no slower.
  const int64_t per = (ntiles + splits - 1) / splits;
  return int((ntiles + per - 1) / per);
}

size_t attention_split_kv_bytes(int64_t B, int64_t Lq, int64_t Hq, int64_t D, int splits) {
  return size_t(B * Lq * Hq) * size_t(splits) * size_t(D + 2) * sizeof(float);
}

}  // namespace dlx::cuda
