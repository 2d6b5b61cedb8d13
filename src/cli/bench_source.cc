#include "cli/bench_source.h"

#include "core/error.h"
#include "model/random_model.h"

namespace dlx::cli {

void add_bench_source_options(CLI::App& cmd, BenchSource& s) {
  cmd.add_option("--device", s.device, "cpu | cuda")->capture_default_str();
  cmd.add_option("--model,--model-path", s.model, "Checkpoint directory (instead of --random-config)");
  cmd.add_option("--random-config", s.preset,
                 "Random weights at a preset's shape: dream-7b | llada-8b | sdar-8b | fast-dllm-v2-7b | dream-tiny | llada-tiny | sdar-tiny");
  cmd.add_option("--layers", s.layers, "Override the preset's layer count");
  cmd.add_option("--quant", s.quant, "Random-config linears: none (bf16) | w4a16 (random packed 4-bit weights)")
      ->capture_default_str();
  cmd.add_option("--group-size", s.group_size, "--quant w4a16: group size (0 = one group per row)")
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

std::unique_ptr<Model> bench_model(const BenchSource& s, uint64_t seed) {
  if (!s.model.empty()) {
    LoadOptions lo;
    lo.device = s.device;
    lo.embed_on_host = s.embed_on_host;
    return Model::load(s.model, lo);
  }
  nlohmann::json cj = random_preset_config(s.preset);
  if (s.layers > 0) cj[cj.contains("n_layers") ? "n_layers" : "num_hidden_layers"] = s.layers;
  RandomModelOptions o;
  o.device = s.device;
  o.seed = seed;
  o.quant = s.quant;
  o.group_size = s.group_size;
  o.quant_head = s.quant_head;
  o.embed_on_host = s.embed_on_host;
  return Model::random(parse_model_config(cj, "random preset " + s.preset), o);
}

nlohmann::json weight_bytes_json(const WeightBytes& w) {
  return {{"packed_linears", w.packed_linears}, {"dense", w.dense}, {"embedding", w.embedding}, {"head", w.head},
          {"total", w.total()}, {"host_embedding", w.host_embedding}};
}

}  // namespace dlx::cli
