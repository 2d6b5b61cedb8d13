// The model-loading flags shared by the commands that load a checkpoint.
#include "cli/commands.h"
#include "model/model.h"

namespace dlx::cli {

void add_load_options(CLI::App& cmd, LoadOptions& lo) {
  cmd.add_option("--device", lo.device, "cpu | cuda")->capture_default_str();
  cmd.add_option("--linear-attn-weight-dtype", lo.attn_weight_family,
                 "Force the attention linears' kind: bf16 | gptq | awq (error when the checkpoint disagrees)");
  cmd.add_option("--linear-mlp-weight-dtype", lo.mlp_weight_family, "Force the MLP linears' kind: bf16 | gptq | awq");
  cmd.add_flag("--dequant-cache", lo.dequant_cache, "Keep dequantized dense copies of quantized weights");
  cmd.add_option("--awq-order", lo.awq_order,
                 "Nibble order of AWQ tensors: autoawq (AutoAWQ gemm) | plain (the later Diffulex export)")
      ->check(CLI::IsMember({"autoawq", "plain"}))
      ->capture_default_str();
  cmd.add_flag("--embed-on-host", lo.embed_on_host,
               "Keep the token-embedding table in host memory (less GPU memory; rows are copied up each pass)");
}

}  // namespace dlx::cli
