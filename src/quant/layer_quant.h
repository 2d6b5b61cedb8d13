// One decoder layer through one quantization method. Each method reads the layer's float weights from the
// model, collects what it needs by running the layer on the calibration batch (LayerRunner), quantizes the
// seven linears, puts running stand-ins for them into the model (running_linear.h) and runs the layer once more
// so that the next layer's input comes from the quantized layer.
#pragma once
#include <cstddef>
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "formats/quant_codes.h"
#include "model/model.h"
#include "quant/methods/rtn.h"

namespace dlx {

class LayerRunner;
class OutputError;

struct QuantSettings {
  std::string method;   // rtn | gptq | awq
  std::string format;   // gptq | awq (the checkpoint layout)
  int bits = 4;
  int64_t group_size = 128;  // -1: one group over all inputs
  bool sym = true;
  bool desc_act = false, static_groups = false, true_sequential = true;
  double damp = 0.01;
  int awq_grid = 20;
  int64_t awq_search_tokens = 4096;  // tokens (whole chunks) the AWQ block losses are computed on
  bool awq_fold_vo = true;
  DType norm_dtype = DType::F16;     // how folded RMSNorm weights will be stored (AWQ rounds to it)
  // AWQ scale exponents taken from an earlier run instead of searched (--awq-scales-from): by layer, the four
  // scaling pairs in AwqLayerScales order (norm_qkv, v_o, norm_gate_up, up_down), each a grid ratio in [0, 1) or
  // -1 for s = 1; nullopt: searched. Empty: every layer searched.
  std::vector<std::array<std::optional<double>, 4>> awq_ratios;

  // The grid for a linear with k inputs: group resolved, AWQ-style ranges for AWQ (with or without the
  // algorithm), GPTQ v1 zeros >= 1 for the GPTQ layout.
  QuantScheme scheme(int64_t k) const;
  std::string kind() const { return format == "awq" ? "awq_w4a16" : bits == 4 ? "gptq_w4a16" : "gptq_w8a16"; }
};

struct QuantizedLinear {
  std::string prefix;
  QuantCodes codes;
  Tensor bias;                    // F32 host [n] (values as written, fp16-rounded), or undefined
  std::vector<float> input_mul;   // running model only (AWQ's 1/s for norm-fed linears); empty = none
  double error = 0, error_rtn = 0;  // relative output error on the calibration inputs (-1: no calibration)
};

struct LayerResult {
  std::array<QuantizedLinear, 7> linears;  // by LinearRole
  std::vector<float> attn_norm, ffn_norm;  // AWQ: the folded norm weights as stored; empty = unchanged
  nlohmann::json notes = nlohmann::json::object();  // method details for the metadata (AWQ ratios, GPTQ damp)
};

// runner is null when there is no calibration (RTN only).
LayerResult quantize_layer_rtn(Model& model, int64_t layer, LayerRunner* runner, const QuantSettings& s);
LayerResult quantize_layer_gptq(Model& model, int64_t layer, LayerRunner& runner, const QuantSettings& s);
LayerResult quantize_layer_awq(Model& model, int64_t layer, LayerRunner& runner, const QuantSettings& s);

// Shared by the methods.
namespace layer_quant {
Tensor float_weight(const Model& m, int64_t layer, LinearRole r);  // F32 [out, in]
Tensor float_bias(const Model& m, int64_t layer, LinearRole r);    // F32 [out] or undefined
std::vector<float> norm_weight(const Model& m, int64_t layer, bool ffn);
std::string linear_prefix(const Model& m, int64_t layer, LinearRole r);
Tensor round_bias_f16(const Tensor& b);                             // the bias as the checkpoint stores it
// RTN's relative output error of a weight, measured where err's H is: wb F32 [n, k] in err's backend memory (the
// host tensor on the CPU), D = Q(w) - w from Backend::fake_quant (bit for bit codes_to_dense(rtn_quantize(w)) - w),
// so neither the dense RTN weight nor D is built on the host or uploaded. den: err's norm of wb (sq_of(wb)), or
// < 0 to compute it.
double rtn_error_on_backend(const OutputError& err, const Tensor& wb, const QuantScheme& sc, double den = -1);
// Puts the running stand-in for q into the model.
void install(Model& m, int64_t layer, LinearRole r, const QuantizedLinear& q, const QuantSettings& s);
// Which calibration input a role reads: 0 attention norm output, 1 attention output, 2 MLP norm output,
// 3 MLP activation.
inline int input_of(LinearRole r) {
  switch (r) {
    case LinearRole::Q: case LinearRole::K: case LinearRole::V: return 0;
    case LinearRole::O: return 1;
    case LinearRole::Gate: case LinearRole::Up: return 2;
    case LinearRole::Down: return 3;
  }
  return 0;
}
}  // namespace layer_quant

}  // namespace dlx
