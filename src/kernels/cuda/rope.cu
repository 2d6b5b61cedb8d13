// Rotate-half RoPE.
//  - The angles: (cos a, sin a) with a = float(pos[t]) * inv_freq[i] for i < D/2. As in the CPU reference the angle
//    is a float32 product and its cos/sin are taken in double, so both backends rotate by the same angles. Each
//    block computes the D/2 angles of its token into shared memory (one sincos a thread) before rotating: no table
//    kernel and no table in memory (a captured layer stack used to rebuild one per layer).
//  - rope: in place on x [T, heads, D]: (a, b) = (x[i], x[i + D/2]) becomes (a cos - b sin, b cos + a sin). A block
//    per (token, group of kRopeHeads heads); its threads walk (head, i) pairs, so consecutive threads touch
//    consecutive elements.
//  - qkv_rope: the fused q/k/v GEMM's output [T, Nq + 2 Nkv] split into q [T, Hq, D] and k [T, Hkv, D], both rotated
//    as rope does (same angles, same float arithmetic, so bit for bit split_columns + rope), and v [T, Nkv] copied
//    (one more block per token): one kernel instead of three copies and two rotations.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/layer_fusion.h"

namespace dlx::cuda {

namespace {

constexpr int kRopeHeads = 4;  // heads a block rotates
constexpr int kMaxHalf = 128;  // D <= 256

__device__ int64_t heads_from(int64_t h0, int64_t heads) { return heads - h0 < kRopeHeads ? heads - h0 : kRopeHeads; }

// The (cos, sin) pairs of token t into cs[0, half); ends with a block barrier (call from every thread).
__device__ void rope_angles(const int64_t* positions, const float* inv_freq, int64_t t, int64_t half, float2* cs) {
  const float p = float(positions[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = p * inv_freq[i];
    double s, c;
    sincos(double(angle), &s, &c);
    cs[i] = make_float2(float(c), float(s));
  }
  __syncthreads();
}

// Rotates heads [h0, h0 + nh) of one token: head h at src + h * D, written to dst(h).
template <typename Dst>
__device__ void rotate_heads(const bf16_t* src, int64_t h0, int64_t nh, int64_t D, const float2* cs, Dst dst) {
  const int64_t half = D / 2;
  for (int64_t idx = threadIdx.x; idx < nh * half; idx += blockDim.x) {
    const int64_t h = h0 + idx / half, i = idx % half;
    const float cf = cs[i].x, sf = cs[i].y;
    const bf16_t* in = src + h * D;
    bf16_t* out = dst(h);
    const float a = bf2f(in[i]), b = bf2f(in[i + half]);
    out[i] = f2bf(a * cf - b * sf);
    out[i + half] = f2bf(b * cf + a * sf);
  }
}

__global__ void rope_kernel(bf16_t* x, int64_t heads, int64_t D, const int64_t* positions, const float* inv_freq) {
  __shared__ float2 cs[kMaxHalf];
  const int64_t t = blockIdx.x, h0 = int64_t(blockIdx.y) * kRopeHeads;
  rope_angles(positions, inv_freq, t, D / 2, cs);
  bf16_t* row = x + t * heads * D;
  rotate_heads(row, h0, heads_from(h0, heads), D, cs, [&](int64_t h) { return row + h * D; });
}

// blockIdx.y < groups: a group of q's and k's heads (k's follow q's in the fused row); == groups: v's copy.
__global__ void qkv_rope_kernel(const bf16_t* qkv, int64_t Hq, int64_t Hkv, int64_t D, const int64_t* positions,
                                const float* inv_freq, bf16_t* q, bf16_t* k, bf16_t* v) {
  __shared__ float2 cs[kMaxHalf];
  const int64_t t = blockIdx.x, Nq = Hq * D, Nkv = Hkv * D, N = Nq + 2 * Nkv;
  const bf16_t* in = qkv + t * N;
  const int64_t groups = (Hq + Hkv + kRopeHeads - 1) / kRopeHeads;
  if (int64_t(blockIdx.y) == groups) {
    for (int64_t j = threadIdx.x; j < Nkv; j += blockDim.x) v[t * Nkv + j] = in[Nq + Nkv + j];
    return;
  }
  rope_angles(positions, inv_freq, t, D / 2, cs);
  const int64_t h0 = int64_t(blockIdx.y) * kRopeHeads;
  rotate_heads(in, h0, heads_from(h0, Hq + Hkv), D, cs,
               [&](int64_t h) { return h < Hq ? q + (t * Hq + h) * D : k + (t * Hkv + h - Hq) * D; });
}

// Threads for nh heads' pairs: up to 256, a multiple of 32.
int rope_threads(int64_t pairs) { return pairs >= 256 ? 256 : int((pairs + 31) / 32 * 32); }

}  // namespace

void launch_rope(bf16_t* x, int64_t T, int64_t heads, int64_t D, const int64_t* positions, const float* inv_freq,
                 cudaStream_t stream) {
  if (T == 0 || D < 2 || heads == 0) return;
  if (D / 2 > kMaxHalf) check_cuda(cudaErrorInvalidValue, "rope (head dim past 256)");
  const dim3 grid(unsigned(T), unsigned((heads + kRopeHeads - 1) / kRopeHeads));
  rope_kernel<<<grid, rope_threads(std::min<int64_t>(heads, kRopeHeads) * (D / 2)), 0, stream>>>(x, heads, D, positions,
                                                                                                 inv_freq);
  check_launch("rope");
}

void launch_qkv_rope(const bf16_t* qkv, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, const int64_t* positions,
                     const float* inv_freq, bf16_t* q, bf16_t* k, bf16_t* v, cudaStream_t stream) {
  if (T == 0 || D < 2) return;
  if (D / 2 > kMaxHalf) check_cuda(cudaErrorInvalidValue, "qkv_rope (head dim past 256)");
  const int64_t groups = (Hq + Hkv + kRopeHeads - 1) / kRopeHeads;
  const int threads = std::max(rope_threads(std::min<int64_t>(Hq + Hkv, kRopeHeads) * (D / 2)), rope_threads(Hkv * D));
  qkv_rope_kernel<<<dim3(unsigned(T), unsigned(groups + 1)), threads, 0, stream>>>(qkv, Hq, Hkv, D, positions, inv_freq,
                                                                                  q, k, v);
  check_launch("qkv_rope");
}

}  // namespace dlx::cuda
