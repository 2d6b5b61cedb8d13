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
#include "engine/batch_scheduler.h"
#include "engine/generate.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

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

// "1073741824", "512M", "4G", "4GiB", "auto" (or empty): bytes (0 for auto).
size_t parse_bytes(const std::string& text, const char* flag) {
  if (text.empty() || text == "auto") return 0;
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    fail("{}: '{}' is not a size (e.g. 2G, 512M, 1000000, auto)", flag, text);
  }
  std::string unit = text.substr(used);
  double mul = 1;
  if (unit == "K" || unit == "KiB" || unit == "k") mul = 1024.0;
  else if (unit == "M" || unit == "MiB") mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") mul = 1024.0 * 1024 * 1024;
  else check(unit.empty(), "{}: unknown unit in '{}' (K, M, G)", flag, text);
  check(v > 0, "{}: '{}' must be positive", flag, text);
  return size_t(v * mul);
}

// Continuous batching (--max-batch): one JSON line per request as it finishes (completion order) or all at the
// end in input order.
void run_continuous(Model& model, const Tokenizer& tok, const std::vector<std::vector<int64_t>>& prompts,
                    const GenerationOptions& opts, int64_t max_batch, const std::string& budget_text,
                    const std::string& order, double load_s) {
  check(order == "completion" || order == "input", "--order must be completion or input (got '{}')", order);
  SchedulerOptions so;
  so.max_batch = max_batch;
  so.kv_budget_bytes = parse_bytes(budget_text, "--kv-budget");
#ifdef DIFFULEX_HAVE_CUDA
  if (so.kv_budget_bytes == 0 && opts.cache != "none" && model.backend().device() == Device::CUDA) {
    // auto: 70% of the device memory still free after loading the weights (the rest for activations).
    const CudaMemoryStats st = cuda_memory_stats(model.backend());
    so.kv_budget_bytes = size_t(double(st.device_total_bytes - st.device_used_bytes) * 0.7);
  }
#endif
  auto line = [&](size_t i, const GenerationResult& r) {
    nlohmann::json j = {{"index", i},          {"text", r.text},        {"prompt_tokens", r.prompt_ids.size()},
                        {"new_tokens", r.new_ids.size()}, {"ids", r.new_ids}, {"steps", r.steps_run},
                        {"generate_s", r.seconds}};
    fmt::print("{}\n", j.dump());
    std::fflush(stdout);
  };
  auto t0 = std::chrono::steady_clock::now();
  int64_t forwards = 0;
  std::vector<GenerationResult> results = generate_continuous(
      model, tok, prompts, opts, so, order == "completion" ? line : std::function<void(size_t, const GenerationResult&)>(),
      &forwards);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (order == "input")
    for (size_t i = 0; i < results.size(); ++i) line(i, results[i]);
  log_info("{} requests, up to {} at once (KV budget {}), {} batched forwards, {:.2f}s ({:.1f} new tokens/s) on {}; "
           "load {:.2f}s",
           results.size(), max_batch, so.kv_budget_bytes ? fmt::format("{} bytes", so.kv_budget_bytes) : "unlimited",
           forwards, secs, double(opts.max_new_tokens) * double(results.size()) / secs, model.backend().name(), load_s);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt by masked diffusion (Dream or LLaDA sampler)");
  struct Args {
    std::string model, prompt, prompts_file, tokenizer, kv_budget = "auto", order = "completion";
    int64_t max_batch = 0;
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
  cmd->add_option("--kv-dtype", o->kv_dtype, "KV cache storage: bf16 (activation dtype) | fp8 (e4m3, per-head scales)");
  cmd->add_option("--max-batch", a->max_batch,
                  "Continuous batching of --prompts-file: up to N requests at once, admitted as others finish; "
                  "one JSON line per request (docs/BATCHING.md)");
  cmd->add_option("--kv-budget", a->kv_budget,
                  "Continuous batching: KV-cache bytes of the running requests together (e.g. 8G; auto: 70% of free "
                  "GPU memory, unlimited on the CPU)");
  cmd->add_option("--order", a->order, "Continuous batching output: completion | input");
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
    take("--kv-dtype", opts.kv_dtype, a->o.kv_dtype);
    check(a->max_batch >= 0, "--max-batch must be positive (got {})", a->max_batch);
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

    if (a->max_batch > 0) {
      run_continuous(*model, tok, prompts, opts, a->max_batch, a->kv_budget, a->order, load_s);
      return;
    }
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
