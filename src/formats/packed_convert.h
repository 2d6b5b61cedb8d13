// Conversion of a checkpoint's quantized tensors into the canonical PackedWeight (kernels/packed_weight.h),
// done once at load time, and the way back (dequantize) for tests and --dequant-cache.
//
// build_packed_weight() is format-blind: each format passes its element accessors (from its formats/<format>.h), so
// the layout knowledge stays in one place. Kernel column j holds checkpoint input perm[j] (identity when perm
// is empty); groups must be contiguous in kernel order, i.e. the group of kernel column j is j / group_size.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/packed_weight.h"

namespace dlx {

namespace packed_detail {

// Packs one output row: word j holds kernel columns j*per .. j*per + per - 1, i.e. checkpoint inputs perm[col]
// (col itself when perm is empty), lowest column in the low bits.
inline void pack_row(const uint8_t* row, const std::vector<int32_t>& perm, int bits, int64_t words, uint32_t* out) {
  const int per = 32 / bits;
  if (perm.empty()) {
    for (int64_t j = 0; j < words; ++j) {
      uint32_t word = 0;
      for (int i = 0; i < per; ++i) word |= uint32_t(row[j * per + i]) << (bits * i);
      out[j] = word;
    }
    return;
  }
  for (int64_t j = 0; j < words; ++j) {
    uint32_t word = 0;
    for (int i = 0; i < per; ++i) word |= uint32_t(row[perm[size_t(j * per + i)]]) << (bits * i);
    out[j] = word;
  }
}

// An empty PackedWeight of the given geometry (codes, scales and folded zeros allocated), and the groups' scale
// and scale * zero of output row r, for the two builders below.
inline PackedWeight new_packed_weight(int bits, int64_t n, int64_t k, int64_t group_size,
                                      const std::vector<int32_t>& perm) {
  PackedWeight w;
  w.bits = bits;
  w.n = n;
  w.k = k;
  w.group_size = group_size;
  w.qweight = Tensor::zeros(DType::I32, {n, w.words_per_row()});
  w.scales = Tensor::zeros(DType::F32, {n, w.groups()});
  w.zeros = Tensor::zeros(DType::F32, {n, w.groups()});
  if (!perm.empty()) w.perm = Tensor::from_data(DType::I32, {k}, perm.data());
  return w;
}
template <class Scale, class Zero>
void store_row_groups(PackedWeight& w, int64_t r, Scale& scale, Zero& zero) {
  const int64_t G = w.groups();
  float* sc = w.scales.data<float>() + r * G;
  float* zs = w.zeros.data<float>() + r * G;
  for (int64_t g = 0; g < G; ++g) {
    const float s = float(scale(g, r));
    sc[g] = s;
    zs[g] = s * float(zero(g, r));
  }
}

}  // namespace packed_detail

// code(k, n): integer code of checkpoint element (input k, output n), 0 .. 2^bits - 1.
// scale(g, n), zero(g, n): the group's scale and zero point, W = scale * (code - zero).
template <class Code, class Scale, class Zero>
PackedWeight build_packed_weight(int bits, int64_t n, int64_t k, int64_t group_size, const std::vector<int32_t>& perm,
                                 Code code, Scale scale, Zero zero) {
  PackedWeight w = packed_detail::new_packed_weight(bits, n, k, group_size, perm);
  const int64_t words = w.words_per_row();
  uint32_t* qw = w.qweight.data<uint32_t>();
  // Blocks of output rows: codes are read k-major (how GPTQ and AWQ store them, row after row of input k)
  // into a small row-major scratch, then packed along k.
  constexpr int64_t kBlock = 16;
  parallel_for((n + kBlock - 1) / kBlock, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint8_t> tmp(size_t(kBlock * k));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n0 = b * kBlock, rows = std::min(kBlock, n - n0);
      for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t r = 0; r < rows; ++r) tmp[size_t(r * k + kk)] = uint8_t(code(kk, n0 + r));
      for (int64_t r = 0; r < rows; ++r) {
        packed_detail::pack_row(tmp.data() + r * k, perm, bits, words, qw + (n0 + r) * words);
        packed_detail::store_row_groups(w, n0 + r, scale, zero);
      }
    }
  });
  return w;
}

// The same from codes already stored row by row: row(n) points at the k codes of output n in checkpoint input
// order (the quantizer's QuantCodes::q). Each row is packed straight from its codes, in parallel, with no
// transposing gather.
template <class Row, class Scale, class Zero>
PackedWeight build_packed_weight_from_rows(int bits, int64_t n, int64_t k, int64_t group_size,
                                           const std::vector<int32_t>& perm, Row row, Scale scale, Zero zero) {
  PackedWeight w = packed_detail::new_packed_weight(bits, n, k, group_size, perm);
  const int64_t words = w.words_per_row();
  uint32_t* qw = w.qweight.data<uint32_t>();
  parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      packed_detail::pack_row(row(r), perm, bits, words, qw + r * words);
      packed_detail::store_row_groups(w, r, scale, zero);
    }
  });
  return w;
}

// The same when the format already packs codes along K exactly as PackedWeight does (GPTQ without act-order):
// word(j, n) returns the 32-bit word holding columns j*(32/bits) .. of output n, so conversion is a transpose.
template <class Word, class Scale, class Zero>
PackedWeight build_packed_weight_from_words(int bits, int64_t n, int64_t k, int64_t group_size, Word word, Scale scale,
                                            Zero zero) {
  PackedWeight w = packed_detail::new_packed_weight(bits, n, k, group_size, {});
  const int64_t words = w.words_per_row();
  uint32_t* qw = w.qweight.data<uint32_t>();
  // Tiles of 16 x 16 words: reads along n (how the checkpoint stores them), writes along j, both in cache.
  constexpr int64_t kTile = 16;
  parallel_for((n + kTile - 1) / kTile, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t n0 = b0 * kTile; n0 < std::min(n, b1 * kTile); n0 += kTile) {
      const int64_t n1 = std::min(n, n0 + kTile);
      for (int64_t j0 = 0; j0 < words; j0 += kTile)
        for (int64_t j = j0; j < std::min(words, j0 + kTile); ++j)
          for (int64_t r = n0; r < n1; ++r) qw[r * words + j] = word(j, r);
      for (int64_t r = n0; r < n1; ++r) packed_detail::store_row_groups(w, r, scale, zero);
    }
  });
  return w;
}

// Code of kernel column j in row n (kernel order: checkpoint input perm[j]).
inline uint32_t packed_code(const PackedWeight& w, int64_t n, int64_t j) {
  const int per = 32 / w.bits;
  uint32_t word = w.qweight.data<uint32_t>()[n * w.words_per_row() + j / per];
  return (word >> (w.bits * (j % per))) & ((1u << w.bits) - 1);
}

// The effective weight as F32 [n, k] in the checkpoint's input order: W[n, perm[j]] = s * q - zs.
Tensor dequantize_packed(const PackedWeight& w);

}  // namespace dlx
