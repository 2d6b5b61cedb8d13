// `diffulex bench decode`: diffusion decoding timed end to end as JSON (decode.cc says what is measured).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/source.h"

namespace dlx {

struct DecodeBenchArgs : BenchSource {
  std::string kv_dtype = "bf16";
  std::vector<int64_t> batches{1, 8, 32, 64};
  std::vector<std::string> caches{"none", "prefix", "dual"};
  std::vector<int64_t> tokens_per_step{1, 2, 4};
  int64_t gen_length = 256, block = 32, prompt_length = 32, blocks = 1;
  float threshold = 0;  // > 0: parallel decoding by threshold instead of a fixed count per step
  uint64_t seed = 1;
  int threads = 0;
};

nlohmann::json run_decode_bench(const DecodeBenchArgs& a);

}  // namespace dlx
