// RMSNorm: one block per row; pass 1 sums squares in fp32 (warp shuffles, then one value per warp in shared
// memory), pass 2 writes w * (x * rsqrt(mean + eps)) as the CPU reference does. Each thread writes only the
// elements it read, so out may alias x. Rows whose length is a multiple of 8 move 16 bytes per access.
// add_rmsnorm is the residual add fused in front: pass 1 writes h = bf16(h + y) and sums the squares of the
// rounded values, so h and out are bit for bit what launch_add followed by launch_rmsnorm give (each thread reads
// back in pass 2 only the elements it wrote in pass 1).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/layer_fusion.h"

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

// y == nullptr: plain RMSNorm of x. Otherwise x (= h) first becomes bf16(x + y), written back in place.
template <bool kVec>
__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(bf16_t* x, const bf16_t* y, const void* w, Elt wt, int64_t H,
                                                           float eps, bf16_t* out) {
  bf16_t* row = x + blockIdx.x * H;
  const bf16_t* yrow = y ? y + blockIdx.x * H : nullptr;
  bf16_t* orow = out + blockIdx.x * H;
  float ss = 0;
  if (kVec) {
    uint4* r8 = reinterpret_cast<uint4*>(row);
    const uint4* y8 = reinterpret_cast<const uint4*>(yrow);
    for (int64_t i = threadIdx.x; i < H / 8; i += blockDim.x) {
      Bf16x8 v;
      v.u = r8[i];
      if (y8) {
        Bf16x8 d;
        d.u = y8[i];
#pragma unroll
        for (int j = 0; j < 8; ++j) v.h[j] = f2bf(bf2f(v.h[j]) + bf2f(d.h[j]));
        r8[i] = v.u;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += bf2f(v.h[j]) * bf2f(v.h[j]);
    }
  } else {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
      bf16_t v = row[i];
      if (yrow) {
        v = f2bf(bf2f(v) + bf2f(yrow[i]));
        row[i] = v;
      }
      ss += bf2f(v) * bf2f(v);
    }
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

void launch_norm(bf16_t* x, const bf16_t* y, const void* w, Elt w_type, int64_t T, int64_t H, float eps, bf16_t* out,
                 cudaStream_t stream, const char* op) {
  if (T == 0) return;
  if (H % 8 == 0 && aligned16(x) && aligned16(out) && (!y || aligned16(y)))
    rmsnorm_kernel<true><<<unsigned(T), kThreads, 0, stream>>>(x, y, w, w_type, H, eps, out);
  else
    rmsnorm_kernel<false><<<unsigned(T), kThreads, 0, stream>>>(x, y, w, w_type, H, eps, out);
  check_launch(op);
}

}  // namespace

void launch_rmsnorm(const bf16_t* x, const void* w, Elt w_type, int64_t T, int64_t H, float eps, bf16_t* out,
                    cudaStream_t stream) {
  // x is only read (y is null).
  launch_norm(const_cast<bf16_t*>(x), nullptr, w, w_type, T, H, eps, out, stream, "rmsnorm");
}

void launch_add_rmsnorm(bf16_t* h, const bf16_t* y, const void* w, Elt w_type, int64_t T, int64_t H, float eps,
                        bf16_t* out, cudaStream_t stream) {
  launch_norm(h, y, w, w_type, T, H, eps, out, stream, "add_rmsnorm");
}

}  // namespace dlx::cuda
