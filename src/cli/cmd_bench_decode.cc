// diffulex bench decode: the flags of the decoding benchmark (src/bench/decode.cc).
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "bench/decode.h"
#include "cli/commands.h"
#include "core/error.h"
#include "io/safetensors.h"

namespace dlx::cli {

namespace {

struct Args : DecodeBenchArgs {
  std::string output;
};

}  // namespace

void add_bench_decode_subcommand(CLI::App& bench) {
  auto* cmd = bench.add_subcommand("decode", "Time diffusion decoding steps (cache modes x tokens per step x batch) as JSON");
  auto a = std::make_shared<Args>();
  add_bench_source_options(*cmd, *a);
  cmd->add_option("--batch", a->batches, "Batch sizes, comma separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--cache", a->caches, "Cache modes, comma separated: none,prefix,dual")->delimiter(',')->capture_default_str();
  cmd->add_option("--tokens-per-step", a->tokens_per_step, "Tokens revealed per step, comma separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--gen-length", a->gen_length, "Tokens generated per sequence")->capture_default_str();
  cmd->add_option("--block", a->block, "Block length")->capture_default_str();
  cmd->add_option("--prompt-length", a->prompt_length, "Random prompt tokens per sequence")->capture_default_str();
  cmd->add_option("--blocks", a->blocks, "Blocks timed per configuration (0: the whole generation)")->capture_default_str();
  cmd->add_option("--threshold", a->threshold,
                  "Reveal by confidence threshold (Fast-dLLM parallel decoding) instead of --tokens-per-step; the "
                  "steps of a block then vary, so no refresh/window split is reported")
      ->capture_default_str();
  cmd->add_option("--kv-dtype", a->kv_dtype, "KV cache storage for prefix/dual: bf16 | fp8")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the random weights and prompts")->capture_default_str();
  cmd->add_option("--threads", a->threads, "CPU threads (default: all cores)");
  cmd->add_option("--output", a->output, "Also write the JSON to this file");
  cmd->callback([a] {
    parse_kv_dtype(a->kv_dtype, "bench decode: --kv-dtype");
    check_bench_source(*a, "bench decode");
    nlohmann::json out = run_decode_bench(*a);
    const std::string text = out.dump(2) + "\n";
    if (!a->output.empty()) write_file_atomic(a->output, text);
    fmt::print("{}", text);
  });
}

}  // namespace dlx::cli
