// diffulex random-model: writes a random-weight checkpoint at a real model's shape (for speed and memory
// measurements without downloading weights) or a tiny one (for tests).
#include <fmt/format.h>

#include "cli/commands.h"
#include "model/random_model.h"

namespace dlx::cli {

void add_random_model_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("random-model", "Write a random-weight checkpoint (dream-7b, llada-8b, sdar-8b, fast-dllm-v2-7b, dream-tiny, llada-tiny, sdar-tiny)");
  struct Args {
    std::string preset = "dream-tiny", output;
    int64_t layers = 0;
    uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--preset", a->preset, "dream-7b | llada-8b | sdar-8b | fast-dllm-v2-7b | dream-tiny | llada-tiny | sdar-tiny")->capture_default_str();
  cmd->add_option("--output", a->output, "Directory to write (created)")->required();
  cmd->add_option("--layers", a->layers, "Override the number of layers (e.g. 2 for a quick real-width model)");
  cmd->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  cmd->callback([a] {
    write_random_checkpoint(a->output, random_preset_config(a->preset), a->seed, a->layers);
    fmt::print("wrote {} ({}{})\n", a->output, a->preset, a->layers ? fmt::format(", {} layers", a->layers) : "");
  });
}

}  // namespace dlx::cli
