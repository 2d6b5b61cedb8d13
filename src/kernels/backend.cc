#include "kernels/backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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
