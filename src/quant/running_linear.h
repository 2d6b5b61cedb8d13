// The stand-in the quantizer puts into the model for a linear it has just quantized, so that the layers after
// it see quantized outputs (sequential quantization): the engine's own packed low-bit kernel on the codes
// (kernels/packed_weight.h, the same path a loaded checkpoint takes), with an optional per-input-channel
// multiplier in front. AWQ needs the multiplier: the written checkpoint divides an RMSNorm weight by s, but the
// model in memory keeps its norms, so the layers fed by that norm multiply their input by 1/s themselves.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "formats/linear.h"
#include "formats/quant_codes.h"

namespace dlx {

class TensorStore;

// bias: F32 host [n] or undefined. input_mul: empty, or one factor per input column.
std::unique_ptr<Linear> make_running_linear(Backend& be, const TensorStore& store, LinearSpec spec,
                                            const QuantCodes& codes, Tensor bias, std::vector<float> input_mul,
                                            const std::string& kind);

}  // namespace dlx
