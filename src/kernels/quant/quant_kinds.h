// The quantized rows of the linear-kinds table (kernels/linear.h). Each row recognises its tensors, validates
// them against the layer's shape and the quantization config, and converts them once into a PackedWeight.
#pragma once
#include "kernels/linear.h"

namespace dlx {

LinearKind gptq_w4a16_kind();   // GPTQ int32 layout, 4 bits (FORMATS.md §4)
LinearKind gptq_w8a16_kind();   // GPTQ int32 layout, 8 bits
LinearKind awq_w4a16_kind();    // AutoAWQ gemm layout (§5)
LinearKind diffulex_int8_gptq_kind();  // the seed's int8 layout (§6) as its GPTQ script wrote it (with g_idx)
LinearKind diffulex_int8_awq_kind();   // the same layout as its AWQ script wrote it (no g_idx)

}  // namespace dlx
