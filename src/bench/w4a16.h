// `diffulex bench --device cuda --w4a16-kernels` (bench/w4a16.cc): the W4A16 linear kernel alone at the Dream-7B and
// LLaDA-8B linear shapes, against cuBLASLt bf16 and the int4 memory floor. JSON out.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dlx {

struct W4A16BenchArgs {
  std::vector<int64_t> ms{1, 16, 32, 64, 128, 256, 512, 1024, 2048};
  int warmup = 5, iters = 30;
  uint64_t seed = 1;
  std::string shape;  // only shapes whose name contains this (empty: all)
  // Split-K sweep: at M <= 64, the wgmma kernel (widest tile) also timed with each of these split counts forced
  // (row "ms_wgmma_splits": {count: ms}, beside "wgmma_splits_planned"); empty: no sweep.
  std::vector<int> splits;
};
nlohmann::json run_w4a16_kernel_bench(const W4A16BenchArgs& a);

}  // namespace dlx
