// RMSNorm: one block per row; pass 1 sums squares in fp32 (warp shuffles, then one value per warp in shared
// memory), pass 2 writes w * (x * rsqrt(mean + eps)) as the CPU reference does. Each thread writes only the
// elements it read, so out may alias x. Rows whose length is a multiple of 8 move 16 bytes per access.
#include "kernels/cuda/common.cuh"

namespace dlx::cuda {

namespace {

constexpr int kThreads = 256;

__device__ float block_sum(float v) {
  __shared__ float partial[kThreads / 32];
  __shared__ float total;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x == 0) total = s;
  }
  __syncthreads();
  return total;
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(const bf16_t* x, const void* w, Elt wt, int64_t H, float eps,
                                                           bf16_t* out) {
  const bf16_t* row = x + blockIdx.x * H;
  bf16_t* orow = out + blockIdx.x * H;
  float ss = 0;
  if (kVec) {
    const uint4* r8 = reinterpret_cast<const uint4*>(row);
    for (int64_t i = threadIdx.x; i < H / 8; i += blockDim.x) {
      Bf16x8 v;
      v.u = r8[i];
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += bf2f(v.h[j]) * bf2f(v.h[j]);
    }
  } else {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) ss += bf2f(row[i]) * bf2f(row[i]);
  }
  const float inv = rsqrtf(block_sum(ss) / float(H) + eps);
  if (kVec) {
    const uint4* r8 = reinterpret_cast<const uint4*>(row);
    uint4* o8 = reinterpret_cast<uint4*>(orow);
    for (int64_t i = threadIdx.x; i < H / 8; i += blockDim.x) {
      Bf16x8 v;
      v.u = r8[i];
#pragma unroll
      for (int j = 0; j < 8; ++j) v.h[j] = f2bf(load_elt(w, wt, i * 8 + j) * (bf2f(v.h[j]) * inv));
      o8[i] = v.u;
    }
  } else {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) orow[i] = f2bf(load_elt(w, wt, i) * (bf2f(row[i]) * inv));
  }
}

}  // namespace

void launch_rmsnorm(const bf16_t* x, const void* w, Elt w_type, int64_t T, int64_t H, float eps, bf16_t* out,
                    cudaStream_t stream) {
  if (T == 0) return;
  if (H % 8 == 0 && aligned16(x) && aligned16(out))
    rmsnorm_kernel<true><<<unsigned(T), kThreads, 0, stream>>>(x, w, w_type, H, eps, out);
  else
    rmsnorm_kernel<false><<<unsigned(T), kThreads, 0, stream>>>(x, w, w_type, H, eps, out);
  check_launch("rmsnorm");
}

}  // namespace dlx::cuda
