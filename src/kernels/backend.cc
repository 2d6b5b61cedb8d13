#include "kernels/backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx {

void check_kv_fp8_shapes(const char* who, const Tensor& src, const Tensor& dst, const Tensor& scales, int64_t heads) {
  check(heads > 0 && src.numel() == dst.numel() && scales.numel() > 0 && src.numel() % scales.numel() == 0 &&
            scales.numel() % heads == 0,
        "{}: src {} / dst {} / scales {} do not match {} heads", who, shape_str(src.shape()), shape_str(dst.shape()),
        shape_str(scales.shape()), heads);
}

void Backend::silu_mul_fused(const Tensor& gate_up, Tensor& out) {
  check(gate_up.rank() == 2 && gate_up.dim(1) % 2 == 0, "silu_mul_fused: input must be [T, 2I], got {}",
        shape_str(gate_up.shape()));
  const int64_t T = gate_up.dim(0), I = gate_up.dim(1) / 2;
  check(out.numel() == T * I && out.dtype() == gate_up.dtype(), "silu_mul_fused: output {} {} should hold {} [{}, {}]",
        dtype_name(out.dtype()), shape_str(out.shape()), dtype_name(gate_up.dtype()), T, I);
  const Tensor gu = to_host_f32(gate_up);
  Tensor r = Tensor::zeros(DType::F32, out.shape());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const float g = gu.data<float>()[t * 2 * I + i], u = gu.data<float>()[t * 2 * I + I + i];
      r.data<float>()[t * I + i] = g / (1.0f + std::exp(-g)) * u;  // as cpu::silu_mul
    }
  copy(from_host_f32(r), out);
}

void Backend::matmul_packed_swiglu(const Tensor& x, const PackedWeight& w, Tensor& out) {
  check(x.rank() == 2 && w.n % 2 == 0, "matmul_packed_swiglu: input {} and a weight of {} rows (an even count: gate, then up)",
        shape_str(x.shape()), w.n);
  Tensor y = empty(out.dtype(), {x.dim(0), w.n});
  matmul_packed(x, w, nullptr, y);
  silu_mul_fused(y, out);
}

void Backend::add_rmsnorm(Tensor& h, const Tensor& y, const Tensor& weight, float eps, Tensor& out) {
  add(h, y);
  rmsnorm(h, weight, eps, out);
}

void Backend::qkv_rope(const Tensor& qkv, const Tensor& positions, double theta, Tensor& q, Tensor& k, Tensor& v) {
  check(q.rank() == 3 && k.rank() == 3, "qkv_rope: q {} and k {} must be [T, heads, D]", shape_str(q.shape()),
        shape_str(k.shape()));
  split_columns(qkv, {&q, &k, &v});
  rope(q, positions, theta);
  rope(k, positions, theta);
}

void Backend::copy_from_host(const Tensor& host, Tensor& dst) {
  check(host.device() == Device::CPU && dst.device() == Device::CPU && host.dtype() == dst.dtype() &&
            host.numel() == dst.numel(),
        "copy_from_host: {} {} into {} {} on {}", dtype_name(host.dtype()), shape_str(host.shape()),
        dtype_name(dst.dtype()), shape_str(dst.shape()), name());
  std::copy_n(host.data<unsigned char>(), host.nbytes(), dst.data<unsigned char>());
}

std::unique_ptr<Backend::Graph> Backend::capture(const std::function<void()>&) { return nullptr; }

void Backend::attention_block_causal(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask,
                                     int64_t block, int64_t q_offset, Tensor& out) {
  if (block <= 0) return attention(q, k, v, key_mask, out);
  check(q.rank() == 4 && k.rank() == 4 && v.shape() == k.shape() && out.shape() == q.shape() && k.dim(0) == q.dim(0),
        "attention_block_causal: q {} / k {} / v {} / out {} are not [B, Lq, Hq, D] / [B, S, Hkv, D]",
        shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  const int64_t B = q.dim(0), Lq = q.dim(1), Hq = q.dim(2), D = q.dim(3), S = k.dim(1), Hkv = k.dim(2);
  check(q_offset >= 0 && q_offset + Lq <= S, "attention_block_causal: queries [{}, {}) are outside the {} keys",
        q_offset, q_offset + Lq, S);
  check(!key_mask || (key_mask->dtype() == DType::U8 && key_mask->numel() == B * S),
        "attention_block_causal: key mask must be U8 [{}, {}]", B, S);
  check(!key_mask || key_mask->device() == Device::CPU,
        "attention_block_causal: this generic form reads the key mask on the host; a device backend overrides it");
  const Tensor q2 = q.reshape({B * Lq, Hq * D}), k2 = k.reshape({B * S, Hkv * D}), v2 = v.reshape({B * S, Hkv * D});
  Tensor o2 = out.reshape({B * Lq, Hq * D});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i0 = 0; i0 < Lq;) {
      const int64_t end = ((q_offset + i0) / block + 1) * block;  // the query block's end (sequence index)
      const int64_t i1 = std::min(Lq, end - q_offset), keys = std::min(S, end);
      const Tensor qs = q2.slice_rows(b * Lq + i0, b * Lq + i1).reshape({1, i1 - i0, Hq, D});
      Tensor os = o2.slice_rows(b * Lq + i0, b * Lq + i1).reshape({1, i1 - i0, Hq, D});
      const Tensor ks = k2.slice_rows(b * S, b * S + keys).reshape({1, keys, Hkv, D});
      const Tensor vs = v2.slice_rows(b * S, b * S + keys).reshape({1, keys, Hkv, D});
      Tensor mask;
      if (key_mask) {
        mask = Tensor::zeros(DType::U8, {1, keys});
        std::memcpy(mask.data(), key_mask->data<uint8_t>() + b * S, size_t(keys));
      }
      attention(qs, ks, vs, key_mask ? &mask : nullptr, os);
      i0 = i1;
    }
}

void check_attn_slots(const char* who, const Tensor& q, const Tensor& k, const Tensor& v,
                      const std::vector<AttnSlotRef>& slots, const Tensor& out) {
  check(q.defined() && k.defined() && v.defined() && out.defined(), "{}: q, k, v and out must all be set", who);
  check(q.rank() == 3 && k.rank() == 3 && v.shape() == k.shape() && out.shape() == q.shape() && k.dim(0) == q.dim(0) &&
            k.dim(2) == q.dim(2),
        "{}: q {} / k {} / v {} / out {} are not [T, Hq, D] / [T, Hkv, D] / [T, Hkv, D] / [T, Hq, D]", who,
        shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
  check(k.dtype() == q.dtype() && v.dtype() == q.dtype() && out.dtype() == q.dtype(),
        "{}: q, k, v and out must share one dtype (q is {}, k {}, v {}, out {})", who, dtype_name(q.dtype()),
        dtype_name(k.dtype()), dtype_name(v.dtype()), dtype_name(out.dtype()));
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = k.dim(1);
  check(Hkv > 0 && Hq % Hkv == 0, "{}: {} query heads is not a multiple of {} key/value heads", who, Hq, Hkv);
  // Byte ranges of every cache tensor, to find two slots (or a slot's k and v) sharing memory.
  struct Range {
    uintptr_t lo, hi;
    size_t slot;
    const char* field;
  };
  std::vector<Range> ranges;
  for (size_t i = 0; i < slots.size(); ++i) {
    const AttnSlotRef& s = slots[i];
    check(s.width > 0, "{}: slot {}: width {} must be positive", who, i, s.width);
    check(s.row >= 0 && s.row + s.width <= T, "{}: slot {}: rows [{}, {}) (row {}, width {}) are outside the {} rows of q",
          who, i, s.row, s.row + s.width, s.row, s.width, T);
    check(s.k_cache.defined() == s.v_cache.defined(), "{}: slot {}: k_cache and v_cache must both be set or both be unset",
          who, i);
    int64_t keys = s.width;
    if (!s.k_cache.defined()) {
      check(s.begin == 0, "{}: slot {}: begin {} without a cache (the window must then be the whole sequence: begin 0)",
            who, i, s.begin);
    } else {
      const Tensor& kc = s.k_cache;
      check(kc.rank() == 4 && kc.dim(0) == 1 && kc.dim(2) == Hkv && kc.dim(3) == D && s.v_cache.shape() == kc.shape(),
            "{}: slot {}: k_cache {} / v_cache {} are not [1, L, {}, {}]", who, i, shape_str(kc.shape()),
            shape_str(s.v_cache.shape()), Hkv, D);
      keys = kc.dim(1);
      check(s.begin >= 0 && s.begin + s.width <= keys,
            "{}: slot {}: window [{}, {}) (begin {}, width {}) is outside its cache's {} positions", who, i, s.begin,
            s.begin + s.width, s.begin, s.width, keys);
      const bool fp8 = kc.dtype() == DType::F8_E4M3;
      check(s.v_cache.dtype() == kc.dtype() && (fp8 || kc.dtype() == q.dtype()),
            "{}: slot {}: k_cache {} / v_cache {} must both be {} or F8_E4M3", who, i, dtype_name(kc.dtype()),
            dtype_name(s.v_cache.dtype()), dtype_name(q.dtype()));
      if (fp8)
        for (const Tensor* sc : {&s.k_scale, &s.v_scale})
          check(sc->defined() && sc->dtype() == DType::F32 && sc->numel() == keys * Hkv,
                "{}: slot {}: an F8_E4M3 cache needs k_scale and v_scale F32 [1, {}, {}]", who, i, keys, Hkv);
      const std::pair<const Tensor*, const char*> fields[] = {
          {&s.k_cache, "k_cache"}, {&s.v_cache, "v_cache"}, {&s.k_scale, "k_scale"}, {&s.v_scale, "v_scale"}};
      for (const auto& f : fields)
        if (f.first->defined() && f.first->nbytes() > 0) {
          const auto lo = reinterpret_cast<uintptr_t>(f.first->data());
          ranges.push_back({lo, lo + f.first->nbytes(), i, f.second});
        }
    }
    check(!s.key_mask.defined() || (s.key_mask.dtype() == DType::U8 && s.key_mask.numel() == keys),
          "{}: slot {}: key_mask must be U8 with {} entries (one per key), got {} {}", who, i, keys,
          dtype_name(s.key_mask.dtype()), shape_str(s.key_mask.shape()));
  }
  std::vector<size_t> order(slots.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return slots[a].row < slots[b].row; });
  for (size_t j = 1; j < order.size(); ++j) {
    const AttnSlotRef &a = slots[order[j - 1]], &b = slots[order[j]];
    check(a.row + a.width <= b.row, "{}: slots {} and {} overlap: rows [{}, {}) and [{}, {})", who, order[j - 1],
          order[j], a.row, a.row + a.width, b.row, b.row + b.width);
  }
  std::stable_sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.lo < b.lo; });
  for (size_t j = 1, widest = 0; j < ranges.size(); ++j) {
    const Range &a = ranges[widest], &b = ranges[j];
    check(b.lo >= a.hi, "{}: slot {}'s {} and slot {}'s {} share memory: every slot needs a cache of its own", who,
          a.slot, a.field, b.slot, b.field);
    if (b.hi > a.hi) widest = j;
  }
}

// Per slot what Model::attend does for a one-slot pass: the window's keys and values into the cache, then the
// slot's queries against the whole cache (dequantized first when fp8).
void Backend::attention_slots(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<AttnSlotRef>& slots,
                              int64_t block, Tensor& out) {
  check_attn_slots("attention_slots", q, k, v, slots, out);
  attention_each_slot(q, k, v, slots, block, out);
}

void Backend::attention_each_slot(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const std::vector<AttnSlotRef>& slots, int64_t block, Tensor& out) {
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = k.dim(1), row = Hkv * D;
  const Tensor k2 = k.reshape({T, row}), v2 = v.reshape({T, row});
  const Tensor q2 = q.reshape({T, Hq * D});
  Tensor o2 = out.reshape({T, Hq * D});
  for (const AttnSlotRef& s : slots) {
    const int64_t W = s.width;
    const Tensor qs = q2.slice_rows(s.row, s.row + W).reshape({1, W, Hq, D});
    Tensor os = o2.slice_rows(s.row, s.row + W).reshape({1, W, Hq, D});
    const Tensor ks = k2.slice_rows(s.row, s.row + W), vs = v2.slice_rows(s.row, s.row + W);
    const Tensor* mask = s.key_mask.defined() ? &s.key_mask : nullptr;
    if (!s.k_cache.defined()) {
      attention_block_causal(qs, ks.reshape({1, W, Hkv, D}), vs.reshape({1, W, Hkv, D}), mask, block, 0, os);
      continue;
    }
    const int64_t L = s.k_cache.dim(1);
    Tensor dk = s.k_cache.reshape({L, row}).slice_rows(s.begin, s.begin + W);
    Tensor dv = s.v_cache.reshape({L, row}).slice_rows(s.begin, s.begin + W);
    if (s.k_cache.dtype() != DType::F8_E4M3) {
      copy(ks, dk);
      copy(vs, dv);
      attention_block_causal(qs, s.k_cache, s.v_cache, mask, block, s.begin, os);
      continue;
    }
    Tensor kscale = s.k_scale.reshape({L, Hkv}).slice_rows(s.begin, s.begin + W);
    Tensor vscale = s.v_scale.reshape({L, Hkv}).slice_rows(s.begin, s.begin + W);
    kv_quantize_fp8(ks, Hkv, dk, kscale);
    kv_quantize_fp8(vs, Hkv, dv, vscale);
    // Attention reads the dequantized cache (the window's own entries included, as later steps see them).
    Tensor kd = empty(q.dtype(), {1, L, Hkv, D}), vd = empty(q.dtype(), {1, L, Hkv, D});
    kv_dequantize_fp8(s.k_cache.reshape({L, row}), s.k_scale, Hkv, kd);
    kv_dequantize_fp8(s.v_cache.reshape({L, row}), s.v_scale, Hkv, vd);
    attention_block_causal(qs, kd, vd, mask, block, s.begin, os);
  }
}

int64_t check_row_blocks(const char* op, const Tensor& src, int64_t blocks, const Tensor& dst, int64_t stride,
                         int64_t offset) {
  check(src.rank() == 2 && dst.rank() == 2 && src.dtype() == dst.dtype() && src.dim(1) == dst.dim(1),
        "{}: src {} {} and dst {} {} must be [rows, C] of one dtype and width", op, dtype_name(src.dtype()),
        shape_str(src.shape()), dtype_name(dst.dtype()), shape_str(dst.shape()));
  check(blocks > 0 && src.dim(0) % blocks == 0, "{}: {} rows of src do not split into {} blocks", op, src.dim(0),
        blocks);
  const int64_t n = src.dim(0) / blocks;
  check(offset >= 0 && stride >= n && (blocks - 1) * stride + offset + n <= dst.dim(0),
        "{}: {} blocks of {} rows at stride {} from row {} do not fit dst's {} rows", op, blocks, n, stride, offset,
        dst.dim(0));
  return n;
}

void Backend::copy_row_blocks(const Tensor& src, int64_t blocks, Tensor& dst, int64_t stride, int64_t offset) {
  const int64_t n = check_row_blocks("copy_row_blocks", src, blocks, dst, stride, offset);
  for (int64_t b = 0; b < blocks; ++b) {
    Tensor d = dst.slice_rows(b * stride + offset, b * stride + offset + n);
    copy(src.slice_rows(b * n, (b + 1) * n), d);
  }
}

void Backend::split_columns(const Tensor& x, const std::vector<Tensor*>& outs) {
  check(x.rank() == 2, "split_columns: input must be [T, N], got {}", shape_str(x.shape()));
  const int64_t T = x.dim(0), N = x.dim(1);
  int64_t total = 0;
  for (const Tensor* o : outs) {
    check(o && o->dtype() == x.dtype() && T > 0 && o->numel() % T == 0, "split_columns: output {} does not fit {} rows",
          o ? shape_str(o->shape()) : std::string("null"), T);
    total += o->numel() / T;
  }
  check(total == N, "split_columns: outputs take {} columns of {}", total, N);
  const Tensor xh = to_host_f32(x);
  int64_t col = 0;
  for (Tensor* o : outs) {
    const int64_t n = o->numel() / T;
    Tensor part = Tensor::zeros(DType::F32, o->shape());
    for (int64_t t = 0; t < T; ++t) std::copy_n(xh.data<float>() + t * N + col, n, part.data<float>() + t * n);
    copy(from_host_f32(part), *o);
    col += n;
  }
}

void Backend::gather_rows(const Tensor& x, const std::vector<int64_t>& rows, Tensor& out) {
  check(x.rank() == 2, "gather_rows: input must be [T, H], got {}", shape_str(x.shape()));
  const int64_t T = x.dim(0), H = x.dim(1), R = int64_t(rows.size());
  check(out.rank() == 2 && out.dim(0) == R && out.dim(1) == H && out.dtype() == x.dtype(),
        "gather_rows: output {} {} should be {} [{}, {}]", dtype_name(out.dtype()), shape_str(out.shape()),
        dtype_name(x.dtype()), R, H);
  for (int64_t r : rows) check(r >= 0 && r < T, "gather_rows: row {} is outside [0, {})", r, T);
  const Tensor xh = to_host_f32(x);
  Tensor sel = Tensor::zeros(DType::F32, {R, H});
  for (int64_t i = 0; i < R; ++i) std::copy_n(xh.data<float>() + rows[size_t(i)] * H, H, sel.data<float>() + i * H);
  copy(from_host_f32(sel), out);
}

std::vector<TokenChoice> Backend::sample_rows(const Tensor& logits, const RowSampling& how,
                                              const std::vector<RowDraw>& draws) {
  check(logits.defined() && logits.rank() == 2 && logits.dim(1) >= 1, "sample_rows: logits must be [N, V], got {}",
        shape_str(logits.shape()));
  check_row_sampling(how, draws, logits.dim(0), "sample_rows");
  const Tensor host = to_host_f32(logits);
  const int64_t V = host.dim(1);
  const float* base = host.data<float>();
  return sample_rows_host([&](int64_t r) { return base + r * V; }, V, how, draws);
}

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend>();
#ifdef DIFFULEX_HAVE_CUDA
  if (name == "cuda") return make_cuda_backend();
  fail("unknown device '{}' (available: cpu, cuda)", name);
#else
  if (name == "cuda") fail("device 'cuda' is not available: this diffulex was built without CUDA (available: cpu)");
  fail("unknown device '{}' (available: cpu)", name);
#endif
}

}  // namespace dlx
