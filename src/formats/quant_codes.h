// QuantCodes: one quantized linear layer as plain integers and floats, in the checkpoint's input order. It is
// the common currency between the checkpoint layouts (formats/gptq.h, formats/awq.h), the loader and the
// quantizer: a quantizer fills it and calls pack_gptq / pack_awq; tests unpack checkpoint tensors into it.
//
//   W[n, k] = scale[g, n] * (q[n, k] - zero[g, n])      g = g_idx[k], or k / group_size when g_idx is empty
#pragma once
#include <cstdint>
#include <vector>

namespace dlx {

// "One group per row" (one group over all K inputs) in configs and options: GPTQ's quantize_config.json spelling.
inline constexpr int64_t kOneGroupPerRow = -1;

// The group size of a layer with `k` inputs: k for kOneGroupPerRow, else `group_size` itself (checked by whoever
// uses it against k). The one place where the config spelling becomes the resolved size that QuantCodes and
// PackedWeight hold.
inline int64_t resolve_group_size(int64_t group_size, int64_t k) {
  return group_size == kOneGroupPerRow ? k : group_size;
}

struct QuantCodes {
  int bits = 4;
  int64_t n = 0, k = 0;         // out_features, in_features
  int64_t group_size = 0;       // > 0 and divides k; == k for one group over all of K (resolve_group_size)
  std::vector<uint8_t> q;       // [n, k]   codes 0 .. 2^bits - 1
  std::vector<uint8_t> zero;    // [groups, n] integer zero points
  std::vector<float> scale;     // [groups, n]
  std::vector<int32_t> g_idx;   // [k] group of each input row (act-order), or empty: k / group_size

  int64_t groups() const { return group_size > 0 ? k / group_size : 0; }
  int64_t group_of(int64_t kk) const { return g_idx.empty() ? kk / group_size : g_idx[size_t(kk)]; }
  float weight(int64_t nn, int64_t kk) const {
    size_t gi = size_t(group_of(kk) * n + nn);
    return scale[gi] * (float(q[size_t(nn * k + kk)]) - float(zero[gi]));
  }
};

// Fills c.q, c.zero and c.scale (c.n, c.k and c.group_size set) through a checkpoint layout's accessors:
// code(k, n) and zero(g, n) give integers, scale(i) the float at [g, n] (i = g * n_count + n).
template <class Code, class Zero, class Scale>
void fill_quant_codes(QuantCodes& c, Code code, Zero zero, Scale scale) {
  const int64_t N = c.n, K = c.k, G = c.groups();
  c.q.resize(size_t(N * K));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n) c.q[size_t(n * K + k)] = uint8_t(code(k, n));
  c.zero.resize(size_t(G * N));
  c.scale.resize(size_t(G * N));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n) {
      c.zero[size_t(g * N + n)] = uint8_t(zero(g, n));
      c.scale[size_t(g * N + n)] = scale(size_t(g * N + n));
    }
}

}  // namespace dlx
