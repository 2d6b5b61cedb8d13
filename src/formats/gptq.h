// The GPTQ checkpoint layout (AutoGPTQ / GPTQModel, what vLLM and transformers load; docs/QUANTIZED_CHECKPOINTS.md), in
// one place: the loader, dequantization in tests and the quantizer's writer all go through these functions.
//
// For a linear with in_features K, out_features N, b bits, p = 32 / b values per int32, G groups:
//   qweight  I32 [K/p, N]     element (k, n) in word (k/p, n) at bits [b*(k%p), b*(k%p) + b)   (along INPUT)
//   qzeros   I32 [G, ceil(N/p)] zero (g, n) in word (g, n/p) at bits [b*(n%p), ...)           (along OUTPUT)
//   scales   F16 [G, N]
//   g_idx    I32 [K]          group of input row k (k / group_size unless act-order permuted the rows)
//   W[n, k] = scales[g_idx[k], n] * (q(k, n) - z(g_idx[k], n))
// checkpoint_format "gptq" (v1) stores z - 1 (so sym 4-bit stores 7 for z = 8); "gptq_v2" stores z.
#pragma once
#include <cstdint>

#include "core/tensor.h"
#include "formats/packed_words.h"
#include "formats/quant_codes.h"

namespace dlx {

struct GptqTensors {
  Tensor qweight, qzeros, scales, g_idx;
};

namespace gptq {

inline int pack_factor(int bits) { return 32 / bits; }
inline int64_t zero_cols(int64_t n, int bits) { return (n + pack_factor(bits) - 1) / pack_factor(bits); }

// Code of element (k, n) of qweight I32 [K/p, N].
inline uint32_t code(const void* qweight, int64_t n_out, int bits, int64_t k, int64_t n) {
  const int p = pack_factor(bits);
  return (load_word(qweight, (k / p) * n_out + n) >> (bits * (k % p))) & ((1u << bits) - 1);
}

// Word (j, n) of qweight: codes of inputs j*p .. j*p + p - 1 of output n, lowest input in the low bits, which
// is also how PackedWeight packs a row, so GPTQ without act-order converts by transposing words.
inline uint32_t word(const void* qweight, int64_t n_out, int64_t j, int64_t n) { return load_word(qweight, j * n_out + n); }

// Zero point of (g, n) of qzeros I32 [G, ceil(N/p)]; v1 adds back the 1 the format subtracted.
inline uint32_t zero(const void* qzeros, int64_t n_out, int bits, int64_t g, int64_t n, bool v1) {
  const int p = pack_factor(bits);
  uint32_t stored = (load_word(qzeros, g * zero_cols(n_out, bits) + n / p) >> (bits * (n % p))) & ((1u << bits) - 1);
  return stored + (v1 ? 1u : 0u);
}

}  // namespace gptq

// Packs codes into the checkpoint tensors (scales in `scale_dtype`, F16 as AutoGPTQ writes them; g_idx always
// written, k / group_size when codes.g_idx is empty). v1 stores zero - 1, so it can only hold zeros 1 .. 2^bits:
// other zeros are rejected (write v2 instead). Throws Error on inconsistent codes.
GptqTensors pack_gptq(const QuantCodes& codes, bool v1, DType scale_dtype = DType::F16);

// Reads the tensors back (shapes must already be valid). group_size is the config's (resolved: K for -1).
QuantCodes unpack_gptq(const GptqTensors& t, int bits, int64_t group_size, bool v1);

}  // namespace dlx
