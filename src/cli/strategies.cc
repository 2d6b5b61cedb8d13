#include "cli/strategies.h"

#include <fmt/format.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "tokenizer/tokenizer.h"

namespace dlx::cli {

namespace {

// The original's strategy names that map onto what diffulex runs: checkpoints as stored (bf16, or GPTQ / AWQ
// W4A16) with 16-bit activations, and a bf16 or fp8 KV cache.
const std::vector<Strategy>& known_strategies() {
  static const std::vector<Strategy> v = {
      {"bf16_bf16kv", "bf16", KvDtype::BF16},       {"bf16_fp8kv", "bf16", KvDtype::FP8},
      {"gptq_w4a16_bf16kv", "gptq", KvDtype::BF16}, {"gptq_w4a16_fp8kv", "gptq", KvDtype::FP8},
      {"awq_w4a16_bf16kv", "awq", KvDtype::BF16},   {"awq_w4a16_fp8kv", "awq", KvDtype::FP8},
  };
  return v;
}

}  // namespace

std::vector<Strategy> parse_strategies(const std::string& list) {
  std::string names;
  for (const Strategy& s : known_strategies()) names += (names.empty() ? "" : ", ") + s.name;
  std::vector<Strategy> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    std::string name = list.substr(pos, end - pos);
    while (!name.empty() && name.front() == ' ') name.erase(name.begin());
    while (!name.empty() && name.back() == ' ') name.pop_back();
    pos = end + 1;
    if (name.empty()) continue;
    const Strategy* found = nullptr;
    for (const Strategy& s : known_strategies())
      if (s.name == name) found = &s;
    check(found != nullptr,
          "--strategies: '{}' is not supported; diffulex runs checkpoints as stored (bf16, or GPTQ / AWQ 4-bit "
          "weights with 16-bit activations) with a bf16 or fp8 KV cache: {}",
          name, names);
    out.push_back(*found);
  }
  check(!out.empty(), "--strategies: no strategy named (e.g. gptq_w4a16_bf16kv,awq_w4a16_fp8kv)");
  return out;
}

void run_strategies(const std::vector<Strategy>& strategies, const std::string& model_dir,
                    const std::string& tokenizer_dir, const LoadOptions& lo, const std::vector<std::string>& prompts,
                    bool chat, const GenerationOptions& opts) {
  using Clock = std::chrono::steady_clock;
  std::vector<std::string> failed;
  for (const Strategy& s : strategies) {
    nlohmann::json line = {{"strategy", s.name}};
    try {
      LoadOptions l = lo;
      l.attn_weight_family = l.mlp_weight_family = s.weight_family;
      GenerationOptions o = opts;
      o.kv_dtype = s.kv_dtype;
      if (o.kv_dtype == KvDtype::FP8 && o.cache == CacheMode::None) o.cache = CacheMode::Prefix;
      const auto t0 = Clock::now();
      auto model = Model::load(model_dir, l);
      Tokenizer tok = Tokenizer::load(tokenizer_dir.empty() ? model_dir : tokenizer_dir);
      const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
      std::vector<std::vector<int64_t>> ids;
      for (const std::string& p : prompts) ids.push_back(format_prompt(tok, p, chat));
      const auto t1 = Clock::now();
      std::vector<GenerationResult> results = generate_batch(*model, tok, ids, o);
      const double secs = std::chrono::duration<double>(Clock::now() - t1).count();
      std::vector<std::string> texts;
      int64_t tokens = 0;
      for (const GenerationResult& r : results) {
        texts.push_back(r.text);
        tokens += int64_t(r.new_ids.size());
      }
      line["texts"] = texts;
      line["new_tokens"] = tokens;
      line["generate_s"] = secs;
      line["tokens_per_s"] = secs > 0 ? double(tokens) / secs : 0.0;
      line["load_s"] = load_s;
      line["weights"] = s.weight_family;
      line["kv_dtype"] = to_string(o.kv_dtype);
      line["cache"] = to_string(o.cache);
    } catch (const Error& e) {
      line["error"] = e.what();
      failed.push_back(s.name);
    }
    fmt::print("{}\n", line.dump());
    std::fflush(stdout);
  }
  if (!failed.empty()) {
    std::string list;
    for (const std::string& f : failed) list += (list.empty() ? "" : ", ") + f;
    fail("{} of {} strategies failed: {} (the \"error\" field of each line says why)", failed.size(), strategies.size(),
         list);
  }
}

}  // namespace dlx::cli
