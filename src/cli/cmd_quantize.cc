// diffulex quantize: offline RTN / GPTQ / AWQ quantization of a bf16/fp16 checkpoint into a standard GPTQ or
// AutoAWQ-gemm Hugging Face directory (src/quant/quantizer.h). Ctrl-C stops at the next layer boundary and
// leaves nothing behind; a second Ctrl-C kills at once (the output is only ever renamed into place complete).
#include <fmt/format.h>

#include <atomic>
#include <csignal>

#include "cli/commands.h"
#include "core/byte_size.h"
#include "core/error.h"
#include "quant/checkpoint_writer.h"
#include "quant/quantizer.h"

namespace dlx::cli {

namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_signal(int sig) {
  g_interrupted.store(true);
  std::signal(sig, SIG_DFL);
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a bf16/fp16 checkpoint to 4/8-bit GPTQ or AWQ (RTN, GPTQ, AWQ)");
  struct Args {
    QuantizeOptions o;
    bool sym = false, asym = false, no_true_seq = false, no_vo = false;
    std::string max_shard = "5GB", quant_method, target_modules;
  };
  auto a = std::make_shared<Args>();
  QuantizeOptions& o = a->o;
  cmd->add_option("--model-path", o.model_path, "Source checkpoint directory (bf16/fp16)")->required();
  cmd->add_option("--output-path", o.output_path, "Output directory (must not exist or be empty)")->required();
  cmd->add_option("--quant-format", o.format, "Checkpoint layout: gptq (AutoGPTQ v1) or awq (AutoAWQ gemm)")
      ->required();
  cmd->add_option("--method", o.method,
                  "Algorithm: gptq, awq or rtn (default: the format's own with calibration data, else rtn)");
  cmd->add_option("--quant-method", a->quant_method,
                  "The original Diffulex's name: auto (the format's own algorithm, needs calibration data) or simple "
                  "(rtn)");
  cmd->add_option("--target-modules", a->target_modules, "Not supported: every linear of the decoder layers is quantized");
  cmd->add_option("--bits", o.bits, "Bits per weight (GPTQ 4 or 8, AWQ 4)")->capture_default_str();
  cmd->add_option("--group-size", o.group_size, "Inputs per quantization group, -1 for one group per row")
      ->capture_default_str();
  cmd->add_flag("--sym", a->sym, "Symmetric grid (zero point 2^(bits-1)); default for GPTQ");
  cmd->add_flag("--asym,--no-sym", a->asym, "Zero points per group; default for AWQ");
  cmd->add_flag("--desc-act", o.desc_act, "GPTQ act-order: columns by decreasing Hessian diagonal (writes g_idx)");
  cmd->add_flag("--static-groups", o.static_groups, "GPTQ: group parameters from the unquantized weights");
  cmd->add_flag("--no-true-sequential", a->no_true_seq, "GPTQ: all linears of a layer from the layer's float inputs");
  cmd->add_option("--damp,--damp-percent", o.damp, "GPTQ dampening, fraction of the mean Hessian diagonal")->capture_default_str();
  cmd->add_option("--calib-text,--calib-text-file", o.calib.text_path, "Calibration text, tokenized with the model's tokenizer");
  cmd->add_option("--calib-ids", o.calib.ids_path, "Calibration token ids: safetensors with input_ids I64 [B, L]");
  cmd->add_option("--calib-samples,--calib-num-samples", o.calib.samples, "Calibration sequences (at most)")->capture_default_str();
  cmd->add_option("--calib-seq-len", o.calib.seq_len, "Tokens per calibration sequence (at most)")
      ->capture_default_str();
  cmd->add_option("--calib-mask", o.calib.mask,
                  "Mask tokens in the calibration windows: random (ratios spread over (0,1), as in training), none, "
                  "or a ratio")
      ->capture_default_str();
  cmd->add_option("--awq-grid", o.awq_grid, "AWQ: grid points of the scale exponent")->capture_default_str();
  cmd->add_option("--awq-search-tokens", o.awq_search_tokens, "AWQ: calibration tokens the block losses use")
      ->capture_default_str();
  cmd->add_flag("--awq-no-vo-fold", a->no_vo, "AWQ: do not scale the v_proj -> o_proj pair");
  cmd->add_option("--awq-scales-from", o.awq_scales_from,
                  "AWQ: take the scale exponents from an earlier run's quantization_metadata_awq.json instead of "
                  "searching them (clip search and quantization still run)");
  cmd->add_option("--dtype", o.dtype, "Unquantized tensors: float16, bfloat16 or float32")->capture_default_str();
  cmd->add_option("--max-shard-size", a->max_shard, "Split model.safetensors above this size (e.g. 5GB, 500MB)")
      ->capture_default_str();
  cmd->add_option("--device", o.device, "Backend that runs the calibration forward: cpu or cuda")
      ->capture_default_str();
  cmd->add_flag("--overwrite", o.overwrite, "Replace an existing non-empty output directory");
  cmd->callback([a] {
    QuantizeOptions o = a->o;
    check(!(a->sym && a->asym), "--sym and --asym exclude each other");
    check(a->target_modules.empty(),
          "--target-modules {}: not supported; diffulex quantizes every linear of the decoder layers (the LM head "
          "stays dense)",
          a->target_modules);
    if (!a->quant_method.empty()) {
      check(a->quant_method == "auto" || a->quant_method == "simple",
            "--quant-method {}: must be auto (the format's own algorithm, with --calib-text) or simple (rtn)",
            a->quant_method);
      check(o.method.empty(), "give --method or --quant-method, not both");
      o.method = a->quant_method == "simple" ? "rtn" : o.format;
    }
    if (a->sym) o.sym = true;
    if (a->asym) o.sym = false;
    o.true_sequential = !a->no_true_seq;
    o.awq_fold_vo = !a->no_vo;
    o.max_shard_bytes = parse_byte_size(a->max_shard, "--max-shard-size");
    o.cancelled = [] { return g_interrupted.load(); };
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    QuantizeReport r = quantize_model(o);
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    fmt::print("{}", format_error_table(r));
    fmt::print("wrote {} ({} {}, {} linears) in {:.1f} s (layers {:.1f} s)\n", r.output, r.method, r.format,
               r.linears.size(), r.seconds, r.quantize_seconds);
    fmt::print("  quantized linears: {}/{} (also an overlay: copy it next to the source's config.json)\n",
               r.output, quantized_file_name(r.format));
  });
}

}  // namespace dlx::cli
