// Calibration inputs for the quantizers: token ids [B, L] from a text file (the model's own tokenizer on the
// whole file as one stream, cut into windows of L tokens; B of them spread evenly from the start of the text to
// its end, all of them when the text holds B or fewer) or from a safetensors file holding `input_ids`
// I64 [B, L] (models without a tokenizer; the first B rows and L columns).
//
// Masked-diffusion models see mask tokens at inference, so by default part of every calibration window is
// masked as in training: window b of B gets ratio t_b = (b + 0.5) / B (evenly spread over (0, 1)) and position
// j >= 1 is replaced by the mask token iff u(seed, b, j) < t_b (u as in eval/masked_eval.h, seed 4321, so the
// masks are unrelated to the eval's). `mask` = "none" keeps the clean text; a number in (0, 1) masks every
// window at that ratio.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "model/config.h"

namespace dlx {

struct CalibrationOptions {
  std::string text_path;  // exactly one of text_path / ids_path
  std::string ids_path;
  int64_t samples = 128;
  int64_t seq_len = 512;
  std::string mask = "random";  // "random" | "none" | a ratio
  uint64_t seed = 4321;
};

struct Calibration {
  Tensor ids;              // I64 [B, L] (masked as requested)
  std::string source;      // "text:<path>" or "ids:<path>"
  int64_t available = 0;   // tokens in the text / ids given
  std::string mask;        // what was applied
  int64_t masked = 0;      // positions replaced by the mask token
};

Calibration load_calibration(const CalibrationOptions& opt, const std::string& model_dir, const ModelConfig& cfg);

}  // namespace dlx
