// diffulex eval: masked-token NLL / accuracy of a checkpoint on held-out text at fixed mask ratios and fixed
// masks (src/eval/masked_eval.h; the definition of testdata/kjv/eval_reference.json).
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "eval/masked_eval.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace dlx::cli {

namespace {

std::vector<double> parse_ratios(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      out.push_back(std::stod(item, &used));
      check(used == item.size(), "");
    } catch (...) {
      fail("--ratios: '{}' is not a number (expected e.g. 0.15,0.5,0.9)", item);
    }
  }
  check(!out.empty(), "--ratios is empty");
  return out;
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Masked-token NLL and accuracy on held-out text at fixed mask ratios");
  struct Args {
    std::string model, text = "testdata/kjv/heldout.txt", ratios = "0.15,0.5,0.9";
    LoadOptions lo;
    uint64_t seed = 1234;
    int64_t window = 128, draws = 1;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model,--model-path", a->model, "Checkpoint directory (with its tokenizer)")->required();
  cmd->add_option("--text", a->text, "Held-out text file")->capture_default_str();
  cmd->add_option("--ratios", a->ratios, "Comma-separated mask ratios")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Mask seed")->capture_default_str();
  cmd->add_option("--window", a->window, "Tokens per window")->capture_default_str();
  cmd->add_option("--draws", a->draws, "Mask draws pooled per ratio (seeds seed .. seed+draws-1)")
      ->capture_default_str();
  add_load_options(*cmd, a->lo);
  cmd->add_flag("--json", a->json, "Print the result as JSON");
  cmd->callback([a] {
    MaskedEvalOptions opt;
    opt.ratios = parse_ratios(a->ratios);
    opt.seed = a->seed;
    opt.window = a->window;
    opt.draws = a->draws;
    std::ifstream f(a->text, std::ios::binary);
    check(bool(f), "{}: cannot open the evaluation text (pass --text FILE)", a->text);
    std::stringstream ss;
    ss << f.rdbuf();
    Tokenizer tok = Tokenizer::load(a->model);
    std::vector<int32_t> ids = tok.encode(ss.str());
    auto model = Model::load(a->model, a->lo);
    MaskedEvalResult r = masked_token_eval(*model, ids, opt);
    if (a->json) {
      nlohmann::json j;
      j["model"] = a->model;
      j["text"] = a->text;
      j["window"] = r.window;
      j["seed"] = r.seed;
      j["draws"] = r.draws;
      j["windows"] = r.windows;
      j["tokens"] = r.tokens;
      for (const auto& x : r.ratios)
        j["ratios"][fmt::format("{}", x.ratio)] = {
            {"masked_tokens", x.masked_tokens}, {"nll", x.nll}, {"accuracy", x.accuracy}, {"ppl", x.ppl()}};
      fmt::print("{}\n", j.dump(2));
      return;
    }
    fmt::print("model: {}\ntext:  {} ({} tokens, {} windows of {}, seed {}, {} mask draw{})\n", a->model, a->text,
               r.tokens, r.windows, r.window, r.seed, r.draws, r.draws == 1 ? "" : "s");
    fmt::print("{:>10} {:>14} {:>10} {:>10} {:>10}\n", "mask ratio", "masked tokens", "NLL", "ppl", "accuracy");
    for (const auto& x : r.ratios)
      fmt::print("{:>10} {:>14} {:>10.4f} {:>10.2f} {:>9.2f}%\n", x.ratio, x.masked_tokens, x.nll, x.ppl(),
                 100.0 * x.accuracy);
  });
}

}  // namespace dlx::cli
