// Low-bit linear on the canonical PackedWeight layout (kernels/packed_weight.h): a first, correct kernel; the fast
// tensor-core W4A16 kernel is its own issue.
//
//   qweight  [N, K*bits/32] u32: word j of row n holds k = j*(32/bits) + i at bits [bits*i, bits*i + bits)
//   scales, zeros  [N, G] f32:   W[n, k] = scales[n, g] * q - zeros[n, g],   g = k / group_size
//   perm     [K] i32 or none:    the kernel's column k reads x[:, perm[k]] (act-order)
//
// Tiling: a block of 256 threads computes a 64 (rows of x) x 64 (output features) tile of y and walks K in steps of
// 32. Per step the block stages x[64, 32] (gathered through perm when present) and the dequantized weight
// [64, 32] in shared memory as f32: each thread reads whole packed words, unpacks the codes in registers and
// writes s*q - zs, so the weight is never materialized outside this 8 KiB tile. Each thread then accumulates
// a 4 x 4 sub-tile in fp32 registers (rows ty + 16i, columns tx + 16j). The epilogue adds the bias and rounds
// to bf16.
#include "kernels/cuda/common.cuh"

namespace dlx::cuda {

namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 256;

__global__ void __launch_bounds__(kThreads) qgemm_kernel(QGemmArgs a) {
  __shared__ float xs[kBM][kBK + 1];
  __shared__ float ws[kBN][kBK + 1];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  const int per = 32 / a.bits;
  const uint32_t code_mask = (1u << a.bits) - 1u;
  const int64_t words = a.K / per, G = a.K / a.group_size;
  float acc[4][4] = {};

  for (int64_t k0 = 0; k0 < a.K; k0 += kBK) {
    // Stage x[m0 .. m0+64, k0 .. k0+32) as f32.
    for (int i = tid; i < kBM * kBK; i += kThreads) {
      const int r = i / kBK, c = i % kBK;
      const int64_t m = m0 + r, kk = k0 + c;
      float val = 0.0f;
      if (m < a.M && kk < a.K) val = bf2f(a.x[m * a.K + (a.perm ? a.perm[kk] : kk)]);
      xs[r][c] = val;
    }
    // Stage the dequantized weight rows n0 .. n0+64 for the same k range, one packed word per iteration.
    const int words_per_step = kBK / per;
    for (int i = tid; i < kBN * words_per_step; i += kThreads) {
      const int r = i / words_per_step, wj = i % words_per_step;
      const int64_t n = n0 + r, kbase = k0 + int64_t(wj) * per;
      if (n < a.N && kbase < a.K) {
        const uint32_t word = a.qweight[n * words + kbase / per];
        for (int t = 0; t < per; ++t) {
          const int64_t g = (kbase + t) / a.group_size;
          const float q = float((word >> (a.bits * t)) & code_mask);
          ws[r][wj * per + t] = a.scales[n * G + g] * q - a.zeros[n * G + g];
        }
      } else {
        for (int t = 0; t < per; ++t) ws[r][wj * per + t] = 0.0f;
      }
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < kBK; ++c) {
      float xv[4], wv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) xv[i] = xs[ty + 16 * i][c];
#pragma unroll
      for (int j = 0; j < 4; ++j) wv[j] = ws[tx + 16 * j][c];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += xv[i] * wv[j];
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= a.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= a.N) continue;
      const float b = a.bias ? load_elt(a.bias, a.bias_type, n) : 0.0f;
      a.y[m * a.N + n] = f2bf(acc[i][j] + b);
    }
  }
}

}  // namespace

void launch_qgemm(const QGemmArgs& a, cudaStream_t stream) {
  if (a.M == 0 || a.N == 0) return;
  dim3 grid(unsigned((a.N + kBN - 1) / kBN), unsigned((a.M + kBM - 1) / kBM));
  qgemm_kernel<<<grid, kThreads, 0, stream>>>(a);
  check_launch("matmul_packed");
}

}  // namespace dlx::cuda
