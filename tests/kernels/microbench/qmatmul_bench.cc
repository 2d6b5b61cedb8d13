// CPU W4A16 matmul (fused, kernels/cpu/qmatmul.h) against the dense bf16 matmul (kernels/cpu/matmul.h) and
// the --dequant-cache F32 copy, at the Dream-7B and LLaDA-8B layer shapes (N x K): Dream qkv 4608x3584, o
// 3584x3584, gate+up 37888x3584, down 3584x18944; LLaDA qkv 12288x4096, gate+up 24576x4096, down 4096x12288;
// M = 1 .. 256. weight_GBps counts the bytes of each variant's own weight (packed int4 + F32 scales/zeros, bf16,
// or F32) read per call; the speed-up is the ratio of times.
// The variants of one shape and M are registered back to back; on a shared machine interleave their
// repetitions and compare minima (the least disturbed runs). docs/PERFORMANCE.md's table comes from one thread,
// whose "CPU" column (the main thread's CPU time) does not count time spent waiting for a core:
//   DIFFULEX_THREADS=1 build/diffulex_bench --benchmark_filter='^(W4A16|DenseBf16)/' --benchmark_repetitions=5 \
//     --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true
// Also registered: the ratio guard's shapes 1024x3584 and 256x18944 (tests/kernels/qmatmul_ratio_test.cc) with
// M up to 288 (docs/PERFORMANCE.md, "CPU dense matmul", has the command).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/packed_convert.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/qmatmul.h"
#include "model/random_init.h"

namespace {

constexpr int64_t kGroup = 128;

// xorshift64: fast enough to fill a 136M-element weight in a moment.
struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uniform() { return float(next() >> 40) / float(1 << 24); }  // [0, 1)
};

// Each variant cycles through enough copies of its weight to exceed the 32 MB L3 several times, so every call
// streams the weight from memory, as in a real forward pass over all layers (a small weight called in a loop
// would otherwise sit in L3 and flatter whichever variant is smallest).
constexpr size_t kRotateBytes = size_t(128) << 20;

size_t copies_for(size_t bytes) { return std::max<size_t>(1, (kRotateBytes + bytes - 1) / bytes); }

dlx::Tensor copy_of(const dlx::Tensor& t) { return dlx::Tensor::from_data(t.dtype(), t.shape(), t.data()); }

// Random 4-bit packed weights of one shape at a time (the big shapes are hundreds of MB in the dense forms).
const std::vector<dlx::PackedWeight>& packed(int64_t n, int64_t k) {
  static std::vector<dlx::PackedWeight> ws;
  if (ws.empty() || ws[0].n != n || ws[0].k != k) {
    ws.clear();
    dlx::RandomPackedOptions o;
    o.group_size = kGroup;
    o.scale_lo = 0.001f, o.scale_hi = 0.005f;
    dlx::PackedWeight w = dlx::random_packed_weight(n, k, o, 0x9E3779B97F4A7C15ull);
    ws.push_back(w);
    for (size_t c = 1; c < copies_for(w.nbytes()); ++c) {
      dlx::PackedWeight d = w;
      d.qweight = copy_of(w.qweight);
      d.scales = copy_of(w.scales);
      d.zeros = copy_of(w.zeros);
      ws.push_back(d);
    }
  }
  return ws;
}

const std::vector<dlx::Tensor>& dense(int64_t n, int64_t k, dlx::DType t) {
  static std::vector<dlx::Tensor> bf16, f32;  // one set per dtype: the variants alternate
  std::vector<dlx::Tensor>& ws = t == dlx::DType::F32 ? f32 : bf16;
  if (ws.empty() || ws[0].dim(0) != n || ws[0].dim(1) != k) {
    ws.clear();
    dlx::Tensor w = dlx::dequantize_packed(packed(n, k)[0]);
    if (t == dlx::DType::BF16) {
      dlx::Tensor b = dlx::Tensor::zeros(dlx::DType::BF16, {n, k});
      for (int64_t i = 0; i < w.numel(); ++i) b.data<uint16_t>()[i] = dlx::f32_to_bf16(w.data<float>()[i]);
      w = b;
    }
    ws.push_back(w);
    for (size_t c = 1; c < copies_for(w.nbytes()); ++c) ws.push_back(copy_of(w));
  }
  return ws;
}

dlx::Tensor input(int64_t m, int64_t k) {
  dlx::Tensor x = dlx::Tensor::zeros(dlx::DType::F32, {m, k});
  Rng r{42};
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = r.uniform() * 2.0f - 1.0f;
  return x;
}

void counters(benchmark::State& st, double weight_bytes) {
  const double M = double(st.range(0)), N = double(st.range(1)), K = double(st.range(2));
  st.counters["weight_GBps"] = benchmark::Counter(weight_bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GFLOPs"] = benchmark::Counter(2.0 * M * N * K / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void W4A16(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  const std::vector<dlx::PackedWeight>& ws = packed(N, K);
  dlx::Tensor x = input(M, K), y = dlx::Tensor::zeros(dlx::DType::F32, {M, N});
  size_t i = 0;
  for (auto _ : st) {
    dlx::cpu_qmatmul(x, ws[i++ % ws.size()], nullptr, y);
    benchmark::DoNotOptimize(y.data());
  }
  counters(st, double(ws[0].nbytes()));
}

void DenseBf16(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  const std::vector<dlx::Tensor>& ws = dense(N, K, dlx::DType::BF16);
  dlx::Tensor x = input(M, K), y = dlx::Tensor::zeros(dlx::DType::F32, {M, N});
  size_t i = 0;
  for (auto _ : st) {
    dlx::cpu_matmul(x, ws[i++ % ws.size()], nullptr, y);
    benchmark::DoNotOptimize(y.data());
  }
  counters(st, double(ws[0].nbytes()));
}

void DequantCacheF32(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  const std::vector<dlx::Tensor>& ws = dense(N, K, dlx::DType::F32);
  dlx::Tensor x = input(M, K), y = dlx::Tensor::zeros(dlx::DType::F32, {M, N});
  size_t i = 0;
  for (auto _ : st) {
    dlx::cpu_matmul(x, ws[i++ % ws.size()], nullptr, y);
    benchmark::DoNotOptimize(y.data());
  }
  counters(st, double(ws[0].nbytes()));
}

// Shape-major registration: the variants of one (M, N, K) run back to back.
const bool registered = [] {
  using Variants = std::vector<std::pair<const char*, void (*)(benchmark::State&)>>;
  const auto add = [](const Variants& variants, int64_t m, int64_t n, int64_t k) {
    for (auto [name, fn] : variants)
      benchmark::RegisterBenchmark(name, fn)
          ->ArgNames({"M", "N", "K"})
          ->Args({m, n, k})
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime()
          ->ComputeStatistics("min",
                              [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); });
  };
  const Variants layers = {{"W4A16", W4A16}, {"DenseBf16", DenseBf16}, {"DequantCacheF32", DequantCacheF32}};
  for (auto [n, k] : {std::pair<int64_t, int64_t>{4608, 3584}, {3584, 3584}, {37888, 3584}, {3584, 18944},
                      {12288, 4096}, {24576, 4096}, {4096, 12288}})
    for (int64_t m : {1, 8, 16, 32, 64, 128, 256}) add(layers, m, n, k);
  // The ratio guard's shapes (tests/kernels/qmatmul_ratio_test.cc), here streamed from memory.
  for (auto [n, k] : {std::pair<int64_t, int64_t>{1024, 3584}, {256, 18944}})
    for (int64_t m : {1, 8, 16, 32, 64, 128, 288}) add(layers, m, n, k);
  return true;
}();

}  // namespace
