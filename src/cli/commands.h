// Each CLI subcommand lives in its own cmd_<name>.cc and registers itself on the app here.
#pragma once
#include <CLI/CLI.hpp>

namespace dlx {
struct LoadOptions;
}

namespace dlx::cli {

// --device, --linear-{attn,mlp}-weight-dtype, --dequant-cache, --awq-order into `lo` (which must outlive the app).
void add_load_options(CLI::App& cmd, LoadOptions& lo);

void add_inspect_command(CLI::App& app);
void add_forward_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_random_model_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_bench_decode_subcommand(CLI::App& bench);  // diffulex bench decode (cmd_bench_decode.cc)
void add_quantize_command(CLI::App& app);
void add_eval_command(CLI::App& app);

}  // namespace dlx::cli
