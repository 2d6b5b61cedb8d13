// Linear layers and the table of linear kinds.
//
// A Linear computes y = x W^T + b for W of shape [out_features, in_features] on a backend. Each *kind*
// (dense bf16/fp16, gptq_w4a16, awq_w4a16, ...) is one row of linear_kinds(): it knows how to recognise its
// tensors in a checkpoint, validate them against the layer's shape, and build a Linear. The model code only
// asks the table; adding a kind never touches it.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/backend.h"

namespace dlx {

class TensorStore;
struct QuantConfig;

// What the model expects of one linear layer.
struct LinearSpec {
  std::string prefix;  // tensor name prefix, e.g. "model.layers.0.self_attn.q_proj"
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = false;  // whether the architecture has a bias here (a present bias is always used)
};

struct LinearInfo {
  std::string kind;      // row name in the kinds table
  int bits = 16;
  int64_t group_size = 0;  // 0 for dense
  bool act_order = false;
  bool has_bias = false;
  size_t bytes = 0;       // memory held by the layer's weights
};

// The tensors a Linear holds in its backend's memory now (Model::held_weight_bytes measures them).
struct HeldTensors {
  std::vector<Tensor> tensors;  // weight and bias, or a packed weight's codes, scales, zeros (and permutation)
  bool packed = false;          // a packed low-bit weight
};

class Linear {
 public:
  virtual ~Linear() = default;
  virtual LinearInfo info() const = 0;
  // Views into a fused weight are included (a fused weight's views together cover it once); a layer whose weight
  // lives only in a fused Linear and was never run alone holds nothing.
  virtual HeldTensors held() const = 0;
  virtual void forward(Backend& be, const Tensor& x, Tensor& y) const = 0;
  // A fused [gate; up] weight (out_features = 2I: gate rows, then up) with SwiGLU: out [M, I] = silu(gate) * up, as
  // forward() and Backend::silu_mul_fused compute it. Generic: exactly those two; a packed weight without bias lets
  // the backend fuse them (Backend::matmul_packed_swiglu: the same up to the product's fp32 summation order).
  virtual void forward_swiglu(Backend& be, const Tensor& x, Tensor& out) const;
  // The effective weight as F32 [out, in] on the host (tests, debugging, --dequant-cache).
  virtual Tensor dequantize() const = 0;
  int64_t in_features() const { return spec_.in_features; }
  int64_t out_features() const { return spec_.out_features; }
  const LinearSpec& spec() const { return spec_; }

 protected:
  explicit Linear(LinearSpec spec) : spec_(std::move(spec)) {}
  LinearSpec spec_;
};

struct LoadContext {
  const TensorStore& store;
  const QuantConfig* quant;  // null for a dense checkpoint
  Backend& backend;
  bool dequant_cache = false;  // keep a dense dequantized copy instead of the packed weight
  bool awq_plain_order = false;  // AWQ tensors with sequential nibbles (the later Diffulex export), see formats/awq.h
};

struct LinearKind {
  std::string name;  // "bf16", "gptq_w4a16", ...
  std::string family;  // what --linear-*-weight-dtype calls it: "bf16", "gptq", "awq"
  // True when the checkpoint holds this kind's tensors for spec.prefix (and, where it matters, ctx.quant agrees).
  std::function<bool(const LoadContext&, const LinearSpec&)> matches;
  // Builds the layer; throws Error naming the tensor on any mismatch.
  std::function<std::unique_ptr<Linear>(const LoadContext&, const LinearSpec&)> load;
};

// The table, in detection order (quantized kinds before dense).
const std::vector<LinearKind>& linear_kinds();

// Finds the kind whose tensors are present for `spec` and loads it. `family` ("" = whatever the checkpoint
// holds, else "bf16" | "gptq" | "awq") forces a family and fails clearly when the checkpoint disagrees.
std::unique_ptr<Linear> load_linear(const LoadContext& ctx, const LinearSpec& spec, const std::string& family = "");

// Dense weights (bf16, fp16 or f32 as stored; mmap'd on the CPU).
std::unique_ptr<Linear> make_dense_linear(LinearSpec spec, Tensor weight, Tensor bias, Backend& be);
// A dense layer over a device weight (and bias) that is already there, e.g. rows of a fused gate/up or q/k/v
// weight; `host_weight` / `host_bias` (the checkpoint's tensors) still answer info() and dequantize().
std::unique_ptr<Linear> make_dense_linear_view(LinearSpec spec, Tensor host_weight, Tensor device_weight,
                                               Tensor host_bias = {}, Tensor device_bias = {});

}  // namespace dlx
