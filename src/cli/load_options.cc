// The model-loading flags shared by the commands that load a checkpoint.
#include "cli/commands.h"
#include "core/error.h"
#include "model/model.h"

namespace dlx::cli {

namespace {

// The original Diffulex's activation-dtype settings: diffulex multiplies with 16-bit activations only.
void check_act_dtype(const char* flag, const std::string& v) {
  check(v == "bf16", "{} {}: not supported; diffulex runs every linear with 16-bit activations (bf16 and W4A16 "
        "weights), so bf16 is the only value", flag, v);
}

void check_parallel_size(const char* flag, int64_t n) {
  check(n == 1, "{} {}: diffulex runs a model in one process on one device (no tensor or data parallelism yet); "
        "use 1", flag, n);
}

}  // namespace

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
  cmd.add_flag("--strict", lo.strict, "Refuse quantized tensors that match no layer (default: a warning)");
  cmd.add_option_function<std::string>(
      "--linear-attn-act-dtype", [](const std::string& v) { check_act_dtype("--linear-attn-act-dtype", v); },
      "Attention linears' activation dtype (the original Diffulex's setting): bf16 only");
  cmd.add_option_function<std::string>(
      "--linear-mlp-act-dtype", [](const std::string& v) { check_act_dtype("--linear-mlp-act-dtype", v); },
      "MLP linears' activation dtype: bf16 only");
  cmd.add_option_function<int64_t>(
      "--tensor-parallel-size", [](int64_t n) { check_parallel_size("--tensor-parallel-size", n); },
      "Tensor parallelism (the original Diffulex's setting): 1 only");
  cmd.add_option_function<int64_t>(
      "--data-parallel-size", [](int64_t n) { check_parallel_size("--data-parallel-size", n); },
      "Data parallelism (the original Diffulex's setting): 1 only");
  cmd.add_flag("--embed-on-host", lo.embed_on_host,
               "Keep the token-embedding table in host memory (less GPU memory; rows are copied up each pass)");
}

}  // namespace dlx::cli
