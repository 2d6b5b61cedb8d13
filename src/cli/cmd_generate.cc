// diffulex generate: text from a prompt with the architecture's diffusion sampler. A live progress line on a
// terminal (stderr), the text alone on stdout, or one JSON object with timings under --json.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "engine/generate.h"

namespace dlx::cli {

namespace {

// One prompt per line; a line that parses as a JSON object takes its "prompt" field. Blank lines are skipped.
std::vector<std::string> read_prompts(const std::string& path) {
  std::ifstream in(path);
  check(bool(in), "{}: cannot open", path);
  std::vector<std::string> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (line[line.find_first_not_of(" \t")] == '{') {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      check(!j.is_discarded() && j.contains("prompt") && j["prompt"].is_string(),
            "{}:{}: a JSON line needs a string field \"prompt\"", path, n);
      out.push_back(j["prompt"].get<std::string>());
    } else {
      out.push_back(line);
    }
  }
  check(!out.empty(), "{}: no prompts", path);
  return out;
}

void print_result(const GenerationResult& r, const GenerationOptions& opts, Model& model, double load_s, bool json) {
  if (!json) {
    fmt::print("{}\n", r.text);
    return;
  }
  nlohmann::json j = {{"text", r.text},
                      {"prompt_tokens", r.prompt_ids.size()},
                      {"new_tokens", r.new_ids.size()},
                      {"ids", r.new_ids},
                      {"steps", r.steps_run},
                      {"device", model.backend().name()},
                      {"timings", {{"load_s", load_s}, {"generate_s", r.seconds},
                                   {"tokens_per_s", r.seconds > 0 ? double(opts.max_new_tokens) / r.seconds : 0.0}}}};
  fmt::print("{}\n", j.dump());
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt by masked diffusion (Dream or LLaDA sampler)");
  struct Args {
    std::string model, prompt, prompts_file, tokenizer;
    bool chat = false, json = false;
    LoadOptions lo;
    int threads = 0;
    GenerationOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* o = &a->o;
  cmd->add_option("--model", a->model, "Checkpoint directory (with tokenizer.json)")->required();
  auto* prompt_opt = cmd->add_option("--prompt", a->prompt, "Prompt text");
  cmd->add_option("--prompts-file", a->prompts_file,
                  "Many prompts, batched: one per line, or JSON lines with a \"prompt\" field")
      ->excludes(prompt_opt);
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json or its directory (default: the model directory)");
  cmd->add_flag("--chat", a->chat, "Format the prompt with the tokenizer's chat template (one user turn)");
  cmd->add_option("--max-new-tokens,--gen-length", o->max_new_tokens, "Tokens to generate (default: generation_config.json, else 64)");
  cmd->add_option("--steps", o->steps, "Diffusion steps (default: one per new token)");
  cmd->add_option("--block-length", o->block_length, "Semi-autoregressive block length (0: one block)");
  cmd->add_option("--alg", o->alg, "Dream: origin | maskgit_plus | topk_margin | entropy");
  cmd->add_option("--alg-temp", o->alg_temp, "Dream: sample positions by softmax(confidence / alg_temp)");
  cmd->add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)");
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling (1: off)");
  cmd->add_option("--top-k", o->top_k, "Top-k sampling (0: off)");
  cmd->add_option("--remasking", o->remasking, "LLaDA: low_confidence | random");
  cmd->add_option("--cfg-scale", o->cfg_scale, "LLaDA: classifier-free guidance scale (0: off)");
  cmd->add_option("--threshold", o->threshold, "Parallel decoding: reveal every position with confidence > threshold");
  cmd->add_option("--tokens-per-step", o->tokens_per_step, "Reveal this many tokens per step");
  cmd->add_option("--seed", o->seed, "Random seed");
  cmd->add_option("--cache", o->cache, "Block KV cache: none | prefix | dual (approximate; see docs/SAMPLERS.md)");
  cmd->add_option("--threads", a->threads, "CPU threads (default: all cores)");
  add_load_options(*cmd, a->lo);
  cmd->add_flag("--json", a->json, "Print one JSON object with the text, ids and timings");
  // Options left unset take the checkpoint's generation_config.json values.
  cmd->callback([a, cmd] {
    GenerationOptions opts = generation_defaults(a->model);
    auto take = [&](const char* name, auto& dst, const auto& src) {
      if (cmd->count(name) > 0) dst = src;
    };
    take("--max-new-tokens", opts.max_new_tokens, a->o.max_new_tokens);
    take("--steps", opts.steps, a->o.steps);
    take("--block-length", opts.block_length, a->o.block_length);
    take("--alg", opts.alg, a->o.alg);
    take("--alg-temp", opts.alg_temp, a->o.alg_temp);
    take("--temperature", opts.temperature, a->o.temperature);
    take("--top-p", opts.top_p, a->o.top_p);
    take("--top-k", opts.top_k, a->o.top_k);
    take("--remasking", opts.remasking, a->o.remasking);
    take("--cfg-scale", opts.cfg_scale, a->o.cfg_scale);
    take("--threshold", opts.threshold, a->o.threshold);
    take("--tokens-per-step", opts.tokens_per_step, a->o.tokens_per_step);
    take("--seed", opts.seed, a->o.seed);
    take("--cache", opts.cache, a->o.cache);
    if (a->threads > 0) set_num_threads(a->threads);

    auto t0 = std::chrono::steady_clock::now();
    auto model = Model::load(a->model, a->lo);
    Tokenizer tok = Tokenizer::load(a->tokenizer.empty() ? a->model : a->tokenizer);
    double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<std::string> texts = a->prompts_file.empty() ? std::vector<std::string>{a->prompt}
                                                             : read_prompts(a->prompts_file);
    check(!a->prompts_file.empty() || cmd->count("--prompt") > 0, "give --prompt or --prompts-file");
    std::vector<std::vector<int64_t>> prompts;
    for (const auto& t : texts) prompts.push_back(format_prompt(tok, t, a->chat));

    const bool tty = isatty(STDERR_FILENO) != 0;
    std::unique_ptr<Progress> bar;
    if (tty && log_level() != LogLevel::Quiet) bar = std::make_unique<Progress>("generate", 1);
    auto start = std::chrono::steady_clock::now();
    StepCallback on_step = [&](int step, int total, int64_t revealed) {
      if (!bar) return;
      double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      bar->set_total(total);
      bar->update(step + 1, fmt::format("{} tokens, {:.1f} tok/s", revealed, el > 0 ? double(revealed) / el : 0.0));
    };
    std::vector<GenerationResult> results = generate_batch(*model, tok, prompts, opts, on_step);
    bar.reset();
    for (const GenerationResult& r : results) print_result(r, opts, *model, load_s, a->json);
    const GenerationResult& r = results[0];
    log_info("{} prompts, {} new tokens each in {} steps, {:.2f}s ({:.1f} tokens/s) on {}", results.size(),
             opts.max_new_tokens, r.steps_run, r.seconds,
             double(opts.max_new_tokens) * double(results.size()) / r.seconds, model->backend().name());
  });
}

}  // namespace dlx::cli
