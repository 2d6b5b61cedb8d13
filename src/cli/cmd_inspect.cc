// diffulex inspect: what a checkpoint is (architecture, sizes, dtypes, quantization) and, with
// --list-layers, every linear layer's name, shape, kind and memory.
#include <fmt/format.h>

#include <map>

#include "cli/commands.h"
#include "formats/quant_config.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace dlx::cli {

namespace {

std::string human_bytes(size_t b) {
  if (b >= (1ull << 30)) return fmt::format("{:.2f} GiB", double(b) / double(1ull << 30));
  if (b >= (1ull << 20)) return fmt::format("{:.2f} MiB", double(b) / double(1ull << 20));
  return fmt::format("{:.1f} KiB", double(b) / 1024.0);
}

void print_linear(const Linear& l) {
  LinearInfo i = l.info();
  std::string group = i.group_size == 0 ? "-" : i.group_size == l.in_features() ? "all" : std::to_string(i.group_size);
  fmt::print("  {:<48} [{:>6}, {:>6}]  {:<12} bits={:<2} group={:<4} act_order={:<3} bias={:<3} {}\n",
             l.spec().prefix, l.out_features(), l.in_features(), i.kind, i.bits, group, i.act_order ? "yes" : "no",
             i.has_bias ? "yes" : "no", human_bytes(i.bytes));
}

// Without quantization settings the linears' kinds say what the checkpoint holds (e.g. a Diffulex overlay or
// int8 file): "diffulex_int8_gptq x42 (from the tensors; no quantization settings file)", or "none".
std::string kinds_summary(const Model& m) {
  std::map<std::string, int> count;
  auto add = [&](const Linear& l) {
    if (l.info().group_size != 0) ++count[fmt::format("{} {}-bit group {}", l.info().kind, l.info().bits,
                                                       l.info().group_size)];
  };
  for (const auto& l : m.layers())
    for (const auto& lin : l.linear) add(*lin);
  add(m.lm_head());
  if (count.empty()) return "none";
  std::string out;
  for (const auto& [k, n] : count) out += fmt::format("{}{} x{}", out.empty() ? "" : ", ", k, n);
  return out + " (from the tensors; no quantization settings file)";
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Describe a checkpoint: architecture, sizes, dtype, quantization, layers");
  auto model = std::make_shared<std::string>();
  auto list = std::make_shared<bool>(false);
  auto lo = std::make_shared<LoadOptions>();
  cmd->add_option("--model,--model-path", *model, "Checkpoint directory (config.json + safetensors)")->required();
  cmd->add_flag("--list-layers", *list, "List every linear layer with its kind, shape and bytes");
  add_load_options(*cmd, *lo);
  cmd->callback([model, list, lo] {
    auto m = Model::load(*model, *lo);
    const ModelConfig& c = m->config();
    fmt::print("model:         {}\n", *model);
    fmt::print("architecture:  {} (model_type \"{}\")\n", arch_name(c.arch), c.model_type);
    fmt::print("layers:        {}\n", c.num_layers);
    fmt::print("hidden:        {}   intermediate: {}\n", c.hidden_size, c.intermediate_size);
    fmt::print("heads:         {} query, {} key/value, head dim {}\n", c.num_heads, c.num_kv_heads, c.head_dim);
    fmt::print("vocab:         {}   mask token: {}\n", c.vocab_size, c.mask_token_id);
    fmt::print("rope theta:    {}   rms eps: {}\n", c.rope_theta, c.rms_norm_eps);
    fmt::print("dtype:         {}\n", dtype_name(c.dtype));
    if (const QuantConfig* q = m->quant())
      fmt::print("quantization:  {} {}-bit, group {}{} ({})\n", q->method, q->bits, q->group_size,
                 q->method == "gptq" ? fmt::format(", sym={}, desc_act={}, format {}", q->sym, q->desc_act,
                                                   q->checkpoint_format)
                                     : fmt::format(", zero_point={}, version {}", q->zero_point, q->version),
                 q->source);
    else
      fmt::print("quantization:  {}\n", kinds_summary(*m));
    if (!m->store().overlay().empty())
      fmt::print("overlay:       {} (read over the checkpoint's other weights)\n", m->store().overlay());
    fmt::print("weights:       {} in memory\n", human_bytes(m->weight_bytes()));
    if (*list) {
      fmt::print("linear layers:\n");
      for (const auto& l : m->layers())
        for (const auto& lin : l.linear) print_linear(*lin);
      print_linear(m->lm_head());
    }
  });
}

}  // namespace dlx::cli
