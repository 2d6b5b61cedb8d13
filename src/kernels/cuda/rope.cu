// Rotate-half RoPE in two kernels.
//  - rope_table: table[t, i] = (cos a, sin a) with a = float(pos[t]) * inv_freq[i] for i < D/2. As in the CPU
//    reference the angle is a float32 product and its cos/sin are taken in double, so both backends rotate by the
//    same angles. The backend builds the table once per distinct positions tensor (e.g. once per forward, shared
//    by the q and k calls of every layer).
//  - rope: in place on x [T, heads, D]: (a, b) = (x[i], x[i + D/2]) becomes (a cos - b sin, b cos + a sin). A block
//    per token; its threads walk (head, i) pairs, so consecutive threads touch consecutive elements.
#include "kernels/cuda/common.cuh"

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

}  // namespace dlx::cuda
