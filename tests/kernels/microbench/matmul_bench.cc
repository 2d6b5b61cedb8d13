// CPU dense matmul at Dream-7B layer shapes. Reports weight GB/s (bytes of the bf16 weight read per call)
// and GFLOP/s; compare GB/s with the machine's measured copy bandwidth (docs/PERFORMANCE.md).
//   build/diffulex_bench --benchmark_filter=DenseMatmul
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/tensor.h"
#include "kernels/cpu/matmul.h"

namespace {

dlx::Tensor random_bf16(int64_t n, int64_t k, uint64_t seed) {
  dlx::Tensor t = dlx::Tensor::zeros(dlx::DType::BF16, {n, k});
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 0.02f);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint16_t>()[i] = dlx::f32_to_bf16(nd(rng));
  return t;
}

void DenseMatmul(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  dlx::Tensor w = random_bf16(N, K, 1);
  dlx::Tensor x = dlx::Tensor::zeros(dlx::DType::F32, {M, K});
  std::mt19937_64 rng(2);
  std::normal_distribution<float> nd;
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = nd(rng);
  dlx::Tensor y = dlx::Tensor::zeros(dlx::DType::F32, {M, N});
  for (auto _ : st) {
    dlx::cpu_matmul(x, w, nullptr, y);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["weight_GBps"] = benchmark::Counter(double(w.nbytes()), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GFLOPs"] = benchmark::Counter(2.0 * double(M * N * K), benchmark::Counter::kIsIterationInvariantRate);
}

// Dream-7B: q (3584x3584), gate/up (18944x3584), down (3584x18944).
BENCHMARK(DenseMatmul)
    ->ArgNames({"M", "N", "K"})
    ->Args({1, 3584, 3584})
    ->Args({64, 3584, 3584})
    ->Args({1, 18944, 3584})
    ->Args({64, 18944, 3584})
    ->Args({1, 3584, 18944})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Memory copy ceiling of this machine: 256 MiB memcpy, bytes read + written.
void MemCopy(benchmark::State& st) {
  const size_t n = size_t(256) << 20;
  std::vector<char> a(n, 1), b(n, 0);
  for (auto _ : st) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::DoNotOptimize(b.data());
  }
  st.counters["GBps"] = benchmark::Counter(2.0 * double(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(MemCopy)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
