// The samplers' per-position row work on the GPU (kernels/row_sampling.h) and the row gather of the LM head.
//
// sample_rows: one block of 1024 threads per draw. The row (cfg-combined, tempered, suppressed) is written once
// to an F32 scratch row and every later pass reads it from there (L2-resident for the sizes of a step):
//   1. max and first argmax (block reduction)
//   2. top-p: the cut value is found by a 4-pass radix select over the order-preserving bits of the logits, each
//      pass a 256-bin histogram of probability mass (double) in shared memory, scanned from the largest bin; the
//      entries tied with the cut value are kept lowest index first, as many as the host's sequential scan would
//      keep (a per-thread count over contiguous chunks finds the last kept index). Exact: no top-k prefilter.
//   3. top-k: the k-th largest value by the same radix select over counts.
//   4. softmax sums (expf per entry, double sums), token (argmax, or the inverse-CDF draw: chunk sums in index
//      order, an exclusive scan over the threads' chunks, and a sequential scan inside the chunk that holds the
//      target), probability and confidence.
// Greedy Dream rows (temperature 0, no top-p or top-k: the decoding default) take the split path instead: each row
// is cut into chunks of kChunk entries, one block a chunk (a row alone would keep one SM busy: 32 rows of a step
// used 32 of an H100's 132 SMs for 184 us), in four launches: (1) the chunk's working values into the scratch row
// and its first maximum; (2) the row's maximum from the chunks' (in chunk order), then the chunk's sum of exp;
// (3) with the row's sum (chunks in order), the chunk's part of the confidence (margin: the largest probability
// other than the top one; entropy: its sum); (4) one thread a row combines them. The same values as the one-block
// path but for the association of the double sums.
// The arithmetic follows the host code in engine/sampling.cc operation for operation (float logits, float exp,
// double sums, round-to-nearest intrinsics where the compiler could otherwise contract); the sums run in another
// association, so probabilities and confidences may differ from the host in the last bits (the greedy token is
// the same: it is the first maximum of the same float values).
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/sample_rows.h"

namespace dlx::cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

// Order-preserving key: a larger float has a larger key (-0 is folded into +0 first, as float comparison does).
__device__ __forceinline__ uint32_t okey(float f) {
  const uint32_t b = __float_as_uint(__fadd_rn(f, 0.0f));
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float from_okey(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ double block_sum(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    double s = red[threadIdx.x];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x == 0) red[0] = s;
  }
  __syncthreads();
  return red[0];
}

// (value, index) maximum: larger value, then lower index; index -1 loses to everything and a NaN wins over every
// number, so that a row with a NaN anywhere reduces to NaN and is reported as the host reports it
// (kernels/row_sampling.cc row_max), instead of the NaN dropping out of the comparisons.
struct ArgMax {
  float v;
  int64_t i;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (a.i < 0) return b;
  if (b.i < 0) return a;
  const bool a_nan = a.v != a.v, b_nan = b.v != b.v;
  if (a_nan || b_nan) return a_nan && (!b_nan || a.i < b.i) ? a : b;
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}
__device__ ArgMax block_argmax(ArgMax m, float* red_v, int64_t* red_i) {
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax other{__shfl_xor_sync(0xffffffffu, m.v, o), __shfl_xor_sync(0xffffffffu, m.i, o)};
    m = better(m, other);
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red_v[threadIdx.x >> 5] = m.v, red_i[threadIdx.x >> 5] = m.i;
  __syncthreads();
  if (threadIdx.x < 32) {
    ArgMax s{red_v[threadIdx.x], red_i[threadIdx.x]};
    for (int o = 16; o > 0; o >>= 1) {
      ArgMax other{__shfl_xor_sync(0xffffffffu, s.v, o), __shfl_xor_sync(0xffffffffu, s.i, o)};
      s = better(s, other);
    }
    if (threadIdx.x == 0) red_v[0] = s.v, red_i[0] = s.i;
  }
  __syncthreads();
  return ArgMax{red_v[0], red_i[0]};
}

struct Shared {
  double mass[256];
  int cnt[256];
  double red[kWarps];
  float red_v[kWarps];
  int64_t red_i[kWarps];
  double chunk[kThreads];  // per-thread chunk sums / counts
  uint32_t prefix, mask;
  double above;
  int sel_count;
  int found;
  int64_t pick;
};

// Radix select from the top over the keys of x (entries with key & mask == prefix take part): finds the bin where
// the running total (mass when by_mass, else counts) first exceeds `budget` (by mass) or reaches it (by count).
// On return s.prefix holds the selected key, s.above the total strictly above it, s.sel_count its count;
// s.found is 0 when the total never crossed (keep everything).
__device__ void radix_select(const float* x, int64_t V, float m, bool by_mass, double budget, Shared& s) {
  if (threadIdx.x == 0) s.prefix = 0, s.mask = 0, s.above = 0, s.found = 1;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int b = threadIdx.x; b < 256; b += blockDim.x) s.mass[b] = 0, s.cnt[b] = 0;
    __syncthreads();
    const uint32_t prefix = s.prefix, mask = s.mask;
    // Each thread sums a run of entries falling into one bin before one atomic: the first passes put almost every
    // entry into a few bins, where one shared atomic per entry would serialize the block.
    int cur = -1, run_count = 0;
    double run_mass = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float xv = x[v];
      const uint32_t k = okey(xv);
      if ((k & mask) != prefix) continue;
      const int bin = int((k >> shift) & 255u);
      if (bin != cur) {
        if (cur >= 0) {
          atomicAdd(&s.cnt[cur], run_count);
          if (by_mass) atomicAdd(&s.mass[cur], run_mass);
        }
        cur = bin, run_count = 0, run_mass = 0;
      }
      ++run_count;
      if (by_mass) run_mass += double(expf(xv - m));
    }
    if (cur >= 0) {
      atomicAdd(&s.cnt[cur], run_count);
      if (by_mass) atomicAdd(&s.mass[cur], run_mass);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double cum = s.above;
      int sel = -1, lowest = -1;
      for (int b = 255; b >= 0; --b) {
        if (s.cnt[b] == 0) continue;
        lowest = b;
        const double here = by_mass ? s.mass[b] : double(s.cnt[b]);
        if (by_mass ? cum + here > budget : cum + here >= budget) {
          sel = b;
          break;
        }
        cum += here;
      }
      if (sel < 0) {
        if (pass == 0) {
          s.found = 0;  // the whole row does not cross the budget (rounding): nothing is cut
        } else {
          sel = lowest;  // the parent bin crossed; rounding in another order: the crossing is at its end
          cum -= by_mass ? s.mass[sel] : double(s.cnt[sel]);
        }
      }
      if (sel >= 0) {
        s.above = cum;
        s.prefix |= uint32_t(sel) << shift;
        s.mask |= 255u << shift;
        s.sel_count = s.cnt[sel];
      }
    }
    __syncthreads();
    if (!s.found) return;
  }
}

// The index of the `k`-th (1-based) entry equal to `c` in index order; each thread counts over a contiguous chunk.
__device__ int64_t kth_tie_index(const float* x, int64_t V, float c, int64_t k, Shared& s) {
  const int64_t chunk = (V + blockDim.x - 1) / blockDim.x;
  const int64_t lo = imin(V, threadIdx.x * chunk), hi = imin(V, lo + chunk);
  int64_t n = 0;
  for (int64_t v = lo; v < hi; ++v) n += x[v] == c;
  s.chunk[threadIdx.x] = double(n);
  __syncthreads();
  if (threadIdx.x == 0) {
    double before = 0;
    int t = 0;
    for (; t < int(blockDim.x); ++t) {
      if (before + s.chunk[t] >= double(k)) break;
      before += s.chunk[t];
    }
    s.chunk[0] = double(t);  // owner thread
    s.red[0] = before;
    s.pick = V;  // keep every tie unless the owner finds the k-th
  }
  __syncthreads();
  const int owner = int(s.chunk[0]);
  int64_t need = k - int64_t(s.red[0]);
  __syncthreads();
  if (int(threadIdx.x) == owner) {
    int64_t idx = hi - 1;
    for (int64_t v = lo; v < hi; ++v)
      if (x[v] == c && --need == 0) {
        idx = v;
        break;
      }
    s.pick = idx;
  }
  __syncthreads();
  return s.pick;
}

// Entry v of a draw's row with classifier-free guidance (uncond null: none): u + (cfg_scale + 1) (c - u), scale1 =
// cfg_scale + 1, in float without contraction, as engine/sampling.h cfg_combine.
__device__ __forceinline__ float guided(const bf16_t* cond, const bf16_t* uncond, int64_t v, float scale1) {
  const float c = bf2f(cond[v]);
  if (!uncond) return c;
  const float u = bf2f(uncond[v]);
  return __fadd_rn(u, __fmul_rn(scale1, __fsub_rn(c, u)));
}

__global__ void __launch_bounds__(kThreads) sample_rows_kernel(SampleRowsArgs a) {
  __shared__ Shared s;
  const int d = blockIdx.x;
  const int64_t V = a.V;
  const SampleDraw draw = a.draws[d];
  float* x = a.scratch + int64_t(d) * V;
  const bf16_t* cond = a.logits + draw.row * V;
  const bf16_t* uncond = a.cfg_scale > 0 ? a.logits + draw.uncond_row * V : nullptr;
  const bool temper = !a.gumbel && a.temperature > 0;
  const float scale1 = __fadd_rn(a.cfg_scale, 1.0f);

  // The working row: cfg combine, temperature, then the suppressed ids.
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float c = guided(cond, uncond, v, scale1);
    x[v] = temper ? __fdiv_rn(c, a.temperature) : c;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < a.n_suppress; i += blockDim.x) {
    const int64_t id = a.suppress[i];
    if (id >= 0 && id < V) x[id] = -INFINITY;
  }
  __syncthreads();

  ArgMax best{-INFINITY, -1};
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) best = better(best, ArgMax{x[v], v});
  best = block_argmax(best, s.red_v, s.red_i);
  const float m = best.v;
  if (!(m > -INFINITY && m < INFINITY)) {  // no finite logit, a NaN or +inf: the host reports the error
    if (threadIdx.x == 0) a.out[d] = SampleResult{-1, 0.0, 0.0};
    return;
  }

  if (a.gumbel) {  // temperature 0: argmax, and softmax(x)[token] in double
    double sum = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += exp(double(x[v]) - double(m));
    sum = block_sum(sum, s.red);
    if (threadIdx.x == 0) {
      const double p = exp(double(x[best.i]) - double(m)) / sum;
      a.out[d] = SampleResult{best.i, p, p};
    }
    return;
  }

  if (a.top_p < 1.0f && V > 1) {
    double total = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) total += double(expf(x[v] - m));
    total = block_sum(total, s.red);
    const double budget = double(a.top_p) * total;
    radix_select(x, V, m, true, budget, s);
    if (s.found) {
      const float c = from_okey(s.prefix);
      const double w = double(expf(c - m));
      // The host keeps tied entries (lowest index first) until the running mass exceeds the budget.
      int64_t keep = int64_t(floor((budget - s.above) / w)) + 1;
      keep = imax(1, imin(keep, s.sel_count));
      const int64_t last = keep < s.sel_count ? kth_tie_index(x, V, c, keep, s) : V;
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
        const float xv = x[v];
        if (xv < c || (xv == c && v > last)) x[v] = -INFINITY;
      }
      __syncthreads();
    }
  }
  if (a.top_k > 0 && a.top_k < V) {
    radix_select(x, V, m, false, double(a.top_k), s);
    if (s.found) {
      const float kth = from_okey(s.prefix);
      for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
        if (x[v] < kth) x[v] = -INFINITY;
      __syncthreads();
    }
  }

  // Softmax of the filtered row: p = float(float(exp(x - m)) * (1 / sum)), sum in double.
  double sum = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += double(expf(x[v] - m));
  sum = block_sum(sum, s.red);
  const double inv = 1.0 / sum;
  auto prob = [&](int64_t v) { return float(double(expf(x[v] - m)) * inv); };

  int64_t token = best.i;
  if (a.temperature > 0) {
    // Inverse CDF in index order over contiguous chunks.
    const int64_t chunk = (V + blockDim.x - 1) / blockDim.x;
    const int64_t lo = imin(V, threadIdx.x * chunk), hi = imin(V, lo + chunk);
    double part = 0;
    int64_t last_pos = -1;
    for (int64_t v = lo; v < hi; ++v) {
      const float p = prob(v);
      if (p > 0) part += p, last_pos = v;
    }
    s.chunk[threadIdx.x] = part;
    __syncthreads();
    if (threadIdx.x == 0) {  // exclusive scan over the chunks, in order
      double run = 0;
      for (int t = 0; t < int(blockDim.x); ++t) {
        const double c = s.chunk[t];
        s.chunk[t] = run;
        run += c;
      }
      s.above = run;  // total
      s.pick = -1;
    }
    __syncthreads();
    const double target = draw.u * s.above;
    const double before = s.chunk[threadIdx.x];
    const double after = threadIdx.x + 1 < blockDim.x ? s.chunk[threadIdx.x + 1] : s.above;
    if (before <= target && target < after && last_pos >= 0) {
      double cum = before;
      int64_t pick = last_pos;
      for (int64_t v = lo; v < hi; ++v) {
        const float p = prob(v);
        if (p <= 0) continue;
        cum += p;
        if (cum > target) {
          pick = v;
          break;
        }
      }
      s.pick = pick;  // one thread at most: the chunk bounds do not decrease
    }
    // The last entry with positive probability (u * total rounded up to the whole sum); also orders the
    // store to s.pick before the read below (the reduction synchronizes).
    const ArgMax lp = block_argmax(ArgMax{float(last_pos), last_pos}, s.red_v, s.red_i);
    token = s.pick >= 0 ? s.pick : lp.i;
  }

  // Confidence.
  double conf = 0;
  if (a.confidence == 1) {  // top1 - top2 of p (a tie counts twice)
    float second = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
      if (v != best.i) second = fmaxf(second, prob(v));
    ArgMax sm = block_argmax(ArgMax{second, int64_t(threadIdx.x)}, s.red_v, s.red_i);
    const double top = double(prob(best.i));
    conf = V >= 2 ? top - double(sm.v) : top;
  } else if (a.confidence == 2) {  // sum p log(p + 1e-10), float log as the reference
    double e = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float p = prob(v);
      if (p > 0) e += double(p) * double(logf(__fadd_rn(p, 1e-10f)));
    }
    conf = block_sum(e, s.red);
  }
  if (threadIdx.x == 0) {
    const double p = double(prob(token));
    a.out[d] = SampleResult{token, p, a.confidence == 0 ? p : conf};
  }
}

// The split path (see the top of the file). Partials per (draw, chunk), in one workspace:
constexpr int64_t kChunk = int64_t(kThreads) * 16;
struct Partial {
  ArgMax best;  // the chunk's first maximum
  double sum;   // its sum of exp(x - m), m the row's maximum
  double conf;  // its margin candidate (largest probability but the top one) or entropy part
};

bool split_path(const SampleRowsArgs& a) {
  return !a.gumbel && a.temperature == 0 && !(a.top_p < 1.0f) && !(a.top_k > 0 && a.top_k < a.V) && a.n <= 65535;
}
int64_t chunks_of(int64_t V) { return (V + kChunk - 1) / kChunk; }

// The row's first maximum from its chunks' (blockDim-uniform; every thread gets it).
__device__ ArgMax row_best(const Partial* p, int64_t chunks) {
  ArgMax best{-INFINITY, -1};
  for (int64_t c = 0; c < chunks; ++c) best = better(best, p[c].best);
  return best;
}
// A finite maximum (false for NaN, which wins the reductions, for +inf and for a row of -inf).
__device__ bool usable(ArgMax b) { return b.v > -INFINITY && b.v < INFINITY; }

__global__ void __launch_bounds__(kThreads) split_values_kernel(SampleRowsArgs a, int64_t chunks) {
  __shared__ Shared s;
  __shared__ uint32_t suppressed[kChunk / 32];
  const int d = blockIdx.y;
  const int64_t V = a.V, lo = int64_t(blockIdx.x) * kChunk, hi = imin(V, lo + kChunk);
  const SampleDraw draw = a.draws[d];
  const bf16_t* cond = a.logits + draw.row * V;
  const bf16_t* uncond = a.cfg_scale > 0 ? a.logits + draw.uncond_row * V : nullptr;
  const float scale1 = __fadd_rn(a.cfg_scale, 1.0f);
  for (int64_t w = threadIdx.x; w < kChunk / 32; w += blockDim.x) suppressed[w] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < a.n_suppress; i += blockDim.x) {
    const int64_t id = a.suppress[i];
    if (id >= lo && id < hi) atomicOr(&suppressed[(id - lo) / 32], 1u << ((id - lo) % 32));
  }
  __syncthreads();
  float* x = a.scratch + int64_t(d) * V;
  ArgMax best{-INFINITY, -1};
  for (int64_t v = lo + threadIdx.x; v < hi; v += blockDim.x) {
    float c = guided(cond, uncond, v, scale1);
    if (suppressed[(v - lo) / 32] & (1u << ((v - lo) % 32))) c = -INFINITY;
    x[v] = c;
    best = better(best, ArgMax{c, v});
  }
  best = block_argmax(best, s.red_v, s.red_i);
  if (threadIdx.x == 0) static_cast<Partial*>(a.partials)[int64_t(d) * chunks + blockIdx.x].best = best;
}

// What a split-path block of the later passes works on: its draw's (blockIdx.y) partials and first maximum, the
// draw's scratch row and the chunk (blockIdx.x) of it.
struct SplitChunk {
  Partial* p;
  ArgMax best;
  const float* x;
  int64_t lo, hi;
};
__device__ SplitChunk split_chunk(const SampleRowsArgs& a, int64_t chunks) {
  const int d = blockIdx.y;
  Partial* p = static_cast<Partial*>(a.partials) + int64_t(d) * chunks;
  const int64_t lo = int64_t(blockIdx.x) * kChunk;
  return {p, row_best(p, chunks), a.scratch + int64_t(d) * a.V, lo, imin(a.V, lo + kChunk)};
}

__global__ void __launch_bounds__(kThreads) split_sum_kernel(SampleRowsArgs a, int64_t chunks) {
  __shared__ Shared s;
  const SplitChunk c = split_chunk(a, chunks);
  if (!usable(c.best)) return;
  const float m = c.best.v;
  double sum = 0;
  for (int64_t v = c.lo + threadIdx.x; v < c.hi; v += blockDim.x) sum += double(expf(c.x[v] - m));
  sum = block_sum(sum, s.red);
  if (threadIdx.x == 0) c.p[blockIdx.x].sum = sum;
}

// The row's 1 / sum of exp from its chunks' sums, in chunk order.
__device__ double row_inv(const Partial* p, int64_t chunks) {
  double sum = 0;
  for (int64_t c = 0; c < chunks; ++c) sum += p[c].sum;
  return 1.0 / sum;
}

__global__ void __launch_bounds__(kThreads) split_conf_kernel(SampleRowsArgs a, int64_t chunks) {
  __shared__ Shared s;
  const SplitChunk c = split_chunk(a, chunks);
  if (!usable(c.best)) return;
  const float m = c.best.v;
  const double inv = row_inv(c.p, chunks);
  auto prob = [&](int64_t v) { return float(double(expf(c.x[v] - m)) * inv); };
  if (a.confidence == 1) {
    float second = -INFINITY;
    for (int64_t v = c.lo + threadIdx.x; v < c.hi; v += blockDim.x)
      if (v != c.best.i) second = fmaxf(second, prob(v));
    const ArgMax sm = block_argmax(ArgMax{second, int64_t(threadIdx.x)}, s.red_v, s.red_i);
    if (threadIdx.x == 0) c.p[blockIdx.x].conf = double(sm.v);
  } else {
    double e = 0;
    for (int64_t v = c.lo + threadIdx.x; v < c.hi; v += blockDim.x) {
      const float q = prob(v);
      if (q > 0) e += double(q) * double(logf(__fadd_rn(q, 1e-10f)));
    }
    e = block_sum(e, s.red);
    if (threadIdx.x == 0) c.p[blockIdx.x].conf = e;
  }
}

__global__ void split_finish_kernel(SampleRowsArgs a, int64_t chunks) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= a.n) return;
  const Partial* p = static_cast<const Partial*>(a.partials) + int64_t(d) * chunks;
  const ArgMax best = row_best(p, chunks);
  if (!usable(best)) {
    a.out[d] = SampleResult{-1, 0.0, 0.0};
    return;
  }
  const double inv = row_inv(p, chunks);
  const float m = best.v;
  const double top = double(float(double(expf(a.scratch[int64_t(d) * a.V + best.i] - m)) * inv));
  double conf = top;
  if (a.confidence == 1) {
    double second = -INFINITY;
    for (int64_t c = 0; c < chunks; ++c) second = fmax(second, p[c].conf);
    conf = a.V >= 2 ? top - second : top;
  } else if (a.confidence == 2) {
    conf = 0;
    for (int64_t c = 0; c < chunks; ++c) conf += p[c].conf;
  }
  a.out[d] = SampleResult{best.i, top, conf};
}

__global__ void gather_rows_kernel(const bf16_t* x, const int64_t* rows, int64_t H, bf16_t* out, bool vec) {
  const bf16_t* src = x + rows[blockIdx.x] * H;
  bf16_t* dst = out + int64_t(blockIdx.x) * H;
  if (vec) {
    const uint4* s8 = reinterpret_cast<const uint4*>(src);
    uint4* d8 = reinterpret_cast<uint4*>(dst);
    for (int64_t i = threadIdx.x; i < H / 8; i += blockDim.x) d8[i] = s8[i];
  } else {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) dst[i] = src[i];
  }
}

}  // namespace

void launch_gather_rows(const bf16_t* x, const int64_t* rows, int64_t R, int64_t H, bf16_t* out, cudaStream_t stream) {
  if (R == 0 || H == 0) return;
  const bool vec = H % 8 == 0 && aligned16(x) && aligned16(out);  // then every row start is 16-byte aligned
  gather_rows_kernel<<<unsigned(R), 256, 0, stream>>>(x, rows, H, out, vec);
  check_launch("gather_rows");
}

int64_t sample_rows_partial_bytes(const SampleRowsArgs& a) {
  return split_path(a) ? int64_t(a.n) * chunks_of(a.V) * int64_t(sizeof(Partial)) : 0;
}

void launch_sample_rows(const SampleRowsArgs& a, cudaStream_t stream) {
  if (a.n == 0) return;
  if (!split_path(a)) {
    sample_rows_kernel<<<unsigned(a.n), kThreads, 0, stream>>>(a);
    check_launch("sample_rows");
    return;
  }
  if (a.partials == nullptr) check_cuda(cudaErrorInvalidValue, "sample_rows (split path)");
  const int64_t chunks = chunks_of(a.V);
  const dim3 grid(unsigned(chunks), unsigned(a.n));
  split_values_kernel<<<grid, kThreads, 0, stream>>>(a, chunks);
  split_sum_kernel<<<grid, kThreads, 0, stream>>>(a, chunks);
  if (a.confidence != 0) split_conf_kernel<<<grid, kThreads, 0, stream>>>(a, chunks);
  split_finish_kernel<<<unsigned((a.n + 127) / 128), 128, 0, stream>>>(a, chunks);
  check_launch("sample_rows");
}

}  // namespace dlx::cuda
