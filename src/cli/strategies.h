// The original Diffulex's named quantization strategies (`--strategies gptq_w4a16_bf16kv,awq_w4a16_fp8kv` on
// `generate` and `bench`), each a weight family for the attention and MLP linears and a KV-cache dtype, run in
// turn like its test script: one load and one generation each, one JSON result line each (docs/FROM_DIFFULEX.md).
#pragma once
#include <string>
#include <vector>

#include "engine/generate.h"
#include "model/model.h"

namespace dlx::cli {

struct Strategy {
  std::string name;           // e.g. "gptq_w4a16_fp8kv"
  std::string weight_family;  // bf16 | gptq | awq (LoadOptions' attn and mlp families)
  KvDtype kv_dtype;
};

// "a,b,c" into strategies; a name diffulex cannot honour is an Error naming it and listing the supported names.
std::vector<Strategy> parse_strategies(const std::string& list);

// For each strategy: loads `model_dir` with `lo` and the strategy's weight family, generates `prompts` with `opts`
// and the strategy's KV dtype (an fp8 KV cache needs a cache: cache "prefix" unless opts has one), and prints one
// JSON line {"strategy", "texts", "new_tokens", "generate_s", "tokens_per_s", "load_s"} or {"strategy", "error"}.
// Throws an Error after the last one when any failed.
void run_strategies(const std::vector<Strategy>& strategies, const std::string& model_dir,
                    const std::string& tokenizer_dir, const LoadOptions& lo, const std::vector<std::string>& prompts,
                    bool chat, const GenerationOptions& opts);

}  // namespace dlx::cli
