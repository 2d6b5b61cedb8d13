// `diffulex bench`: forward-pass timings of a model as JSON, on any backend (forward.cc says what is measured).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "bench/source.h"

namespace dlx {

struct ForwardBenchArgs : BenchSource {
  std::vector<int64_t> batches{1, 8, 32};
  int64_t length = 288, block = 32;
  int warmup = 2, iters = 10;
  uint64_t seed = 1;
  bool no_ceilings = false;
  bool ragged = false;  // also time a cached window pass as B slots (forward_slots) and as B rows (forward_window)
};

nlohmann::json run_forward_bench(const ForwardBenchArgs& a);

}  // namespace dlx
