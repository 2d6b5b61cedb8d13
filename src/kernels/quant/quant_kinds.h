// The quantized rows of the linear-kinds table (kernels/linear.h). Each row recognises its tensors, validates
// them against the layer's shape and the quantization config, and converts them once into a PackedWeight.
#pragma once
#include "kernels/linear.h"

namespace dlx {

LinearKind gptq_w4a16_kind();   // GPTQ int32 layout, 4 bits (FORMATS.md §4)
LinearKind gptq_w8a16_kind();   // GPTQ int32 layout, 8 bits
LinearKind awq_w4a16_kind();    // AutoAWQ gemm layout (§5)
// The seed's int8 layout (§6) as its GPTQ / AWQ script wrote it: from model_quantized_gptq / _awq.safetensors by
// the file name, elsewhere by g_idx (present: GPTQ).
LinearKind diffulex_int8_gptq_kind();
LinearKind diffulex_int8_awq_kind();

}  // namespace dlx
