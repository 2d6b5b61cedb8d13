#pragma once
#include "kernels/backend.h"

namespace dlx {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::CPU; }
  std::string name() const override;
  DType act_dtype() const override { return DType::F32; }
  Tensor empty(DType dtype, Shape shape) override;
  Tensor upload(const Tensor& host) override;
  Tensor to_host_f32(const Tensor& t) override;
  Tensor from_host_f32(const Tensor& host) override;
  void embedding(const Tensor& ids, const Tensor& table, Tensor& out) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override;
  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override;
  void matmul_packed(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y) override;
  void rope(Tensor& x, const Tensor& positions, double theta) override;
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, Tensor& out) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void add(Tensor& x, const Tensor& y) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void kv_quantize_fp8(const Tensor& src, int64_t heads, Tensor& dst, Tensor& scales) override;
  void kv_dequantize_fp8(const Tensor& src, const Tensor& scales, int64_t heads, Tensor& dst) override;
  void gram_accumulate(const Tensor& x, Tensor& h) override;
  void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                const float* b, int64_t ldb, float beta, float* c, int64_t ldc) override;
  bool cholesky_inverse_upper(double* h, int64_t n) override;
  void zero(Tensor& t) override;
  void symmetric_scaled(const Tensor& upper, double f, Tensor& out) override;
  double dot_f64(const Tensor& a, const Tensor& b) override;
  void column_abs_sum(const Tensor& x, std::vector<double>& sum) override;
  void scale_columns(const Tensor& x, const Tensor& mul, Tensor& out) override;
  void fake_quant(const Tensor& w, const Tensor& s, const FakeQuantGrid& grid, bool minus_w, Tensor& out) override;
};

}  // namespace dlx
