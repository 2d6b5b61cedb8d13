// The kernel interface. The model code calls only these ops; each backend (cpu/ now, cuda/ later)
// implements them for its own memory. Activations use the backend's act_dtype() (F32 on the CPU);
// weights arrive as stored in the checkpoint (bf16/fp16/f32 dense, or a PackedWeight for quantized kinds).
//
// Shapes (T = tokens = B*L, H = hidden, D = head dim):
//   embedding  ids I64 [T] (host) , table [V, H]            -> out [T, H]
//   rmsnorm    x [T, H], weight [H]                         -> out [T, H]   (may alias x)
//   matmul     x [M, K], w [N, K] dense, bias [N] or none   -> y [M, N]     y = x w^T + b
//   matmul_packed  same with a PackedWeight                  -> y [M, N]
//   rope       x [T, heads, D] in place, positions I64 [T] (host), rotate-half layout
//   attention  q [B, Lq, Hq, D], k/v [B, S, Hkv, D], key_mask U8 [B, S] (1 = attend) or none -> out [B, Lq, Hq, D]
//              bidirectional (no causal mask); Hq must be a multiple of Hkv (grouped-query attention)
//   silu_mul   gate [T, I], up [T, I]                       -> out [T, I]   out = silu(gate) * up
//   add        x [..] += y [..]
//   copy       dst [..] = src [..]  (same dtype and element count; views made by slice_rows)
//   kv_quantize_fp8    src [N, heads*D] act -> dst F8_E4M3 [N, heads*D], scales F32 [N, heads]   (fp8 KV cache)
//                      per (n, head): scale = max|x| / 448 (0 for an all-zero head), dst = e4m3(x * (448 / max|x|)),
//                      round to nearest even, saturating
//   kv_dequantize_fp8  src F8_E4M3 [N, heads*D], scales F32 [N, heads] -> dst act [N, heads*D] = scale * float(src)
#pragma once
#include <memory>
#include <string>

#include "core/tensor.h"
#include "kernels/packed_weight.h"

namespace dlx {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual DType act_dtype() const = 0;

  // A buffer in this backend's memory (contents undefined).
  virtual Tensor empty(DType dtype, Shape shape) = 0;
  // A weight in this backend's memory: the CPU returns the (mmap'd) host tensor itself.
  virtual Tensor upload(const Tensor& host) = 0;
  // An activation copied to a host F32 tensor.
  virtual Tensor to_host_f32(const Tensor& t) = 0;
  // A host tensor (F32) copied into an activation buffer of act_dtype().
  virtual Tensor from_host_f32(const Tensor& host) = 0;

  virtual void embedding(const Tensor& ids, const Tensor& table, Tensor& out) = 0;
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  virtual void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) = 0;
  virtual void matmul_packed(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y) = 0;
  virtual void rope(Tensor& x, const Tensor& positions, double theta) = 0;
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, Tensor& out) = 0;
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  virtual void add(Tensor& x, const Tensor& y) = 0;
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  // fp8 KV cache (model.h KvCache::fp8).
  virtual void kv_quantize_fp8(const Tensor& src, int64_t heads, Tensor& dst, Tensor& scales) = 0;
  virtual void kv_dequantize_fp8(const Tensor& src, const Tensor& scales, int64_t heads, Tensor& dst) = 0;
};

// "cpu" (or "cuda" when built with CUDA). Throws Error listing the available backends otherwise.
std::unique_ptr<Backend> make_backend(const std::string& name);

}  // namespace dlx
