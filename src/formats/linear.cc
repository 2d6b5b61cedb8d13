#include "formats/linear.h"

#include "core/error.h"
#include "formats/quant_kinds.h"
#include "io/safetensors.h"

namespace dlx {

namespace {

// Dense weight as stored (bf16 / fp16 / f32), used in place on the CPU (mmap) or uploaded once.
class DenseLinear : public Linear {
 public:
  DenseLinear(LinearSpec spec, Tensor host_weight, Tensor host_bias, Backend& be)
      : Linear(std::move(spec)), host_weight_(std::move(host_weight)), host_bias_(std::move(host_bias)) {
    weight_ = be.upload(host_weight_);
    if (host_bias_.defined()) bias_ = be.upload(host_bias_);
  }
  // The device weight given (a view into a fused weight): nothing is uploaded.
  DenseLinear(LinearSpec spec, Tensor host_weight, Tensor device_weight, Tensor host_bias, Tensor device_bias)
      : Linear(std::move(spec)),
        host_weight_(std::move(host_weight)),
        host_bias_(std::move(host_bias)),
        weight_(std::move(device_weight)),
        bias_(std::move(device_bias)) {}

  LinearInfo info() const override {
    LinearInfo i;
    DType t = host_weight_.dtype();
    i.kind = t == DType::F32 ? "f32" : t == DType::F16 ? "fp16" : "bf16";
    i.bits = int(dtype_size(host_weight_.dtype()) * 8);
    i.has_bias = host_bias_.defined();
    i.bytes = host_weight_.nbytes() + (host_bias_.defined() ? host_bias_.nbytes() : 0);
    return i;
  }

  HeldTensors held() const override { return {{weight_, bias_}, false}; }

  void forward(Backend& be, const Tensor& x, Tensor& y) const override {
    be.matmul(x, weight_, bias_.defined() ? &bias_ : nullptr, y);
  }

  Tensor dequantize() const override {
    Tensor out = Tensor::zeros(DType::F32, {out_features(), in_features()});
    float* o = out.data<float>();
    for (int64_t i = 0; i < out.numel(); ++i) o[i] = load_as_f32(host_weight_.data(), host_weight_.dtype(), size_t(i));
    return out;
  }

 private:
  Tensor host_weight_, host_bias_;
  Tensor weight_, bias_;
};

void check_float_tensor(const TensorStore& store, const std::string& name, const Tensor& t, const Shape& want) {
  check(t.dtype() == DType::BF16 || t.dtype() == DType::F16 || t.dtype() == DType::F32,
        "{}: tensor '{}' has dtype {}, expected BF16, F16 or F32", store.file_of(name), name, dtype_name(t.dtype()));
  check(t.shape() == want, "{}: tensor '{}' has shape {}, expected {} from config.json", store.file_of(name), name,
        shape_str(t.shape()), shape_str(want));
}

LinearKind dense_kind() {
  LinearKind k;
  k.name = "bf16";
  k.family = "bf16";
  k.matches = [](const LoadContext& ctx, const LinearSpec& s) { return ctx.store.has(s.prefix + ".weight"); };
  k.load = [](const LoadContext& ctx, const LinearSpec& s) {
    std::string wn = s.prefix + ".weight", bn = s.prefix + ".bias";
    Tensor w = ctx.store.get(wn);
    check_float_tensor(ctx.store, wn, w, {s.out_features, s.in_features});
    Tensor b;
    if (ctx.store.has(bn)) {
      b = ctx.store.get(bn);
      check_float_tensor(ctx.store, bn, b, {s.out_features});
    } else {
      check(!s.bias, "checkpoint has no tensor '{}' (the architecture has a bias there)", bn);
    }
    return make_dense_linear(s, w, b, ctx.backend);
  };
  return k;
}

}  // namespace

std::unique_ptr<Linear> make_dense_linear(LinearSpec spec, Tensor weight, Tensor bias, Backend& be) {
  return std::make_unique<DenseLinear>(std::move(spec), std::move(weight), std::move(bias), be);
}

std::unique_ptr<Linear> make_dense_linear_view(LinearSpec spec, Tensor host_weight, Tensor device_weight,
                                               Tensor host_bias, Tensor device_bias) {
  check(host_weight.shape() == device_weight.shape(), "dense linear '{}': device weight {} does not match {}",
        spec.prefix, shape_str(device_weight.shape()), shape_str(host_weight.shape()));
  check(host_bias.defined() == device_bias.defined() &&
            (!host_bias.defined() || host_bias.numel() == device_bias.numel()),
        "dense linear '{}': device bias does not match the checkpoint's", spec.prefix);
  return std::make_unique<DenseLinear>(std::move(spec), std::move(host_weight), std::move(device_weight),
                                       std::move(host_bias), std::move(device_bias));
}

const std::vector<LinearKind>& linear_kinds() {
  static const std::vector<LinearKind> kinds = [] {
    std::vector<LinearKind> v;
    v.push_back(gptq_w4a16_kind());
    v.push_back(gptq_w8a16_kind());
    v.push_back(awq_w4a16_kind());
    v.push_back(diffulex_int8_gptq_kind());
    v.push_back(diffulex_int8_awq_kind());
    v.push_back(dense_kind());
    return v;
  }();
  return kinds;
}

void Linear::forward_swiglu(Backend& be, const Tensor& x, Tensor& out) const {
  check(x.rank() == 2 && out_features() % 2 == 0, "{}: SwiGLU over {} outputs (an even count: gate, then up)",
        spec_.prefix, out_features());
  Tensor y = be.empty(out.dtype(), {x.dim(0), out_features()});
  forward(be, x, y);
  be.silu_mul_fused(y, out);
}

std::unique_ptr<Linear> load_linear(const LoadContext& ctx, const LinearSpec& spec, const std::string& family) {
  std::string found;
  for (const auto& kind : linear_kinds()) {
    if (!kind.matches(ctx, spec)) continue;
    if (!family.empty() && kind.family != family) {
      if (found.empty()) found = kind.family;  // the first match is what the checkpoint holds
      continue;
    }
    return kind.load(ctx, spec);
  }
  if (!found.empty())
    fail("layer '{}' is stored as {} in the checkpoint but {} was requested", spec.prefix, found, family);
  fail("checkpoint has no weights for layer '{}' (looked for '{}.weight' and quantized tensors '{}.qweight')",
       spec.prefix, spec.prefix, spec.prefix);
}

}  // namespace dlx
