// Rotate-half RoPE in two kernels.
//  - rope_table: table[t, i] = (cos a, sin a) with a = float(pos[t]) * inv_freq[i] for i < D/2. As in the CPU
//    reference the angle is a float32 product and its cos/sin are taken in double, so both backends rotate by the
//    same angles. The backend builds the table once per distinct positions tensor (e.g. once per forward, shared
//    by the q and k calls of every layer).
//  - rope: in place on x [T, heads, D]: (a, b) = (x[i], x[i + D/2]) becomes (a cos - b sin, b cos + a sin). A block
//    per token; its threads walk (head, i) pairs, so consecutive threads touch consecutive elements.
//  - qkv_rope: the fused q/k/v GEMM's output [T, Nq + 2 Nkv] split into q [T, Hq, D] and k [T, Hkv, D], both rotated
//    as rope does (same table, same float arithmetic, so bit for bit split_columns + rope), and v [T, Nkv] copied:
//    one kernel instead of three copies and two rotations.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/layer_fusion.h"

namespace dlx::cuda {

namespace {

__global__ void rope_table_kernel(const int64_t* positions, const float* inv_freq, int64_t T, int64_t half,
                                  float* table) {
  const int64_t n = T * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = idx / half, i = idx % half;
    const float angle = float(positions[t]) * inv_freq[i];
    double s, c;
    sincos(double(angle), &s, &c);
    table[2 * idx] = float(c);
    table[2 * idx + 1] = float(s);
  }
}

__global__ void rope_kernel(bf16_t* x, int64_t heads, int64_t D, const float* table) {
  const int64_t t = blockIdx.x, half = D / 2;
  const float* row = table + 2 * t * half;
  for (int64_t idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx % half;
    const float cf = row[2 * i], sf = row[2 * i + 1];
    bf16_t* v = x + (t * heads + h) * D;
    const float a = bf2f(v[i]), b = bf2f(v[i + half]);
    v[i] = f2bf(a * cf - b * sf);
    v[i + half] = f2bf(b * cf + a * sf);
  }
}

__global__ void qkv_rope_kernel(const bf16_t* qkv, int64_t Hq, int64_t Hkv, int64_t D, const float* table, bf16_t* q,
                                bf16_t* k, bf16_t* v) {
  const int64_t t = blockIdx.x, half = D / 2, Nq = Hq * D, Nkv = Hkv * D, N = Nq + 2 * Nkv;
  const bf16_t* in = qkv + t * N;
  const float* row = table + 2 * t * half;
  // Rotated pairs of q's heads, then k's.
  for (int64_t idx = threadIdx.x; idx < (Hq + Hkv) * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx % half;
    const float cf = row[2 * i], sf = row[2 * i + 1];
    const bf16_t* src = in + h * D;  // k's heads follow q's in the fused row
    bf16_t* dst = h < Hq ? q + (t * Hq + h) * D : k + (t * Hkv + h - Hq) * D;
    const float a = bf2f(src[i]), b = bf2f(src[i + half]);
    dst[i] = f2bf(a * cf - b * sf);
    dst[i + half] = f2bf(b * cf + a * sf);
  }
  for (int64_t j = threadIdx.x; j < Nkv; j += blockDim.x) v[t * Nkv + j] = in[Nq + Nkv + j];
}

}  // namespace

void launch_rope_table(const int64_t* positions, const float* inv_freq, int64_t T, int64_t half, float* table,
                       cudaStream_t stream) {
  if (T * half == 0) return;
  rope_table_kernel<<<blocks_for(T * half, 256), 256, 0, stream>>>(positions, inv_freq, T, half, table);
  check_launch("rope (angle table)");
}

void launch_rope(bf16_t* x, int64_t T, int64_t heads, int64_t D, const float* table, cudaStream_t stream) {
  if (T == 0 || D < 2) return;
  const int64_t work = heads * (D / 2);
  const int threads = work >= 256 ? 256 : int((work + 31) / 32 * 32);
  rope_kernel<<<unsigned(T), threads, 0, stream>>>(x, heads, D, table);
  check_launch("rope");
}

void launch_qkv_rope(const bf16_t* qkv, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, const float* table, bf16_t* q,
                     bf16_t* k, bf16_t* v, cudaStream_t stream) {
  if (T == 0 || D < 2) return;
  const int64_t work = std::max((Hq + Hkv) * (D / 2), Hkv * D);
  const int threads = work >= 256 ? 256 : int((work + 31) / 32 * 32);
  qkv_rope_kernel<<<unsigned(T), threads, 0, stream>>>(qkv, Hq, Hkv, D, table, q, k, v);
  check_launch("qkv_rope");
}

}  // namespace dlx::cuda
