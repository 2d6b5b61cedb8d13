// The Linear every quantized kind builds: a PackedWeight (kernels/packed_weight.h) run by the backend's
// matmul_packed, or, with LoadContext::dequant_cache, a dense F32 copy of the dequantized weight run by the
// backend's dense matmul (the seed's behaviour, kept as an option: about 7x the memory of the packed weight).
#pragma once
#include <memory>

#include "kernels/linear.h"
#include "kernels/packed_weight.h"

namespace dlx {

// `info` gives kind, bits, group_size and act_order as the checkpoint describes them; has_bias and bytes are
// filled in here. `bias` may be undefined.
std::unique_ptr<Linear> make_packed_linear(const LoadContext& ctx, LinearSpec spec, PackedWeight weight, Tensor bias,
                                           LinearInfo info);

}  // namespace dlx
