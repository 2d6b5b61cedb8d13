// The AutoAWQ "gemm" checkpoint layout (docs/QUANTIZED_CHECKPOINTS.md), in one place: loader, tests and the quantizer's
// writer.
//
// For a linear with in_features K, out_features N (N % 8 == 0), 4 bits, G = K / group_size groups:
//   qweight  I32 [K, N/8]   packed along the OUTPUT dim, interleaved: nibble j of word (k, c) holds
//                           column 8c + kOrder[j], kOrder = [0, 2, 4, 6, 1, 3, 5, 7]
//   qzeros   I32 [G, N/8]   same interleaved packing, zero stored as is
//   scales   F16 [G, N]
//   W[n, k] = scales[k / group_size, n] * (q(k, n) - z(k / group_size, n))      (no g_idx: groups are sequential)
//
// AwqOrder::Plain reads the same names and shapes with nibble j holding column 8c + j: what the later public
// Diffulex's "awq" export writes (formats/diffulex_int8.h). Nothing in such a file tells it apart, so only an explicit
// user option (LoadOptions::awq_order, `--awq-order plain`) selects it.
#pragma once
#include <cstdint>

#include "core/tensor.h"
#include "formats/packed_words.h"
#include "formats/quant_codes.h"

namespace dlx {

struct AwqTensors {
  Tensor qweight, qzeros, scales;
};

enum class AwqOrder { AutoAwq, Plain };

namespace awq {

constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};     // nibble j -> column offset
constexpr int kNibbleOf[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // column offset -> nibble (the inverse)

inline int nibble_of(int64_t n, AwqOrder order) { return order == AwqOrder::Plain ? int(n % 8) : kNibbleOf[n % 8]; }

// Nibble for column n of a row of words packed with `order` (row = N/8 words).
inline uint32_t nibble(const void* words, int64_t row, int64_t n_out, int64_t n, AwqOrder order = AwqOrder::AutoAwq) {
  return (load_word(words, row * (n_out / 8) + n / 8) >> (4 * nibble_of(n, order))) & 0xFu;
}
inline uint32_t code(const void* qweight, int64_t n_out, int64_t k, int64_t n, AwqOrder order = AwqOrder::AutoAwq) {
  return nibble(qweight, k, n_out, n, order);
}
inline uint32_t zero(const void* qzeros, int64_t n_out, int64_t g, int64_t n, AwqOrder order = AwqOrder::AutoAwq) {
  return nibble(qzeros, g, n_out, n, order);
}

}  // namespace awq

// Packs 4-bit codes (codes.g_idx must be empty or sequential; N % 8 == 0) into the checkpoint tensors.
AwqTensors pack_awq(const QuantCodes& codes, DType scale_dtype = DType::F16, AwqOrder order = AwqOrder::AutoAwq);

// Reads the tensors back (shapes must already be valid).
QuantCodes unpack_awq(const AwqTensors& t, int64_t group_size, AwqOrder order = AwqOrder::AutoAwq);

}  // namespace dlx
