// diffulex: command-line entry point. Every error the user can cause ends as one line on stderr and a
// non-zero exit status.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"

int main(int argc, char** argv) {
  CLI::App app{"diffulex: inference engine for masked-diffusion language models (Dream, LLaDA), bf16 and W4A16"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "diffulex 0.1.0");
  bool verbose = false, quiet = false;
  app.add_flag("-v,--verbose", verbose, "Print progress and details on stderr");
  app.add_flag("-q,--quiet", quiet, "Print only errors");
  app.parse_complete_callback([&] {
    dlx::set_log_level(quiet ? dlx::LogLevel::Quiet : verbose ? dlx::LogLevel::Info : dlx::LogLevel::Warn);
  });
  dlx::cli::add_inspect_command(app);
  dlx::cli::add_forward_command(app);
  dlx::cli::add_generate_command(app);
  dlx::cli::add_random_model_command(app);
  dlx::cli::add_tokenize_command(app);
  dlx::cli::add_bench_command(app);
  dlx::cli::add_quantize_command(app);
  dlx::cli::add_eval_command(app);
  dlx::cli::add_serve_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const dlx::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
