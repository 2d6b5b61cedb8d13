// The CPU backend: F32 activations in host memory, weights used in place (mmap'd) in their stored dtype.
#include "kernels/cpu/cpu_backend.h"

#include <cstring>

#include "core/error.h"
#include "kernels/cpu/cpu_features.h"
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

}  // namespace dlx
