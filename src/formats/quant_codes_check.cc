#include "formats/quant_codes_check.h"

#include <atomic>

#include "core/error.h"
#include "core/thread_pool.h"

namespace dlx {

void check_codes(const QuantCodes& c, const char* who) {
  check(c.bits == 2 || c.bits == 4 || c.bits == 8, "{}: {} bits is not supported (2, 4 or 8)", who, c.bits);
  check(c.n > 0 && c.k > 0, "{}: empty layer [{}, {}]", who, c.n, c.k);
  check(c.group_size > 0 && c.k % c.group_size == 0, "{}: group_size {} does not divide in_features {}", who,
        c.group_size, c.k);
  const size_t G = size_t(c.groups());
  check(c.q.size() == size_t(c.n * c.k), "{}: {} codes for a [{}, {}] weight", who, c.q.size(), c.n, c.k);
  check(c.zero.size() == G * size_t(c.n) && c.scale.size() == G * size_t(c.n),
        "{}: zero/scale need [{}, {}] entries, got {} and {}", who, G, c.n, c.zero.size(), c.scale.size());
  check(c.g_idx.empty() || c.g_idx.size() == size_t(c.k), "{}: g_idx has {} entries for in_features {}", who,
        c.g_idx.size(), c.k);
  for (int32_t g : c.g_idx) check(g >= 0 && size_t(g) < G, "{}: g_idx value {} outside [0, {})", who, g, G);
  // A layer's codes (~68M for a 7B model's MLP linears): OR-reduced in parallel, the first bad one looked up only
  // when there is one.
  const uint8_t maxq = uint8_t((1u << c.bits) - 1);
  const int64_t total = int64_t(c.q.size());
  std::atomic<bool> bad{false};
  parallel_for(total, 1 << 20, [&](int64_t i0, int64_t i1) {
    uint8_t high = 0;
    for (int64_t i = i0; i < i1; ++i) high |= uint8_t(c.q[size_t(i)] & ~maxq);
    if (high) bad = true;
  });
  if (bad)
    for (uint8_t v : c.q) check(v <= maxq, "{}: code {} does not fit in {} bits", who, v, c.bits);
}

void store_float(Tensor& t, int64_t i, float v) {
  switch (t.dtype()) {
    case DType::F32: t.data<float>()[i] = v; break;
    case DType::F16: t.data<uint16_t>()[i] = f32_to_f16(v); break;
    case DType::BF16: t.data<uint16_t>()[i] = f32_to_bf16(v); break;
    default: fail("store_float: tensor dtype {} is not a float type", dtype_name(t.dtype()));
  }
}

}  // namespace dlx
