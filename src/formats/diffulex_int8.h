// The int8 layout of the original Diffulex quantize script (docs/QUANTIZED_CHECKPOINTS.md, "The Diffulex int8 layout"),
// in one place.
//
// The original Diffulex's description lists only ambiguous shapes; this is the interpretation diffulex chose, which is
// the one the original Diffulex's own quantizer wrote and its loader read back
// (model_quantized_{gptq,awq}.safetensors):
//   qweight  I8  [N, ceil(K/2)]   two 4-bit values per byte along the INPUT dim: byte (n, k/2) holds input k
//                                 in its low nibble when k is even, high nibble when odd; a nibble u stands for
//                                 the signed value u - 8 (-8 .. 7). An odd K pads the last high nibble.
//   qzeros   I8  [G, ceil(K/2)]   same packing: a signed zero zq(g, k) per OUTPUT group g and input k
//   scales   F32 [G, K]           per output group and input column; [G] or [G, 1] = one scale per group
//   g_idx    I32 [N]  (optional)  output group of row n; without it g(n) = n / group_size
//   group_size, bits  I32 scalars (optional, written by the original Diffulex next to each layer)
// Groups run over OUTPUT rows, G = ceil(N / group_size), and
//   W[n, k] = scales[g(n), k] * (q(n, k) + zq(g(n), k))          (the original Diffulex: w*s + zq*s)
// There is no zero subtraction: the original Diffulex quantized (w - zero) / s and stored round(zero / s) as zq.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace dlx {

struct DiffulexInt8Tensors {
  Tensor qweight, qzeros, scales, g_idx;  // g_idx undefined when absent
};

namespace dlx_int8 {

inline int64_t row_bytes(int64_t k) { return (k + 1) / 2; }

// Raw nibble (0 .. 15) of input k in row r of a [rows, ceil(K/2)] byte matrix.
inline uint32_t nibble(const void* bytes, int64_t k_in, int64_t r, int64_t k) {
  uint8_t b = static_cast<const uint8_t*>(bytes)[r * row_bytes(k_in) + k / 2];
  return (k & 1) ? uint32_t(b >> 4) : uint32_t(b & 0xF);
}
// Signed value (-8 .. 7) the nibble stands for.
inline int value(const void* bytes, int64_t k_in, int64_t r, int64_t k) { return int(nibble(bytes, k_in, r, k)) - 8; }

}  // namespace dlx_int8

// Integer form of the layout, for writing test checkpoints (the original Diffulex's writer).
struct DiffulexInt8Codes {
  int64_t n = 0, k = 0, group_size = 0;  // group_size over OUTPUT rows
  std::vector<int8_t> q;                 // [n, k] in -8 .. 7
  std::vector<int8_t> zero;              // [groups, k] in -8 .. 7
  std::vector<float> scale;              // [groups, k], or [groups] for one scale per group
  std::vector<int32_t> g_idx;            // [n] or empty
  int64_t groups() const { return (n + group_size - 1) / group_size; }
};

DiffulexInt8Tensors pack_diffulex_int8(const DiffulexInt8Codes& c);

}  // namespace dlx
