// diffulex generate: text from a prompt with the architecture's diffusion sampler: the text alone on stdout, or
// one JSON object with timings under --json. Progress goes to stderr, only when stdout and stderr are a terminal
// (or with --progress; never with -q): one prompt shows its canvas filling in (cli/canvas_view.h), batched runs
// a progress line over steps, continuous batching one over requests.
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/canvas_view.h"
#include "cli/commands.h"
#include "cli/strategies.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "engine/batch_scheduler.h"
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

// Continuous batching (--max-batch): one JSON line per request as it finishes (completion order) or all at the
// end in input order.
void run_continuous(Model& model, const Tokenizer& tok, const std::vector<std::vector<int64_t>>& prompts,
                    const GenerationOptions& opts, int64_t max_batch, const std::string& budget_text,
                    const std::string& order, double load_s, bool progress) {
  check(order == "completion" || order == "input", "--order must be completion or input (got '{}')", order);
  SchedulerOptions so;
  so.max_batch = max_batch;
  so.kv_budget_bytes = kv_budget_bytes(model, budget_text);
  std::unique_ptr<Progress> bar;
  if (progress) bar = std::make_unique<Progress>("generate", int64_t(prompts.size()), true);
  int64_t finished = 0;
  auto line = [&](size_t i, const GenerationResult& r) {
    nlohmann::json j = {{"index", i},          {"text", r.text},        {"prompt_tokens", r.prompt_ids.size()},
                        {"new_tokens", r.new_ids.size()}, {"ids", r.new_ids}, {"steps", r.steps_run},
                        {"generate_s", r.seconds}};
    if (bar) bar->clear();  // the JSON line goes where the progress line was
    fmt::print("{}\n", j.dump());
    std::fflush(stdout);
  };
  auto done = [&](size_t i, const GenerationResult& r) {
    if (order == "completion") line(i, r);
    ++finished;
    if (bar) bar->update(finished, "requests");
  };
  auto t0 = std::chrono::steady_clock::now();
  int64_t forwards = 0;
  std::vector<GenerationResult> results = generate_continuous(
      model, tok, prompts, opts, so, done, &forwards);
  bar.reset();
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
    std::string model, prompt, prompts_file, tokenizer, kv_budget = "auto", order = "completion", strategies;
    int64_t max_batch = 0;
    bool chat = false, json = false, progress = false;
    LoadOptions lo;
    int threads = 0;
    GenerationFlags gen;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model,--model-path", a->model, "Checkpoint directory (with tokenizer.json)")->required();
  auto* prompt_opt = cmd->add_option("--prompt", a->prompt, "Prompt text");
  cmd->add_option("--prompts-file", a->prompts_file,
                  "Many prompts, batched: one per line, or JSON lines with a \"prompt\" field")
      ->excludes(prompt_opt);
  cmd->add_option("--tokenizer", a->tokenizer, "tokenizer.json or its directory (default: the model directory)");
  cmd->add_flag("--chat", a->chat, "Format the prompt with the tokenizer's chat template (one user turn)");
  a->gen.add(*cmd);
  cmd->add_option("--max-batch", a->max_batch,
                  "Continuous batching of --prompts-file: up to N requests at once, admitted as others finish; "
                  "one JSON line per request (docs/BATCHING.md)");
  cmd->add_option("--kv-budget", a->kv_budget,
                  "Continuous batching: KV-cache bytes of the running requests together (e.g. 8G; auto: 70% of free "
                  "GPU memory, unlimited on the CPU)");
  cmd->add_option("--order", a->order, "Continuous batching output: completion | input");
  cmd->add_option("--threads", a->threads, "CPU threads (default: all cores)");
  cmd->add_option("--strategies", a->strategies,
                  "Run each named strategy in turn, one JSON line each (the original Diffulex's names, e.g. "
                  "gptq_w4a16_bf16kv,awq_w4a16_fp8kv; docs/FROM_DIFFULEX.md)");
  add_load_options(*cmd, a->lo);
  cmd->add_flag("--json", a->json, "Print one JSON object with the text, ids and timings");
  cmd->add_flag("--progress", a->progress,
                "Progress on stderr even when stdout or stderr is not a terminal (plain lines then; -q: none)");
  cmd->callback([a, cmd] {
    const GenerationOptions opts = a->gen.resolve(a->model);
    check(a->max_batch >= 0, "--max-batch must be positive (got {})", a->max_batch);
    if (a->threads > 0) set_num_threads(a->threads);

    check(!a->prompts_file.empty() || cmd->count("--prompt") > 0, "give --prompt or --prompts-file");
    std::vector<std::string> texts = a->prompts_file.empty() ? std::vector<std::string>{a->prompt}
                                                             : read_prompts(a->prompts_file);
    if (!a->strategies.empty()) {
      check(a->max_batch == 0, "--strategies runs one batch per strategy; leave out --max-batch");
      check(a->lo.attn_weight_family.empty() && a->lo.mlp_weight_family.empty(),
            "--strategies sets the weight dtypes; leave out --linear-attn-weight-dtype / --linear-mlp-weight-dtype");
      run_strategies(parse_strategies(a->strategies), a->model, a->tokenizer, a->lo, texts, a->chat, opts);
      return;
    }
    auto t0 = std::chrono::steady_clock::now();
    auto model = Model::load(a->model, a->lo);
    Tokenizer tok = Tokenizer::load(a->tokenizer.empty() ? a->model : a->tokenizer);
    double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<std::vector<int64_t>> prompts;
    // A text far longer than the context is refused before it is tokenized (no token is 1 KiB of text).
    const int64_t ctx = model->config().max_position_embeddings;
    for (const auto& t : texts)
      check(ctx <= 0 || t.size() <= size_t(ctx) * 1024,
            "the prompt is {} bytes of text, more than the model's context of {} tokens can hold", t.size(), ctx);
    for (const auto& t : texts) prompts.push_back(format_prompt(tok, t, a->chat));

    const bool terminal = isatty(STDOUT_FILENO) != 0 && isatty(STDERR_FILENO) != 0;
    const bool progress = log_level() != LogLevel::Quiet && (terminal || a->progress);
    if (a->max_batch > 0) {
      run_continuous(*model, tok, prompts, opts, a->max_batch, a->kv_budget, a->order, load_s, progress);
      return;
    }
    // One prompt on a terminal: the canvas filling in; else a progress line over the steps.
    std::unique_ptr<CanvasView> view;
    std::unique_ptr<Progress> bar;
    if (progress && prompts.size() == 1 && isatty(STDERR_FILENO))
      view = std::make_unique<CanvasView>(tok, int64_t(prompts[0].size()), model->config().mask_token_id,
                                          stop_token_ids(*model, tok));
    else if (progress)
      bar = std::make_unique<Progress>("generate", 1, true);
    auto start = std::chrono::steady_clock::now();
    StepCallback on_step = [&](int step, int total, int64_t revealed, const Tensor& canvas) {
      if (view) view->step(step, total, revealed, canvas);
      if (!bar) return;
      double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      bar->set_total(total);
      bar->update(step + 1, fmt::format("{} tokens, {:.1f} tok/s", revealed, el > 0 ? double(revealed) / el : 0.0));
    };
    std::vector<GenerationResult> results = generate_batch(*model, tok, prompts, opts, on_step);
    view.reset();
    bar.reset();
    for (const GenerationResult& r : results) print_result(r, opts, *model, load_s, a->json);
    const GenerationResult& r = results[0];
    log_info("{} prompts, {} new tokens each in {} steps, {:.2f}s ({:.1f} tokens/s) on {}", results.size(),
             opts.max_new_tokens, r.steps_run, r.seconds,
             double(opts.max_new_tokens) * double(results.size()) / r.seconds, model->backend().name());
  });
}

}  // namespace dlx::cli
