// Each CLI subcommand lives in its own cmd_<name>.cc and registers itself on the app here.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "engine/generate.h"

namespace dlx {
struct BenchSource;
struct LoadOptions;
class Model;
}

namespace dlx::cli {

// --device, --linear-{attn,mlp}-weight-dtype, --dequant-cache, --awq-order, --strict, --embed-on-host into `lo`
// (which must outlive the app), and the original Diffulex's --linear-{attn,mlp}-act-dtype (bf16) and
// --tensor-parallel-size / --data-parallel-size (1), which are checked and otherwise change nothing.
void add_load_options(CLI::App& cmd, LoadOptions& lo);

// The generation flags (--max-new-tokens, --steps, --alg, ...: one per engine/generation_options.h field).
// Must outlive the app. resolve() lays the flags given on the command line over the checkpoint's defaults
// (generation_config.json, else GenerationOptions').
class GenerationFlags {
 public:
  void add(CLI::App& cmd);
  GenerationOptions resolve(const std::string& model_dir) const;

 private:
  GenerationOptions parsed_;
  std::vector<std::string> text_;  // the enum fields' spellings, by field index
  std::vector<CLI::Option*> given_;
};

// --kv-budget (kv_budget.cc): a byte size (core/byte_size.h: "8G", "512MiB", "4GB", bytes) or "auto" (70% of the
// device memory free after loading the weights, Backend::device_memory; on the CPU 0 = unlimited).
size_t kv_budget_bytes(Model& model, const std::string& text);

void add_inspect_command(CLI::App& app);
void add_forward_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_random_model_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_bench_decode_subcommand(CLI::App& bench);  // diffulex bench decode (cmd_bench_decode.cc)
// --device, --model, --random-config, --layers, --quant, --group-size, --quant-head, --embed-on-host into `s`
// (which must outlive the app); `bench` and `bench decode` (cmd_bench.cc).
void add_bench_source_options(CLI::App& cmd, BenchSource& s);
// Exactly one of --model and --random-config, and the --quant choices; `what` names the command in the message.
void check_bench_source(const BenchSource& s, const std::string& what);
void add_quantize_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_serve_command(CLI::App& app);

}  // namespace dlx::cli
