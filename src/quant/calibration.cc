#include "quant/calibration.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "eval/masked_eval.h"
#include "io/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace dlx {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  check(bool(f), "{}: cannot open calibration text", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void apply_mask(Calibration& cal, const CalibrationOptions& opt, const ModelConfig& cfg) {
  cal.mask = opt.mask;
  if (opt.mask == "none") return;
  double fixed = -1;
  if (opt.mask != "random") {
    try {
      size_t used = 0;
      fixed = std::stod(opt.mask, &used);
      check(used == opt.mask.size(), "");
    } catch (...) {
      fail("calibration mask must be random, none or a ratio in (0, 1) (got '{}')", opt.mask);
    }
    check(fixed > 0 && fixed < 1, "calibration mask ratio {} is outside (0, 1)", fixed);
  }
  if (cfg.mask_token_id < 0) {
    check(fixed < 0, "calibration mask {}: the model has no mask_token_id in config.json", opt.mask);
    log_warn("calibration: the model has no mask_token_id; calibrating on unmasked text");
    cal.mask = "none";
    return;
  }
  const int64_t B = cal.ids.dim(0), L = cal.ids.dim(1);
  int64_t* p = cal.ids.data<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const double t = fixed > 0 ? fixed : (double(b) + 0.5) / double(B);
    for (int64_t j = 1; j < L; ++j)
      if (mask_uniform(opt.seed, b, j) < t) {
        p[b * L + j] = cfg.mask_token_id;
        ++cal.masked;
      }
  }
}

}  // namespace

Calibration load_calibration(const CalibrationOptions& opt, const std::string& model_dir, const ModelConfig& cfg) {
  check(opt.text_path.empty() != opt.ids_path.empty(), "calibration: give exactly one of a text file and an ids file");
  check(opt.samples > 0 && opt.seq_len > 1, "calibration: samples and sequence length must be positive (got {} and {})",
        opt.samples, opt.seq_len);
  int64_t L = opt.seq_len;
  if (cfg.max_position_embeddings > 0 && L > cfg.max_position_embeddings) {
    log_warn("calibration: sequence length {} exceeds the model's {} positions; using {}", L,
             cfg.max_position_embeddings, cfg.max_position_embeddings);
    L = cfg.max_position_embeddings;
  }
  Calibration cal;
  if (!opt.text_path.empty()) {
    cal.source = "text:" + opt.text_path;
    Tokenizer tok = Tokenizer::load(model_dir);
    std::vector<int32_t> ids = tok.encode(read_text(opt.text_path));
    cal.available = int64_t(ids.size());
    check(cal.available >= 2, "{}: the calibration text has {} tokens", opt.text_path, cal.available);
    L = std::min(L, cal.available);
    const int64_t B = std::min(opt.samples, cal.available / L);
    if (B < opt.samples)
      log_warn("calibration: {} has {} tokens: {} windows of {} instead of {}", opt.text_path, cal.available, B, L,
               opt.samples);
    // Windows spread evenly over the whole text (a long corpus is sampled from end to end, not just its start).
    const int64_t avail = cal.available / L;
    cal.ids = Tensor::zeros(DType::I64, {B, L});
    for (int64_t b = 0; b < B; ++b) {
      const int64_t start = (b * avail / B) * L;
      for (int64_t j = 0; j < L; ++j) cal.ids.data<int64_t>()[b * L + j] = ids[size_t(start + j)];
    }
  } else {
    cal.source = "ids:" + opt.ids_path;
    SafetensorsFile f(opt.ids_path);
    check(f.has("input_ids"), "{}: no tensor 'input_ids' (expected I64 [batch, length])", opt.ids_path);
    Tensor t = f.get("input_ids");
    check(t.dtype() == DType::I64 && t.rank() == 2 && t.dim(0) > 0 && t.dim(1) > 1,
          "{}: tensor 'input_ids' is {} {}, expected I64 [batch, length]", opt.ids_path, dtype_name(t.dtype()),
          shape_str(t.shape()));
    cal.available = t.numel();
    const int64_t B = std::min(opt.samples, t.dim(0));
    L = std::min(L, t.dim(1));
    cal.ids = Tensor::zeros(DType::I64, {B, L});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < L; ++j) {
        int64_t id = t.data<int64_t>()[b * t.dim(1) + j];
        check(id >= 0 && id < cfg.vocab_size, "{}: input_ids[{}][{}] = {} is outside the vocabulary [0, {})",
              opt.ids_path, b, j, id, cfg.vocab_size);
        cal.ids.data<int64_t>()[b * L + j] = id;
      }
  }
  apply_mask(cal, opt, cfg);
  return cal;
}

}  // namespace dlx
