// Helpers the layout writers share: consistency checks on QuantCodes and writing a float element.
#pragma once
#include "core/tensor.h"
#include "formats/quant_codes.h"

namespace dlx {

// Throws Error (prefixed with `who`) when sizes, group size, g_idx or code ranges are inconsistent.
void check_codes(const QuantCodes& c, const char* who);

// t[i] = v, rounded to t's float dtype (F32, F16 or BF16).
void store_float(Tensor& t, int64_t i, float v);

}  // namespace dlx
