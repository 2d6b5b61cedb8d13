// The Linear every quantized kind builds: a PackedWeight (kernels/packed_weight.h) run by the backend's matmul_packed,
// or, with LoadContext::dequant_cache, a dense F32 copy of the dequantized weight run by the backend's dense matmul
// (the original Diffulex's behaviour, kept as an option: about 7x the memory of the packed weight).
#pragma once
#include <memory>
#include <vector>

#include "formats/linear.h"
#include "kernels/packed_weight.h"

namespace dlx {

// `info` gives kind, bits, group_size and act_order as the checkpoint describes them; has_bias and bytes are
// filled in here. `bias` may be undefined.
std::unique_ptr<Linear> make_packed_linear(const LoadContext& ctx, LinearSpec spec, PackedWeight weight, Tensor bias,
                                           LinearInfo info);

// Several packed layers over the same input as one, their output rows stacked in order: one low-bit GEMM of the
// summed width instead of several narrow ones (the CUDA W4A16 kernel fills the GPU badly at N = 512). Null, and
// nothing changed, unless every part is a packed layer with the same bits, input features, group size and
// act-order permutation, and all or none have a bias. On success each part is replaced by a copy that keeps its
// host weight (dequantize, inspect, the quantizer) and uploads only if it ever runs by itself.
std::unique_ptr<Linear> fuse_packed_linears(const std::vector<std::unique_ptr<Linear>*>& parts, Backend& be);

}  // namespace dlx
