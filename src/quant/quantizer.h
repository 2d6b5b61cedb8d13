// `diffulex quantize`: the layer-by-layer driver. Loads a dense checkpoint, embeds the calibration batch, then
// for each decoder layer runs the chosen method (layer_quant.h), which replaces the layer's linears in the model
// by their quantized versions, so the next layer is calibrated on quantized outputs (sequential quantization).
// At the end the checkpoint writer produces a standard GPTQ or AutoAWQ-gemm HF directory (checkpoint_writer.h).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/arch.h"
#include "quant/calibration.h"

namespace dlx {

struct QuantizeOptions {
  std::string model_path, output_path;
  std::string format = "gptq";     // gptq | awq: the checkpoint layout
  std::string method;              // gptq | awq | rtn; "" = the format's own algorithm, rtn without calibration
  int bits = 4;
  int64_t group_size = 128;        // -1: one group over all inputs
  std::optional<bool> sym;         // default: symmetric for GPTQ, zero points for AWQ
  bool desc_act = false, static_groups = false, true_sequential = true;
  double damp = 0.01;
  CalibrationOptions calib;        // no text and no ids: RTN (only) without error statistics
  int awq_grid = 20;
  int64_t awq_search_tokens = 4096;
  bool awq_fold_vo = true;
  // An earlier AWQ run's quantization_metadata_awq.json: its scale exponents are used instead of searched (the same
  // scales on another device or calibration set; the clip search and the quantization still run).
  std::string awq_scales_from;
  std::string device = "cpu";
  std::string dtype = "float16";   // unquantized tensors and config torch_dtype: float16 | bfloat16 | float32
  bool overwrite = false;
  int64_t max_shard_bytes = 5'000'000'000;
  std::function<bool()> cancelled;  // polled between layers and files
};

struct LinearReport {
  int64_t layer = 0;
  LinearRole role = LinearRole::Q;
  std::string name;
  double error = -1, error_rtn = -1;  // relative output error on the calibration inputs; -1 without calibration
};

struct QuantizeReport {
  std::string method, format, output;
  std::vector<LinearReport> linears;
  int64_t calib_sequences = 0, calib_tokens = 0;
  double seconds = 0, quantize_seconds = 0;
};

QuantizeReport quantize_model(const QuantizeOptions& opt);

// The scale exponents in an earlier AWQ run's metadata (quantization_metadata_awq.json, for --awq-scales-from): its
// `layer_notes`, every layer from 0 on once, each with the ratio ([0, 1), or -1 for s = 1) of the pairs this run
// scales, in AwqLayerScales' order (norm_qkv, v_o, norm_gate_up, up_down; v_o only with the v -> o fold, and then
// required). Throws Error naming `what` (the file) and the field.
std::vector<std::array<std::optional<double>, 4>> parse_awq_ratios(const nlohmann::json& j, const std::string& what,
                                                                   bool fold_vo);

// "model_quantized_{format}.safetensors": the file holding the quantized linears (the original Diffulex name).
std::string quantized_file_name(const std::string& format);

// One row per decoder layer: each linear's error, method / RTN, and the layer mean.
std::string format_error_table(const QuantizeReport& r);

}  // namespace dlx
