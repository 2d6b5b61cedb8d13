// The integer grid every quantizer here shares, and round-to-nearest (RTN) on it.
//
// One group of a weight row (gs consecutive input columns of one output row n) is stored as
//   W[n, k] ~= scale * (q - zero),   q in 0 .. 2^bits - 1,
// with `scale` rounded to fp16 at once (the checkpoint stores fp16 scales, so every error computed here, and
// GPTQ's error feedback, uses the value a loader will see).
//
// Two ways to choose the grid, as the public tools do:
//   include_zero = true  (AutoGPTQ): the range [min(w, 0), max(w, 0)]; sym -> zero = 2^(bits-1),
//                                    scale = 2 * absmax / maxq
//   include_zero = false (AutoAWQ):  the range [min(w), max(w)], zero = clamp(-round(min / scale), 0, maxq)
// GPTQ's v1 checkpoint format stores zero - 1, so zeros must be >= 1 there (min_zero = 1): a group whose grid
// would start at zero 0 (all weights >= 0) gets zero 1 and a scale stretched to cover its maximum.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "formats/quant_codes.h"

namespace dlx {

struct QuantScheme {
  int bits = 4;
  int64_t group_size = 128;  // resolved: > 0 and dividing in_features (in_features for GPTQ's -1)
  bool sym = true;
  bool include_zero = true;
  int min_zero = 0;
  int maxq() const { return (1 << bits) - 1; }
};

// std::nearbyint(x) in the default rounding mode (half to even), inline: without SSE4.1 in the target the library
// call costs more than the rest of a weight's quantization, and every method rounds each weight (AWQ's search
// 21 times). For |x| < 2^22, x + 1.5 * 2^23 lies in (2^23, 2^24), where floats are the integers, so the addition
// itself rounds x half to even and the subtraction is exact. (Only the sign of a zero result can differ, which no
// caller sees: code() adds the zero point and converts to int.)
inline float round_half_even(float x) {
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23
  if (std::fabs(x) < 4194304.0f) return (x + kShift) - kShift;
  return std::nearbyint(x);
}

struct GroupParams {
  float scale = 1.0f;  // already fp16-representable
  int zero = 0;
  // clamp(round(w / scale) + zero, 0, maxq)
  int code(float w, int maxq) const {
    const float q = round_half_even(w / scale) + float(zero);
    return int(std::clamp(q, 0.0f, float(maxq)));
  }
  float dequant(int q) const { return scale * float(q - zero); }
  float fake(float w, int maxq) const { return dequant(code(w, maxq)); }
};

float round_to_f16(float v);

// Grid for values spanning [lo, hi] (lo <= hi), per the scheme.
GroupParams params_from_range(float lo, float hi, const QuantScheme& s);
// Grid for n values (the group's min and max).
GroupParams find_params(const float* w, int64_t n, const QuantScheme& s);

// RTN of a dense F32 weight [n, k] (row-major): per row and group, find_params then round. Codes in the
// checkpoint's input order, sequential groups (no g_idx).
QuantCodes rtn_quantize(const float* w, int64_t n, int64_t k, const QuantScheme& s);

// The effective weight of codes as F32 [n, k].
Tensor codes_to_dense(const QuantCodes& c);

// Stores one group's parameters into codes (zero/scale are [groups, n]).
inline void set_group(QuantCodes& c, int64_t g, int64_t n, const GroupParams& p) {
  c.scale[size_t(g * c.n + n)] = p.scale;
  c.zero[size_t(g * c.n + n)] = uint8_t(p.zero);
}

// An empty QuantCodes of the right sizes for the scheme.
QuantCodes make_codes(int64_t n, int64_t k, const QuantScheme& s);

}  // namespace dlx
