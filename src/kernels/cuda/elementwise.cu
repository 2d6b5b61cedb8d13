// Memory-bound elementwise kernels: embedding gather, silu(gate)*up (two inputs, or the halves of the fused gate/up
// GEMM's output), residual add, bias add, conversions, column blocks split off a matrix, blocks of rows copied into
// strided places (a batch's window into its KV cache).
// Where every pointer is 16-byte aligned and the length a multiple of 8, threads move 8 bf16 (16 bytes) at a
// time; otherwise one element at a time. Grid-stride loops, so any n works with a capped grid.
#include "kernels/cuda/common.cuh"

namespace dlx::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void embedding_kernel(const int64_t* ids, const void* table, Elt tt, int64_t T, int64_t H, bf16_t* out) {
  const int64_t t = blockIdx.x;
  const int64_t row = ids[t];
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) out[t * H + h] = f2bf(load_elt(table, tt, row * H + h));
}

__global__ void silu_mul_vec(const uint4* gate, const uint4* up, uint4* out, int64_t n8) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    Bf16x8 g, u, o;
    g.u = gate[i];
    u.u = up[i];
#pragma unroll
    for (int j = 0; j < 8; ++j) o.h[j] = f2bf(silu_mul1(bf2f(g.h[j]), bf2f(u.h[j])));
    out[i] = o.u;
  }
}

__global__ void silu_mul_scalar(const bf16_t* gate, const bf16_t* up, bf16_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = f2bf(silu_mul1(bf2f(gate[i]), bf2f(up[i])));
}

__global__ void add_vec(uint4* x, const uint4* y, int64_t n8) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    Bf16x8 a, b;
    a.u = x[i];
    b.u = y[i];
#pragma unroll
    for (int j = 0; j < 8; ++j) a.h[j] = f2bf(bf2f(a.h[j]) + bf2f(b.h[j]));
    x[i] = a.u;
  }
}

__global__ void add_scalar(bf16_t* x, const bf16_t* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = f2bf(bf2f(x[i]) + bf2f(y[i]));
}

__global__ void add_bias_kernel(bf16_t* y, const void* bias, Elt bt, int64_t M, int64_t N) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = f2bf(bf2f(y[i]) + load_elt(bias, bt, i % N));
}

__global__ void f32_bias_to_bf16_kernel(const float* acc, const void* bias, Elt bt, int64_t M, int64_t N, bf16_t* y) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = f2bf(acc[i] + (bias ? load_elt(bias, bt, i % N) : 0.0f));
}

// Block blockIdx.y of src (block_units units of V) to dst + blockIdx.y * dst_stride + dst_offset (in units of V).
template <typename V>
__global__ void copy_row_blocks_kernel(const V* __restrict__ src, V* __restrict__ dst, int64_t block_units,
                                       int64_t dst_stride, int64_t dst_offset) {
  const V* s = src + int64_t(blockIdx.y) * block_units;
  V* d = dst + int64_t(blockIdx.y) * dst_stride + dst_offset;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < block_units; i += int64_t(gridDim.x) * blockDim.x)
    d[i] = s[i];
}

__global__ void bf16_to_f32_kernel(const bf16_t* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = bf2f(in[i]);
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void fill_random_kernel(void* dst, Elt type, int64_t n, uint64_t seed, float mean, float std) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = splitmix64(seed * 0x2545f4914f6cdd1dull + uint64_t(i));
    // Four 16-bit uniforms: their sum has mean 2 and variance 4/12, so (sum - 2) * sqrt(3) has unit variance.
    const float u = float(r & 0xffff) + float((r >> 16) & 0xffff) + float((r >> 32) & 0xffff) + float(r >> 48);
    const float z = (u * (1.0f / 65536.0f) - 2.0f) * 1.7320508f;
    const float v = mean + std * z;
    if (type == Elt::BF16)
      static_cast<bf16_t*>(dst)[i] = f2bf(v);
    else
      static_cast<float*>(dst)[i] = v;
  }
}

__global__ void silu_mul_fused_vec(const uint4* gu, int64_t I8, int64_t n8, uint4* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / I8, c = i - t * I8;
    Bf16x8 g, u, o;
    g.u = gu[t * 2 * I8 + c];
    u.u = gu[t * 2 * I8 + I8 + c];
#pragma unroll
    for (int j = 0; j < 8; ++j) o.h[j] = f2bf(silu_mul1(bf2f(g.h[j]), bf2f(u.h[j])));
    out[i] = o.u;
  }
}

__global__ void silu_mul_fused_scalar(const bf16_t* gu, int64_t I, int64_t n, bf16_t* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / I, c = i - t * I;
    out[i] = f2bf(silu_mul1(bf2f(gu[t * 2 * I + c]), bf2f(gu[t * 2 * I + I + c])));
  }
}

// out[t, :] = x[t, col : col + n]: one column block of a [T, N] matrix, 16 bytes per access when aligned.
__global__ void split_cols_vec(const uint4* x, int64_t N8, int64_t col8, int64_t n8, int64_t total, uint4* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / n8, c = i - t * n8;
    out[i] = x[t * N8 + col8 + c];
  }
}

__global__ void split_cols_scalar(const bf16_t* x, int64_t N, int64_t col, int64_t n, int64_t total, bf16_t* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / n, c = i - t * n;
    out[i] = x[t * N + col + c];
  }
}

}  // namespace

void launch_fill_random(void* dst, Elt type, int64_t n, uint64_t seed, float mean, float std, cudaStream_t stream) {
  if (n == 0) return;
  fill_random_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(dst, type, n, seed, mean, std);
  check_launch("fill random");
}

void launch_embedding(const int64_t* ids, const void* table, Elt table_type, int64_t T, int64_t H, bf16_t* out,
                      cudaStream_t stream) {
  if (T == 0) return;
  embedding_kernel<<<unsigned(T), kThreads, 0, stream>>>(ids, table, table_type, T, H, out);
  check_launch("embedding");
}

void launch_silu_mul(const bf16_t* gate, const bf16_t* up, bf16_t* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(gate) && aligned16(up) && aligned16(out))
    silu_mul_vec<<<blocks_for(n / 8, kThreads), kThreads, 0, stream>>>(
        reinterpret_cast<const uint4*>(gate), reinterpret_cast<const uint4*>(up), reinterpret_cast<uint4*>(out), n / 8);
  else
    silu_mul_scalar<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(gate, up, out, n);
  check_launch("silu_mul");
}

void launch_add(bf16_t* x, const bf16_t* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(x) && aligned16(y))
    add_vec<<<blocks_for(n / 8, kThreads), kThreads, 0, stream>>>(reinterpret_cast<uint4*>(x),
                                                                  reinterpret_cast<const uint4*>(y), n / 8);
  else
    add_scalar<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(x, y, n);
  check_launch("add");
}

void launch_add_bias(bf16_t* y, const void* bias, Elt bias_type, int64_t M, int64_t N, cudaStream_t stream) {
  if (M * N == 0) return;
  add_bias_kernel<<<blocks_for(M * N, kThreads), kThreads, 0, stream>>>(y, bias, bias_type, M, N);
  check_launch("matmul bias");
}

void launch_f32_bias_to_bf16(const float* acc, const void* bias, Elt bias_type, int64_t M, int64_t N, bf16_t* y,
                             cudaStream_t stream) {
  if (M * N == 0) return;
  f32_bias_to_bf16_kernel<<<blocks_for(M * N, kThreads), kThreads, 0, stream>>>(acc, bias, bias_type, M, N, y);
  check_launch("matmul f32 output");
}

void launch_copy_row_blocks(const void* src, void* dst, int64_t blocks, int64_t rows, int64_t row_bytes,
                            int64_t stride_rows, int64_t offset_rows, cudaStream_t stream) {
  if (blocks == 0 || rows == 0 || row_bytes == 0) return;
  if (blocks > 65535) check_cuda(cudaErrorInvalidValue, "copy_row_blocks (more than 65535 blocks)");
  if (row_bytes % 16 == 0 && aligned16(src) && aligned16(dst)) {
    const int64_t u = row_bytes / 16;
    copy_row_blocks_kernel<<<dim3(blocks_for(rows * u, kThreads), unsigned(blocks)), kThreads, 0, stream>>>(
        static_cast<const uint4*>(src), static_cast<uint4*>(dst), rows * u, stride_rows * u, offset_rows * u);
  } else {
    copy_row_blocks_kernel<<<dim3(blocks_for(rows * row_bytes, kThreads), unsigned(blocks)), kThreads, 0, stream>>>(
        static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), rows * row_bytes, stride_rows * row_bytes,
        offset_rows * row_bytes);
  }
  check_launch("copy_row_blocks");
}

void launch_bf16_to_f32(const bf16_t* in, float* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  bf16_to_f32_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(in, out, n);
  check_launch("bf16 to f32");
}

void launch_split_columns(const bf16_t* x, int64_t T, int64_t N, int64_t col, int64_t n, bf16_t* out,
                          cudaStream_t stream) {
  if (T == 0 || n == 0) return;
  if (N % 8 == 0 && col % 8 == 0 && n % 8 == 0 && aligned16(x) && aligned16(out))
    split_cols_vec<<<blocks_for(T * n / 8, 256), 256, 0, stream>>>(reinterpret_cast<const uint4*>(x), N / 8, col / 8,
                                                                   n / 8, T * n / 8, reinterpret_cast<uint4*>(out));
  else
    split_cols_scalar<<<blocks_for(T * n, 256), 256, 0, stream>>>(x, N, col, n, T * n, out);
  check_launch("split_columns");
}

void launch_silu_mul_fused(const bf16_t* gu, int64_t T, int64_t I, bf16_t* out, cudaStream_t stream) {
  const int64_t n = T * I;
  if (n == 0) return;
  if (I % 8 == 0 && aligned16(gu) && aligned16(out))
    silu_mul_fused_vec<<<blocks_for(n / 8, 256), 256, 0, stream>>>(reinterpret_cast<const uint4*>(gu), I / 8, n / 8,
                                                                  reinterpret_cast<uint4*>(out));
  else
    silu_mul_fused_scalar<<<blocks_for(n, 256), 256, 0, stream>>>(gu, I, n, out);
  check_launch("silu_mul_fused");
}

}  // namespace dlx::cuda
