// The quantized rows of the linear-kinds table (formats/linear.h). Each row recognises its tensors, validates
// them against the layer's shape and the quantization config, and converts them once into a PackedWeight.
#pragma once
#include "formats/linear.h"

namespace dlx {

LinearKind gptq_w4a16_kind();   // GPTQ int32 layout, 4 bits (formats/gptq.h)
LinearKind gptq_w8a16_kind();   // GPTQ int32 layout, 8 bits
LinearKind awq_w4a16_kind();    // AutoAWQ gemm layout (formats/awq.h)
// The Diffulex int8 layout (formats/diffulex_int8.h) as the Diffulex GPTQ / AWQ scripts write it: from
// model_quantized_gptq / _awq.safetensors by the file name, elsewhere by g_idx (present: GPTQ).
LinearKind diffulex_int8_gptq_kind();
LinearKind diffulex_int8_awq_kind();

}  // namespace dlx
