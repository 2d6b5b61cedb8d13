// The quantization settings of a checkpoint: `quantization_config` in config.json, else quantize_config.json
// (AutoGPTQ), else quant_config.json (older AutoAWQ), else nothing (dense, or a tensor-shape scan by the
// linear kinds, see formats/quant_checks.h).
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace dlx {

struct QuantConfig {
  std::string method;             // "gptq" | "awq"
  int bits = 4;
  int64_t group_size = 128;       // -1: one group over all input features
  bool sym = true;                // GPTQ
  bool desc_act = false;          // GPTQ act-order
  std::string checkpoint_format;  // GPTQ: "gptq" (v1, zeros stored minus one) | "gptq_v2"
  bool zero_point = true;         // AWQ
  std::string version;            // AWQ: "gemm"
  std::vector<std::string> modules_to_not_convert;
  std::string source;  // the file the settings came from, for error messages
};

// Returns null for a checkpoint without quantization settings. Unsupported methods or variants are rejected
// with a message naming the file, the field and what is supported.
std::unique_ptr<QuantConfig> load_quant_config(const std::string& model_dir);

}  // namespace dlx
