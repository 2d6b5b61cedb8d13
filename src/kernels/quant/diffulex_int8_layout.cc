#include "kernels/quant/diffulex_int8_layout.h"

#include "core/error.h"

namespace dlx {

namespace {

// Packs a [rows, K] matrix of signed 4-bit values into [rows, ceil(K/2)] bytes (value + 8, even k low).
Tensor pack_nibbles(const std::vector<int8_t>& v, int64_t rows, int64_t K) {
  Tensor t = Tensor::zeros(DType::I8, {rows, dlx_int8::row_bytes(K)});
  uint8_t* b = t.data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < dlx_int8::row_bytes(K) * 2; ++k) {
      int s = k < K ? v[size_t(r * K + k)] : 0;  // padding nibble stands for 0
      check(s >= -8 && s <= 7, "pack_diffulex_int8: value {} outside -8..7", s);
      b[r * dlx_int8::row_bytes(K) + k / 2] |= uint8_t(uint32_t(s + 8) << (4 * (k & 1)));
    }
  return t;
}

}  // namespace

DiffulexInt8Tensors pack_diffulex_int8(const DiffulexInt8Codes& c) {
  check(c.n > 0 && c.k > 0 && c.group_size > 0, "pack_diffulex_int8: empty layer or group size");
  const int64_t G = c.groups();
  check(c.q.size() == size_t(c.n * c.k) && c.zero.size() == size_t(G * c.k), "pack_diffulex_int8: sizes mismatch");
  check(c.scale.size() == size_t(G * c.k) || c.scale.size() == size_t(G), "pack_diffulex_int8: scale size {}",
        c.scale.size());
  DiffulexInt8Tensors t;
  t.qweight = pack_nibbles(c.q, c.n, c.k);
  t.qzeros = pack_nibbles(c.zero, G, c.k);
  Shape ss = c.scale.size() == size_t(G * c.k) ? Shape{G, c.k} : Shape{G};
  t.scales = Tensor::from_data(DType::F32, ss, c.scale.data());
  if (!c.g_idx.empty()) t.g_idx = Tensor::from_data(DType::I32, {c.n}, c.g_idx.data());
  return t;
}

}  // namespace dlx
