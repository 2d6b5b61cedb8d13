// The CPU backend: F32 activations in host memory, weights used in place (mmap'd) in their stored dtype.
#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/linalg.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/qmatmul.h"

namespace dlx {

std::string CpuBackend::name() const { return cpu_has_avx2() ? "cpu (avx2+fma)" : "cpu (portable)"; }

Tensor CpuBackend::empty(DType dtype, Shape shape) { return Tensor::zeros(dtype, std::move(shape)); }
Tensor CpuBackend::upload(const Tensor& host) { return host; }
Tensor CpuBackend::to_host_f32(const Tensor& t) { return t; }
Tensor CpuBackend::from_host_f32(const Tensor& host) { return host; }

void CpuBackend::embedding(const Tensor& ids, const Tensor& table, Tensor& out) { cpu::embedding(ids, table, out); }
void CpuBackend::rmsnorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) { cpu::rmsnorm(x, w, eps, out); }
void CpuBackend::matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) { cpu_matmul(x, w, bias, y); }
void CpuBackend::matmul_packed(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y) {
  check(w.layout == kCanonicalLayout, "cpu matmul_packed: the weight is in another backend's layout ({})", w.layout);
  cpu_qmatmul(x, w, bias, y);
}
void CpuBackend::rope(Tensor& x, const Tensor& positions, double theta) { cpu::rope(x, positions, theta); }
void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, Tensor& out) {
  cpu::attention(q, k, v, key_mask, out);
}
void CpuBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) { cpu::silu_mul(gate, up, out); }
void CpuBackend::add(Tensor& x, const Tensor& y) { cpu::add(x, y); }
void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  check(src.dtype() == dst.dtype() && src.numel() == dst.numel(), "copy: {} {} into {} {}", dtype_name(src.dtype()),
        shape_str(src.shape()), dtype_name(dst.dtype()), shape_str(dst.shape()));
  std::memcpy(dst.data(), src.data(), src.nbytes());
}

// ---- fp8 KV cache ----

// Nearest e4m3 code of |a| (a >= 0 finite; ties to the even code, saturating at 448): the same result as
// f32_to_fp8e4m3 (core/dtype.h) without its search over the codes.
static uint8_t e4m3_code(float a) {
  if (!(a < 448.0f)) return 0x7e;
  if (a < 0.015625f) return uint8_t(std::nearbyint(a * 512.0f));  // subnormals (code 8 is the smallest normal)
  int ex = 0;
  const float fr = std::frexp(a, &ex);  // a = fr * 2^ex, fr in [0.5, 1)
  int e = ex - 1 + 7;
  int m = int(std::nearbyint((fr * 2.0f - 1.0f) * 8.0f));
  if (m == 8) m = 0, ++e;
  const int code = (e << 3) | m;
  return uint8_t(code > 0x7e ? 0x7e : code);
}

void CpuBackend::kv_quantize_fp8(const Tensor& src, int64_t heads, Tensor& dst, Tensor& scales) {
  check(src.dtype() == DType::F32 && dst.dtype() == DType::F8_E4M3 && scales.dtype() == DType::F32,
        "cpu kv_quantize_fp8: want F32 src, F8_E4M3 dst, F32 scales (got {}, {}, {})", dtype_name(src.dtype()),
        dtype_name(dst.dtype()), dtype_name(scales.dtype()));
  check_kv_fp8_shapes("cpu kv_quantize_fp8", src, dst, scales, heads);
  const int64_t rows = scales.numel(), D = src.numel() / rows;
  const float* x = src.data<float>();
  uint8_t* q = dst.data<uint8_t>();
  float* sc = scales.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t d = 0; d < D; ++d) amax = std::max(amax, std::fabs(x[r * D + d]));
    const float inv = amax > 0 ? 448.0f / amax : 0.0f;
    sc[r] = amax / 448.0f;
    for (int64_t d = 0; d < D; ++d) {
      const float v = x[r * D + d] * inv;
      q[r * D + d] = uint8_t((std::signbit(v) ? 0x80 : 0) | e4m3_code(std::fabs(v)));
    }
  }
}

void CpuBackend::kv_dequantize_fp8(const Tensor& src, const Tensor& scales, int64_t heads, Tensor& dst) {
  check(src.dtype() == DType::F8_E4M3 && dst.dtype() == DType::F32 && scales.dtype() == DType::F32,
        "cpu kv_dequantize_fp8: want F8_E4M3 src, F32 scales, F32 dst (got {}, {}, {})", dtype_name(src.dtype()),
        dtype_name(scales.dtype()), dtype_name(dst.dtype()));
  check_kv_fp8_shapes("cpu kv_dequantize_fp8", src, dst, scales, heads);
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[size_t(c)] = fp8e4m3_to_f32(uint8_t(c));
    return t;
  }();
  const int64_t rows = scales.numel(), D = src.numel() / rows;
  const uint8_t* q = src.data<uint8_t>();
  const float* sc = scales.data<float>();
  float* y = dst.data<float>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < D; ++d) y[r * D + d] = sc[r] * table[q[r * D + d]];
}

void CpuBackend::gram_accumulate(const Tensor& x, Tensor& h) {
  check(x.dtype() == DType::F32 && x.rank() >= 1, "cpu gram_accumulate: x must be F32, got {}", dtype_name(x.dtype()));
  const int64_t k = x.dim(-1);
  check(h.dtype() == DType::F32 && h.numel() == k * k, "cpu gram_accumulate: h must be F32 [{}, {}], got {} {}", k, k,
        dtype_name(h.dtype()), shape_str(h.shape()));
  cpu_gram_accumulate(x.data<float>(), k == 0 ? 0 : x.numel() / k, k, h.data<float>());
}

void CpuBackend::gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cpu_gemm_f32(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

bool CpuBackend::cholesky_inverse_upper(double* h, int64_t n) { return cpu_cholesky_inverse_upper(h, n); }

void CpuBackend::zero(Tensor& t) {
  char* p = static_cast<char*>(t.data());
  parallel_for(int64_t(t.nbytes()), 1 << 20, [&](int64_t a, int64_t b) { std::memset(p + a, 0, size_t(b - a)); });
}

void CpuBackend::symmetric_scaled(const Tensor& upper, double f, Tensor& out) {
  const int64_t k = upper.rank() == 2 ? upper.dim(0) : -1;
  check(upper.dtype() == DType::F32 && k >= 0 && upper.dim(1) == k, "cpu symmetric_scaled: the sums must be F32 [k, k], "
        "got {} {}", dtype_name(upper.dtype()), shape_str(upper.shape()));
  check(out.dtype() == DType::F32 && out.numel() == k * k, "cpu symmetric_scaled: the output must be F32 [{}, {}], got "
        "{} {}", k, k, dtype_name(out.dtype()), shape_str(out.shape()));
  cpu_symmetric_scaled(upper.data<float>(), k, f, out.data<float>());
}

double CpuBackend::dot_f64(const Tensor& a, const Tensor& b) {
  check(a.dtype() == DType::F32 && b.dtype() == DType::F32 && a.numel() == b.numel(),
        "cpu dot_f64: expected two F32 tensors of one size, got {} {} and {} {}", dtype_name(a.dtype()),
        shape_str(a.shape()), dtype_name(b.dtype()), shape_str(b.shape()));
  return cpu_dot_f64(a.data<float>(), b.data<float>(), a.numel());
}

void CpuBackend::scale_columns(const Tensor& x, const Tensor& mul, Tensor& out) {
  const int64_t k = mul.numel();
  check(x.dtype() == DType::F32 && mul.dtype() == DType::F32 && out.dtype() == DType::F32 && x.rank() >= 1 &&
            x.dim(-1) == k && out.numel() == x.numel(),
        "cpu scale_columns: x {} {}, factors {} {} and output {} {} should be F32 [T, K], [K] and [T, K]",
        dtype_name(x.dtype()), shape_str(x.shape()), dtype_name(mul.dtype()), shape_str(mul.shape()),
        dtype_name(out.dtype()), shape_str(out.shape()));
  const float* in = x.data<float>();
  const float* m = mul.data<float>();
  float* o = out.data<float>();
  parallel_for(k == 0 ? 0 : x.numel() / k, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < k; ++c) o[r * k + c] = in[r * k + c] * m[c];
  });
}

namespace {

// quant/methods/rtn.cc params_from_range, mirrored (the CUDA kernel in quant_ops.cu mirrors it too; the tests hold
// both to the host's fake_quant_scaled bit for bit). False when the scale does not fit fp16.
bool fq_params(float lo, float hi, const FakeQuantGrid& g, float* scale, int* zero) {
  const int maxq = (1 << g.bits) - 1;
  auto f16 = [](float v, float* out) {
    *out = f16_to_f32(f32_to_f16(std::max(v, 1e-6f)));
    return std::isfinite(*out);
  };
  if (g.include_zero) lo = std::min(lo, 0.0f), hi = std::max(hi, 0.0f);
  if (g.sym) {
    float amax = std::max(std::fabs(lo), std::fabs(hi));
    if (amax == 0.0f) amax = 1.0f;
    *zero = (maxq + 1) / 2;
    return f16(2.0f * amax / float(maxq), scale);
  }
  float span = hi - lo;
  if (span <= 0.0f) {
    if (hi == 0.0f) lo = -1.0f, hi = 1.0f;
    else lo = std::min(lo, 0.0f), hi = std::max(hi, 0.0f);
    span = hi - lo;
  }
  if (!f16(span / float(maxq), scale)) return false;
  *zero = int(std::clamp(std::nearbyint(-lo / *scale), 0.0f, float(maxq)));
  if (*zero < g.min_zero) {
    *zero = g.min_zero;
    return f16(std::max(hi, 0.0f) / float(maxq - g.min_zero), scale);
  }
  return true;
}

}  // namespace

void CpuBackend::fake_quant(const Tensor& w, const Tensor& s, const FakeQuantGrid& g, bool minus_w, Tensor& out) {
  check(w.dtype() == DType::F32 && w.rank() == 2, "cpu fake_quant: the weight must be F32 [n, k], got {} {}",
        dtype_name(w.dtype()), shape_str(w.shape()));
  const int64_t n = w.dim(0), k = w.dim(1), gs = g.group_size;
  check(gs > 0 && k % gs == 0, "cpu fake_quant: group size {} does not divide in_features {}", gs, k);
  check(!s.defined() || (s.dtype() == DType::F32 && s.numel() == k), "cpu fake_quant: the scales must be F32 [{}]", k);
  check(out.dtype() == DType::F32 && out.numel() == n * k, "cpu fake_quant: the output must be F32 [{}, {}], got {} {}",
        n, k, dtype_name(out.dtype()), shape_str(out.shape()));
  const int maxq = (1 << g.bits) - 1;
  const float* p = w.data<float>();
  const float* sc = s.defined() ? s.data<float>() : nullptr;
  float* o = out.data<float>();
  std::atomic<bool> ok{true};
  parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> v(static_cast<size_t>(gs));
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t g0 = 0; g0 < k; g0 += gs) {
        float lo = 0, hi = 0;
        for (int64_t i = 0; i < gs; ++i) {
          const float x = sc ? p[r * k + g0 + i] * sc[g0 + i] : p[r * k + g0 + i];
          v[size_t(i)] = x;
          lo = i == 0 ? x : std::min(lo, x), hi = i == 0 ? x : std::max(hi, x);
        }
        float scale = 1;
        int zero = 0;
        if (!fq_params(lo, hi, g, &scale, &zero)) {
          ok = false;
          return;
        }
        for (int64_t i = 0; i < gs; ++i) {
          const float q = std::clamp(std::nearbyint(v[size_t(i)] / scale) + float(zero), 0.0f, float(maxq));
          float f = scale * float(int(q) - zero);
          if (sc) f = f / sc[g0 + i];
          o[r * k + g0 + i] = minus_w ? f - p[r * k + g0 + i] : f;
        }
      }
  });
  check(ok.load(), "cpu fake_quant: a quantization scale does not fit in fp16 (weights too large)");
}

void CpuBackend::column_abs_sum(const Tensor& x, std::vector<double>& sum) {
  check(x.dtype() == DType::F32 && x.rank() >= 1, "cpu column_abs_sum: x must be F32, got {}", dtype_name(x.dtype()));
  const int64_t k = x.dim(-1);
  check(int64_t(sum.size()) == k, "cpu column_abs_sum: {} sums for {} channels", sum.size(), k);
  cpu_column_abs_sum(x.data<float>(), k == 0 ? 0 : x.numel() / k, k, sum.data());
}

}  // namespace dlx
