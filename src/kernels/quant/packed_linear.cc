#include "kernels/quant/packed_linear.h"

#include "core/error.h"
#include "kernels/quant/packed_convert.h"

namespace dlx {

namespace {

class PackedLinear : public Linear {
 public:
  PackedLinear(LinearSpec spec, PackedWeight host, Tensor host_bias, LinearInfo info, Backend& be)
      : Linear(std::move(spec)), host_(std::move(host)), host_bias_(std::move(host_bias)), info_(std::move(info)) {
    dev_ = be.upload_packed(host_);
    if (host_bias_.defined()) bias_ = be.upload(host_bias_);
    info_.has_bias = host_bias_.defined();
    info_.bytes = host_.nbytes() + (host_bias_.defined() ? host_bias_.nbytes() : 0);
  }
  LinearInfo info() const override { return info_; }
  void forward(Backend& be, const Tensor& x, Tensor& y) const override {
    be.matmul_packed(x, dev_, bias_.defined() ? &bias_ : nullptr, y);
  }
  Tensor dequantize() const override { return dequantize_packed(host_); }

 private:
  PackedWeight host_, dev_;
  Tensor host_bias_, bias_;
  LinearInfo info_;
};

// --dequant-cache: the dequantized weight, F32 [out, in], multiplied densely.
class DequantCachedLinear : public Linear {
 public:
  DequantCachedLinear(LinearSpec spec, Tensor dense, Tensor host_bias, LinearInfo info, Backend& be)
      : Linear(std::move(spec)), host_(std::move(dense)), host_bias_(std::move(host_bias)), info_(std::move(info)) {
    weight_ = be.upload(host_);
    if (host_bias_.defined()) bias_ = be.upload(host_bias_);
    info_.has_bias = host_bias_.defined();
    info_.bytes = host_.nbytes() + (host_bias_.defined() ? host_bias_.nbytes() : 0);
  }
  LinearInfo info() const override { return info_; }
  void forward(Backend& be, const Tensor& x, Tensor& y) const override {
    be.matmul(x, weight_, bias_.defined() ? &bias_ : nullptr, y);
  }
  Tensor dequantize() const override { return host_; }

 private:
  Tensor host_, host_bias_, weight_, bias_;
  LinearInfo info_;
};

}  // namespace

std::unique_ptr<Linear> make_packed_linear(const LoadContext& ctx, LinearSpec spec, PackedWeight weight, Tensor bias,
                                           LinearInfo info) {
  check(weight.n == spec.out_features && weight.k == spec.in_features,
        "layer '{}': packed weight is [{}, {}], the model expects [{}, {}]", spec.prefix, weight.n, weight.k,
        spec.out_features, spec.in_features);
  if (ctx.dequant_cache)
    return std::make_unique<DequantCachedLinear>(std::move(spec), dequantize_packed(weight), std::move(bias),
                                                 std::move(info), ctx.backend);
  return std::make_unique<PackedLinear>(std::move(spec), std::move(weight), std::move(bias), std::move(info),
                                        ctx.backend);
}

}  // namespace dlx
