// fp8 KV cache (model.h KvCache::fp8): e4m3 codes with one F32 scale per (position, kv head) row of D values.
// Quantize: one warp per row finds max|x|, then writes e4m3(x * 448 / max) (round to nearest even, saturating),
// as the CPU backend. Dequantize: elementwise, bf16 out.
#include <cuda_fp8.h>

#include "kernels/cuda/common.cuh"

namespace dlx::cuda {

namespace {

__global__ void kv_quantize_fp8_kernel(const bf16_t* x, int64_t rows, int64_t D, uint8_t* q, float* scales) {
  const int64_t warps = blockDim.x / 32;
  const int64_t r = int64_t(blockIdx.x) * warps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const bf16_t* xr = x + r * D;
  float amax = 0;
  for (int64_t d = lane; d < D; d += 32) amax = fmaxf(amax, fabsf(bf2f(xr[d])));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float inv = amax > 0 ? __fdiv_rn(448.0f, amax) : 0.0f;
  if (lane == 0) scales[r] = __fdiv_rn(amax, 448.0f);
  for (int64_t d = lane; d < D; d += 32)
    q[r * D + d] = uint8_t(__nv_cvt_float_to_fp8(__fmul_rn(bf2f(xr[d]), inv), __NV_SATFINITE, __NV_E4M3));
}

__global__ void kv_dequantize_fp8_kernel(const uint8_t* q, const float* scales, int64_t n, int64_t D, bf16_t* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(q[i]), __NV_E4M3);
    y[i] = f2bf(scales[i / D] * __half2float(__half(h)));
  }
}

}  // namespace

void launch_kv_quantize_fp8(const bf16_t* x, int64_t rows, int64_t D, uint8_t* q, float* scales, cudaStream_t stream) {
  if (rows == 0) return;
  constexpr int kWarps = 8;
  kv_quantize_fp8_kernel<<<unsigned((rows + kWarps - 1) / kWarps), kWarps * 32, 0, stream>>>(x, rows, D, q, scales);
  check_launch("kv_quantize_fp8");
}

void launch_kv_dequantize_fp8(const uint8_t* q, const float* scales, int64_t rows, int64_t D, bf16_t* y,
                              cudaStream_t stream) {
  const int64_t n = rows * D;
  if (n == 0) return;
  kv_dequantize_fp8_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(q, scales, n, D, y);
  check_launch("kv_dequantize_fp8");
}

}  // namespace dlx::cuda
