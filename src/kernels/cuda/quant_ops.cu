// The quantizer's small device ops (backend.h: symmetric_scaled, dot_f64, column_abs_sum), so that the error report
// and AWQ's channel statistics stay on the GPU: only scalars or [K] vectors come back to the host.
#include "kernels/cuda/common.cuh"

namespace dlx::cuda {

namespace {

constexpr int kTile = 32;

// Output tile (blockIdx.y, blockIdx.x) of the symmetric matrix from source tile (min, max) of the upper triangle:
// the source tile is read row by row (coalesced) into shared memory, the output written row by row.
__global__ void symmetric_scaled_kernel(const float* __restrict__ p, int64_t k, double f, float* __restrict__ out) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t ti = blockIdx.y, tj = blockIdx.x;
  const int64_t si = min(ti, tj), sj = max(ti, tj);
  const int tx = threadIdx.x;
  for (int ty = threadIdx.y; ty < kTile; ty += blockDim.y) {
    const int64_t r = si * kTile + ty, c = sj * kTile + tx;
    tile[ty][tx] = r < k && c < k ? p[r * k + c] : 0.0f;
  }
  __syncthreads();
  for (int ty = threadIdx.y; ty < kTile; ty += blockDim.y) {
    const int64_t i = ti * kTile + ty, j = tj * kTile + tx;
    if (i >= k || j >= k) continue;
    // Element (i, j) of the full matrix is p[min][max]: in the loaded tile (si, sj) that is [ty][tx] when the
    // output tile is the source tile and (on the diagonal tile) i <= j, else the transposed position.
    const float v = (ti < tj || (ti == tj && i <= j)) ? tile[ty][tx] : tile[tx][ty];
    out[i * k + j] = float(f * double(v));
  }
}

constexpr int kDotThreads = 256;
constexpr int kDotBlocks = 1024;  // fixed: the summation order does not depend on the device

__device__ double block_sum(double v) {
  __shared__ double s[kDotThreads];
  s[threadIdx.x] = v;
  __syncthreads();
  for (int w = kDotThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  return s[0];
}

__global__ void dot_partial_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t n,
                                   double* __restrict__ part) {
  double acc = 0;
  for (int64_t i = int64_t(blockIdx.x) * kDotThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kDotThreads)
    acc += double(a[i]) * double(b[i]);
  const double s = block_sum(acc);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void dot_final_kernel(const double* __restrict__ part, int n, double* __restrict__ out) {
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += kDotThreads) acc += part[i];
  const double s = block_sum(acc);
  if (threadIdx.x == 0) *out = s;
}

template <class T>
__device__ __forceinline__ double as_double(T v);
template <>
__device__ __forceinline__ double as_double<float>(float v) { return double(v); }
template <>
__device__ __forceinline__ double as_double<bf16_t>(bf16_t v) { return double(bf2f(v)); }

// One thread per column, the rows in order (neighbouring threads read neighbouring columns).
template <class T>
__global__ void column_abs_sum_kernel(const T* __restrict__ x, int64_t t, int64_t k, double* __restrict__ sum) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= k) return;
  double s = sum[c];
  for (int64_t r = 0; r < t; ++r) s = __dadd_rn(s, fabs(as_double(x[r * k + c])));
  sum[c] = s;
}

__global__ void scale_columns_kernel(const bf16_t* __restrict__ x, const float* __restrict__ mul, int64_t n, int64_t k,
                                     bf16_t* __restrict__ out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = f2bf(__fmul_rn(bf2f(x[i]), mul[i % k]));
}

// Backend::fake_quant's grid (quant/methods/rtn.cc params_from_range, mirrored; every operation IEEE round to
// nearest, no contraction, as on the host). False when the scale does not fit fp16.
__device__ bool fq_f16(float v, float* out) {
  *out = __half2float(__float2half_rn(fmaxf(v, 1e-6f)));
  return isfinite(*out);
}

__device__ bool fq_params(float lo, float hi, int maxq, bool sym, bool include_zero, int min_zero, float* scale,
                          int* zero) {
  if (include_zero) lo = fminf(lo, 0.0f), hi = fmaxf(hi, 0.0f);
  if (sym) {
    float amax = fmaxf(fabsf(lo), fabsf(hi));
    if (amax == 0.0f) amax = 1.0f;
    *zero = (maxq + 1) / 2;
    return fq_f16(__fdiv_rn(__fmul_rn(2.0f, amax), float(maxq)), scale);
  }
  float span = __fsub_rn(hi, lo);
  if (span <= 0.0f) {
    if (hi == 0.0f) lo = -1.0f, hi = 1.0f;
    else lo = fminf(lo, 0.0f), hi = fmaxf(hi, 0.0f);
    span = __fsub_rn(hi, lo);
  }
  if (!fq_f16(__fdiv_rn(span, float(maxq)), scale)) return false;
  *zero = int(fminf(fmaxf(rintf(__fdiv_rn(-lo, *scale)), 0.0f), float(maxq)));
  if (*zero < min_zero) {
    *zero = min_zero;
    return fq_f16(__fdiv_rn(fmaxf(hi, 0.0f), float(maxq - min_zero)), scale);
  }
  return true;
}

constexpr int kFqThreads = 128;

__global__ void fake_quant_kernel(const float* __restrict__ w, const float* __restrict__ s, int64_t k, int64_t gs,
                                  int maxq, bool sym, bool include_zero, int min_zero, bool minus_w,
                                  float* __restrict__ out, int* bad) {
  const int64_t groups = k / gs;
  const int64_t r = blockIdx.x / groups, g0 = (blockIdx.x % groups) * gs;
  const float* row = w + r * k + g0;
  float lo = INFINITY, hi = -INFINITY;
  for (int64_t i = threadIdx.x; i < gs; i += kFqThreads) {
    const float v = s ? __fmul_rn(row[i], s[g0 + i]) : row[i];
    lo = fminf(lo, v), hi = fmaxf(hi, v);
  }
  __shared__ float slo[kFqThreads], shi[kFqThreads];
  __shared__ float sscale;
  __shared__ int szero, sok;
  slo[threadIdx.x] = lo, shi[threadIdx.x] = hi;
  __syncthreads();
  for (int m = kFqThreads / 2; m > 0; m /= 2) {
    if (threadIdx.x < m) {
      slo[threadIdx.x] = fminf(slo[threadIdx.x], slo[threadIdx.x + m]);
      shi[threadIdx.x] = fmaxf(shi[threadIdx.x], shi[threadIdx.x + m]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    float scale = 1.0f;
    int zero = 0;
    sok = fq_params(slo[0], shi[0], maxq, sym, include_zero, min_zero, &scale, &zero);
    if (!sok) *bad = 1;
    sscale = scale, szero = zero;
  }
  __syncthreads();
  if (!sok) return;
  const float scale = sscale;
  const int zero = szero;
  for (int64_t i = threadIdx.x; i < gs; i += kFqThreads) {
    const float v = s ? __fmul_rn(row[i], s[g0 + i]) : row[i];
    const float q = fminf(fmaxf(__fadd_rn(rintf(__fdiv_rn(v, scale)), float(zero)), 0.0f), float(maxq));
    float f = __fmul_rn(scale, float(int(q) - zero));
    if (s) f = __fdiv_rn(f, s[g0 + i]);
    out[r * k + g0 + i] = minus_w ? __fsub_rn(f, row[i]) : f;
  }
}

}  // namespace

void launch_fake_quant(const float* w, const float* s, int64_t n, int64_t k, int bits, int64_t group_size, bool sym,
                       bool include_zero, int min_zero, bool minus_w, float* out, int* bad, cudaStream_t stream) {
  const int64_t blocks = n * (k / group_size);
  if (blocks == 0) return;
  fake_quant_kernel<<<unsigned(blocks), kFqThreads, 0, stream>>>(w, s, k, group_size, (1 << bits) - 1, sym,
                                                                 include_zero, min_zero, minus_w, out, bad);
  check_launch("fake_quant");
}

void launch_scale_columns(const bf16_t* x, const float* mul, int64_t t, int64_t k, bf16_t* out, cudaStream_t stream) {
  const int64_t n = t * k;
  if (n == 0) return;
  scale_columns_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, mul, n, k, out);
  check_launch("scale_columns");
}

void launch_symmetric_scaled(const float* upper, int64_t k, double f, float* out, cudaStream_t stream) {
  if (k == 0) return;
  const int64_t tiles = (k + kTile - 1) / kTile;
  symmetric_scaled_kernel<<<dim3(unsigned(tiles), unsigned(tiles)), dim3(kTile, 8), 0, stream>>>(upper, k, f, out);
  check_launch("symmetric_scaled");
}

int dot_f64_partials() { return kDotBlocks; }

void launch_dot_f64(const float* a, const float* b, int64_t n, double* partials, double* out, cudaStream_t stream) {
  dot_partial_kernel<<<kDotBlocks, kDotThreads, 0, stream>>>(a, b, n, partials);
  check_launch("dot_f64");
  dot_final_kernel<<<1, kDotThreads, 0, stream>>>(partials, kDotBlocks, out);
  check_launch("dot_f64");
}

void launch_column_abs_sum(const void* x, bool x_bf16, int64_t t, int64_t k, double* out, cudaStream_t stream) {
  if (k == 0) return;
  constexpr int kThreads = 128;
  if (x_bf16)
    column_abs_sum_kernel<<<blocks_for(k, kThreads, 1LL << 30), kThreads, 0, stream>>>(static_cast<const bf16_t*>(x),
                                                                                       t, k, out);
  else
    column_abs_sum_kernel<<<blocks_for(k, kThreads, 1LL << 30), kThreads, 0, stream>>>(static_cast<const float*>(x),
                                                                                       t, k, out);
  check_launch("column_abs_sum");
}

}  // namespace dlx::cuda
