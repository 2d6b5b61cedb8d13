// diffulex bench: the flags of `bench` (src/bench/forward.cc), `bench --w4a16-kernels` (src/bench/w4a16.cc) and
// `bench --strategies` (cli/strategies.h).
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "bench/forward.h"
#include "bench/w4a16.h"
#include "cli/commands.h"
#include "cli/strategies.h"
#include "core/error.h"
#include "formats/quant_codes.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace dlx::cli {

namespace {

struct Args : ForwardBenchArgs {
  std::string output;
  // --strategies: the original Diffulex test script's runs (cli/strategies.h) instead of forward timings.
  std::string strategies;
  int64_t max_tokens = 30;
  std::vector<std::string> prompts;
};

// --strategies without --prompt: a few plain prompts, batched, as the original's script generates a batch.
const std::vector<std::string> kStrategyPrompts = {"In the beginning", "The quick brown fox", "Once upon a time",
                                                   "A language model is"};

}  // namespace

void add_bench_source_options(CLI::App& cmd, BenchSource& s) {
  cmd.add_option("--device", s.device, "cpu | cuda")->capture_default_str();
  cmd.add_option("--model,--model-path", s.model, "Checkpoint directory (instead of --random-config)");
  cmd.add_option("--random-config", s.preset,
                 "Random weights at a preset's shape: dream-7b | llada-8b | sdar-8b | fast-dllm-v2-7b | dream-tiny | llada-tiny | sdar-tiny");
  cmd.add_option("--layers", s.layers, "Override the preset's layer count");
  cmd.add_option("--quant", s.quant, "Random-config linears: none (bf16) | w4a16 (random packed 4-bit weights)")
      ->capture_default_str();
  // -1 (or 0, accepted as before): one group per row, kOneGroupPerRow.
  cmd.add_option("--group-size", s.group_size, "--quant w4a16: group size (-1 or 0 = one group per row)")
      ->transform([](std::string v) { return v == "0" ? std::to_string(kOneGroupPerRow) : v; })
      ->capture_default_str();
  cmd.add_flag("--quant-head", s.quant_head, "--quant w4a16: the LM head a random packed 4-bit linear too");
  cmd.add_flag("--embed-on-host", s.embed_on_host, "Keep the token-embedding table in host memory");
}

void check_bench_source(const BenchSource& s, const std::string& what) {
  check(s.model.empty() != s.preset.empty(), "{}: give exactly one of --model DIR and --random-config PRESET", what);
  check(s.quant == "none" || s.quant == "w4a16", "{}: --quant must be none or w4a16 (got '{}')", what, s.quant);
  check(s.quant == "none" || s.model.empty(), "{}: --quant applies to --random-config only", what);
  check(!s.quant_head || s.quant == "w4a16", "{}: --quant-head needs --quant w4a16", what);
}

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Time forward passes (per op and per forward) and print JSON");
  auto a = std::make_shared<Args>();
  add_bench_source_options(*cmd, *a);
  cmd->add_option("--batch", a->batches, "Batch sizes, comma separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--length", a->length, "Tokens per sequence (prompt + block)")->capture_default_str();
  cmd->add_option("--block", a->block, "Positions per sequence that need logits")->capture_default_str();
  cmd->add_option("--warmup", a->warmup, "Untimed forwards per batch size")->capture_default_str();
  cmd->add_option("--iters", a->iters, "Timed forwards per batch size (medians are reported)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the random weights and ids")->capture_default_str();
  cmd->add_flag("--no-ceilings", a->no_ceilings, "Skip measuring the copy and matmul ceilings");
  cmd->add_flag("--ragged", a->ragged,
                "Also time the cached window pass (the last --block positions) as B slots of one ragged pass "
                "(continuous batching's forward_slots) and as one batch of B rows (forward_window)");
  cmd->add_option("--output", a->output, "Also write the JSON to this file");
  cmd->add_option("--strategies", a->strategies,
                  "With --model: generate with each named strategy in turn and print one JSON line each with its "
                  "tokens/s (the original Diffulex's names, e.g. gptq_w4a16_bf16kv,awq_w4a16_fp8kv)");
  cmd->add_option("--max-tokens", a->max_tokens, "--strategies: tokens generated per prompt")->capture_default_str();
  cmd->add_option("--prompt", a->prompts, "--strategies: a prompt (repeatable; default: four plain prompts)");
  // --w4a16-kernels: the W4A16 linear alone (src/bench/w4a16.cc) instead of forward passes.
  auto w4 = std::make_shared<bool>(false);
  auto w4a = std::make_shared<W4A16BenchArgs>();
  cmd->add_flag("--w4a16-kernels", *w4, "Time the W4A16 linear alone at the Dream/LLaDA shapes (CUDA; see src/bench/w4a16.cc)");
  cmd->add_option("--w4a16-ms", w4a->ms, "--w4a16-kernels: the M values, comma separated")->delimiter(',');
  cmd->add_option("--w4a16-shape", w4a->shape, "--w4a16-kernels: only shapes whose name contains this");
  cmd->add_option("--w4a16-splits", w4a->splits,
                  "--w4a16-kernels: at M <= 64 also time the wgmma kernel with each of these split-K counts forced")
      ->delimiter(',');
  add_bench_decode_subcommand(*cmd);
  cmd->callback([a, cmd, w4, w4a] {
    if (cmd->got_subcommand("decode")) return;  // `bench decode` (cmd_bench_decode.cc) ran instead
    if (!a->strategies.empty()) {
      check(!a->model.empty(), "bench --strategies needs --model DIR (a checkpoint to generate with)");
      LoadOptions lo;
      lo.device = a->device;
      lo.embed_on_host = a->embed_on_host;
      GenerationOptions o = generation_defaults(a->model);
      o.max_new_tokens = a->max_tokens;
      o.steps = 0;  // one per new token
      o.seed = a->seed;
      run_strategies(parse_strategies(a->strategies), a->model, "", lo,
                     a->prompts.empty() ? kStrategyPrompts : a->prompts, false, o);
      return;
    }
    if (*w4) {
      check(a->device == "cuda", "bench --w4a16-kernels needs --device cuda");
      W4A16BenchArgs wa = *w4a;
      wa.seed = a->seed;
      for (int sp : wa.splits) check(sp >= 1, "bench --w4a16-splits: split counts are 1 or more (got {})", sp);
      const std::string text = run_w4a16_kernel_bench(wa).dump(2) + "\n";
      if (!a->output.empty()) write_file_atomic(a->output, text);
      fmt::print("{}", text);
      return;
    }
    check_bench_source(*a, "bench");
    nlohmann::json out = run_forward_bench(*a);
    const std::string text = out.dump(2) + "\n";
    if (!a->output.empty()) write_file_atomic(a->output, text);
    fmt::print("{}", text);
  });
}

}  // namespace dlx::cli
