// Grouped-query attention (bidirectional or block-causal) for head dims 136..256 (multiples of 8, run as 256 with
// zero columns past the stored head dim; and the dispatcher): flash style, no [Lq, S] score
// matrix ever reaches global memory. Head dims up to 128 (Dream, LLaDA, the fixtures) take the faster
// register-resident kernel in flash_attention.cu; this one keeps its fp32 output rows in shared memory, which is
// what makes D = 256 fit.
//
// Layouts (bf16): q [B, Lq, Hq, D], k/v [B, S, Hkv, D], out [B, Lq, Hq, D]; mask U8 [B, S] (1 = attend) or none.
// Query head h reads key/value head h / (Hq / Hkv).
//
// One block of 4 warps handles one (batch b, head h, tile of 64 query rows); each warp owns 16 of those rows.
// The block walks the keys in tiles of 64:
//   1. all threads copy the K and V tile (64 x D) into shared memory with 16-byte loads (keys past the block's last
//      visible key, and masked keys, as zeros: never read) and a per-key bias: 0, or -inf for masked / out-of-range
//      keys;
//   2. each warp computes its 16 x 64 scores S = Q K^T on the tensor cores (WMMA bf16, fp32 accumulate; Q's
//      fragments stay in registers for the whole loop) and stores them to its shared scratch;
//   3. online softmax in fp32, two lanes per row: new row max m, rescale factor alpha = 2^(m_old - m), P = 2^(S - m)
//      (scores pre-multiplied by log2(e)/sqrt(D)), running sum l; P is written as bf16 and the warp's fp32 output
//      rows O (kept in shared memory) are multiplied by alpha;
//   4. O += P V on the tensor cores.
// At the end each row is O / l, or zeros when every key of the row is masked (the CPU reference's convention).
// Block-causal (block > 0, launch.h): only the key tiles before the block's last row's block end are walked, and
// a score whose key lies at or past its own row's block end gets -inf in step 3.
//
// Shared memory per block (D = 256): Q, K, V tiles 3 x 64 x (D+8) bf16 = 99 KiB, scores 4 x 16 x 68 f32 = 17 KiB,
// P 4 x 16 x 72 bf16 = 9 KiB, O 4 x 16 x (D+4) f32 = 65 KiB: 190 KiB, one block per H100 multiprocessor. Rows are
// padded (+8 bf16 / +4 f32) to spread shared-memory banks and keep WMMA's 32-byte alignment.
#include <mma.h>

#include <cmath>

#include "kernels/cuda/common.cuh"

namespace dlx::cuda {

namespace {

using namespace nvcuda;  // WMMA

constexpr int kWarps = 4;
constexpr int kBQ = 16 * kWarps;  // query rows per block
constexpr int kBK = 64;           // keys per tile
constexpr int kSLd = kBK + 4;     // score row stride (f32)
constexpr int kPLd = kBK + 8;     // P row stride (bf16)

template <int D>
struct Smem {
  static constexpr int kLd = D + 8;  // Q/K/V row stride (bf16)
  static constexpr int kOLd = D + 4; // O row stride (f32)
  static constexpr size_t q = 0;
  static constexpr size_t k = q + size_t(kBQ) * kLd * 2;
  static constexpr size_t v = k + size_t(kBK) * kLd * 2;
  static constexpr size_t s = v + size_t(kBK) * kLd * 2;
  static constexpr size_t p = s + size_t(kWarps) * 16 * kSLd * 4;
  static constexpr size_t o = p + size_t(kWarps) * 16 * kPLd * 2;
  static constexpr size_t bias = o + size_t(kWarps) * 16 * kOLd * 4;
  static constexpr size_t bytes = bias + kBK * 4;
};

// Copies rows [r0, r0 + rows) of a [*, heads, hd] bf16 tensor (head `head`) into a shared tile of `tile_rows` rows
// of D columns; rows at or past `limit`, rows whose rmask byte is 0 (rmask indexed from row 0; may be null) and
// columns hd .. D are zero-filled.
template <int D>
__device__ void load_tile(bf16_t* dst, const bf16_t* src, int64_t row_base, int64_t r0, int64_t limit, int64_t heads,
                          int64_t head, int hd, int tile_rows, const uint8_t* rmask) {
  constexpr int kVecs = D / 8;
  for (int i = threadIdx.x; i < tile_rows * kVecs; i += blockDim.x) {
    const int r = i / kVecs, c = i % kVecs;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r0 + r < limit && c * 8 < hd && (rmask == nullptr || rmask[r0 + r] != 0))
      val = reinterpret_cast<const uint4*>(src + ((row_base + r0 + r) * heads + head) * hd)[c];
    *reinterpret_cast<uint4*>(dst + r * Smem<D>::kLd + c * 8) = val;
  }
}

template <int D>
__global__ void __launch_bounds__(kWarps * 32) flash_attention_kernel(const bf16_t* __restrict__ q,
                                                                      const bf16_t* __restrict__ k,
                                                                      const bf16_t* __restrict__ v,
                                                                      const uint8_t* __restrict__ mask,
                                                                      bf16_t* __restrict__ out, int64_t Lq, int64_t S,
                                                                      int64_t Hq, int64_t Hkv, int hd,
                                                                      float scale_log2, int64_t block,
                                                                      int64_t q_offset) {
  using L = Smem<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* Qs = reinterpret_cast<bf16_t*>(smem + L::q);
  bf16_t* Ks = reinterpret_cast<bf16_t*>(smem + L::k);
  bf16_t* Vs = reinterpret_cast<bf16_t*>(smem + L::v);
  float* kbias = reinterpret_cast<float*>(smem + L::bias);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* Sw = reinterpret_cast<float*>(smem + L::s) + warp * 16 * kSLd;
  bf16_t* Pw = reinterpret_cast<bf16_t*>(smem + L::p) + warp * 16 * kPLd;
  float* Ow = reinterpret_cast<float*>(smem + L::o) + warp * 16 * L::kOLd;

  const int64_t b = blockIdx.z, h = blockIdx.y, q0 = int64_t(blockIdx.x) * kBQ;
  const int64_t kh = h / (Hq / Hkv);

  load_tile<D>(Qs, q, b * Lq, q0, Lq, Hq, h, hd, kBQ, nullptr);
  for (int i = lane; i < 16 * L::kOLd; i += 32) Ow[i] = 0.0f;
  __syncthreads();

  // This warp's 16 query rows as matrix_a fragments, one per 16 columns of D.
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> qf[D / 16];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wmma::load_matrix_sync(qf[kk], reinterpret_cast<const __nv_bfloat16*>(Qs + warp * 16 * L::kLd + kk * 16), L::kLd);

  // Softmax state: lanes 2r and 2r+1 share row r; each handles 32 of the tile's 64 columns.
  const int row = lane / 2, half = lane % 2;
  float m = -INFINITY, l = 0.0f;
  // Keys visible to query row r: [0, end(r)).
  auto end_of = [&](int64_t r) { return block_causal_end(r, block, q_offset, S); };
  const int64_t keys = end_of(min(q0 + kBQ, Lq) - 1), row_end = end_of(q0 + warp * 16 + row);

  for (int64_t j0 = 0; j0 < keys; j0 += kBK) {
    __syncthreads();  // the previous tile's K/V are no longer read
    // Keys past the block's last visible one, and masked keys, load as zeros rather than from memory: a cache row
    // nobody wrote may hold NaN, and a zero probability times a NaN value is NaN.
    const uint8_t* kmask = mask ? mask + b * S : nullptr;
    load_tile<D>(Ks, k, b * S, j0, keys, Hkv, kh, hd, kBK, kmask);
    load_tile<D>(Vs, v, b * S, j0, keys, Hkv, kh, hd, kBK, kmask);
    for (int j = threadIdx.x; j < kBK; j += blockDim.x) {
      const bool ok = j0 + j < S && (mask == nullptr || mask[b * S + j0 + j] != 0);
      kbias[j] = ok ? 0.0f : -INFINITY;
    }
    __syncthreads();

    // 2. S = Q K^T (16 x 64 per warp).
#pragma unroll
    for (int n = 0; n < kBK / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, reinterpret_cast<const __nv_bfloat16*>(Ks + n * 16 * L::kLd + kk * 16), L::kLd);
        wmma::mma_sync(acc, qf[kk], kf, acc);
      }
      wmma::store_matrix_sync(Sw + n * 16, acc, kSLd, wmma::mem_row_major);
    }
    __syncwarp();

    // 3. Online softmax for row `row`, columns [32*half, 32*half + 32).
    float* srow = Sw + row * kSLd + half * 32;
    const float* brow = kbias + half * 32;
    float tmax = -INFINITY;
#pragma unroll 8
    for (int c = 0; c < 32; ++c) {
      srow[c] = j0 + half * 32 + c < row_end ? srow[c] * scale_log2 + brow[c] : -INFINITY;
      tmax = fmaxf(tmax, srow[c]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float m_new = fmaxf(m, tmax);
    float alpha = 1.0f, psum = 0.0f;
    bf16_t* prow = Pw + row * kPLd + half * 32;
    if (m_new == -INFINITY) {
      for (int c = 0; c < 32; ++c) prow[c] = 0;
    } else {
      alpha = exp2f(m - m_new);
#pragma unroll 8
      for (int c = 0; c < 32; ++c) {
        const float p = exp2f(srow[c] - m_new);
        psum += p;
        prow[c] = f2bf(p);
      }
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    l = l * alpha + psum;
    m = m_new;
    float* orow = Ow + row * L::kOLd + half * (D / 2);
    for (int c = 0; c < D / 2; ++c) orow[c] *= alpha;
    __syncwarp();

    // 4. O += P V.
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, Ow + n * 16, L::kOLd, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, reinterpret_cast<const __nv_bfloat16*>(Pw + kk * 16), kPLd);
        wmma::load_matrix_sync(vf, reinterpret_cast<const __nv_bfloat16*>(Vs + kk * 16 * L::kLd + n * 16), L::kLd);
        wmma::mma_sync(acc, pf, vf, acc);
      }
      wmma::store_matrix_sync(Ow + n * 16, acc, L::kOLd, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // Normalize and write this lane's half of its row.
  const int64_t qi = q0 + warp * 16 + row;
  if (qi < Lq) {
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const float* orow = Ow + row * L::kOLd + half * (D / 2);
    bf16_t* dst = out + ((b * Lq + qi) * Hq + h) * hd + half * (D / 2);
    for (int c = 0; c < D / 2 && half * (D / 2) + c < hd; ++c) dst[c] = f2bf(orow[c] * inv);
  }
}

template <int D>
void launch_d(const bf16_t* q, const bf16_t* k, const bf16_t* v, const uint8_t* mask, bf16_t* out, int64_t B,
              int64_t Lq, int64_t S, int64_t Hq, int64_t Hkv, int hd, int64_t block, int64_t q_offset,
              cudaStream_t stream) {
  const size_t bytes = Smem<D>::bytes;
  static bool configured = false;  // the attribute is per kernel and process; setting it again is harmless
  if (!configured) {
    check_cuda(cudaFuncSetAttribute(flash_attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
               "attention (shared memory size)");
    configured = true;
  }
  const float scale_log2 = float(1.0 / std::sqrt(double(hd)) * 1.4426950408889634);
  dim3 grid(unsigned((Lq + kBQ - 1) / kBQ), unsigned(Hq), unsigned(B));
  flash_attention_kernel<D><<<grid, kWarps * 32, bytes, stream>>>(q, k, v, mask, out, Lq, S, Hq, Hkv, hd, scale_log2,
                                                                  block, q_offset);
  check_launch("attention");
}

}  // namespace

bool attention_supports_head_dim(int64_t D) { return D >= 8 && D <= 256 && D % 8 == 0; }

void launch_attention(const bf16_t* q, const bf16_t* k, const bf16_t* v, const uint8_t* mask, bf16_t* out, int64_t B,
                      int64_t Lq, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t block, int64_t q_offset,
                      int splits, float* part, cudaStream_t stream) {
  if (B == 0 || Lq == 0) return;
  if (flash_attention_supports(D))
    return launch_flash_attention(q, k, v, mask, out, B, Lq, S, Hq, Hkv, D, block, q_offset, splits, part, stream);
  if (splits != 1) check_cuda(cudaErrorInvalidValue, "attention (split-KV needs a head dim of at most 128)");
  if (attention_supports_head_dim(D))
    return launch_d<256>(q, k, v, mask, out, B, Lq, S, Hq, Hkv, int(D), block, q_offset, stream);
  check_cuda(cudaErrorInvalidValue, "attention (unsupported head dim)");
}

}  // namespace dlx::cuda
