#include "formats/packed_linear.h"

#include <cstring>
#include <mutex>

#include "core/error.h"
#include "formats/packed_convert.h"

namespace dlx {

namespace {

class PackedLinear : public Linear {
 public:
  // lazy: upload on the first forward (a layer that also lives in a fused weight may never run by itself).
  PackedLinear(LinearSpec spec, PackedWeight host, Tensor host_bias, LinearInfo info, Backend& be, bool lazy = false)
      : Linear(std::move(spec)), host_(std::move(host)), host_bias_(std::move(host_bias)), info_(std::move(info)) {
    if (!lazy) upload(be);
    info_.has_bias = host_bias_.defined();
    info_.bytes = host_.nbytes() + (host_bias_.defined() ? host_bias_.nbytes() : 0);
  }
  LinearInfo info() const override { return info_; }
  HeldTensors held() const override { return {{dev_.qweight, dev_.scales, dev_.zeros, dev_.perm, bias_}, true}; }
  void forward(Backend& be, const Tensor& x, Tensor& y) const override {
    std::call_once(uploaded_, [&] { upload(be); });
    be.matmul_packed(x, dev_, bias_.defined() ? &bias_ : nullptr, y);
  }
  void forward_swiglu(Backend& be, const Tensor& x, Tensor& out) const override {
    if (host_bias_.defined()) return Linear::forward_swiglu(be, x, out);
    std::call_once(uploaded_, [&] { upload(be); });
    be.matmul_packed_swiglu(x, dev_, out);
  }
  Tensor dequantize() const override { return dequantize_packed(host_); }
  const PackedWeight& host() const { return host_; }
  const Tensor& host_bias() const { return host_bias_; }

 private:
  void upload(Backend& be) const {
    dev_ = be.upload_packed(host_);
    if (host_bias_.defined()) bias_ = be.upload(host_bias_);
  }
  PackedWeight host_;
  Tensor host_bias_;
  LinearInfo info_;
  mutable std::once_flag uploaded_;
  mutable PackedWeight dev_;
  mutable Tensor bias_;
};

bool same_perm(const PackedWeight& a, const PackedWeight& b) {
  if (a.perm.defined() != b.perm.defined()) return false;
  return !a.perm.defined() || std::memcmp(a.perm.data(), b.perm.data(), a.perm.nbytes()) == 0;
}

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
  HeldTensors held() const override { return {{weight_, bias_}, false}; }
  void forward(Backend& be, const Tensor& x, Tensor& y) const override {
    be.matmul(x, weight_, bias_.defined() ? &bias_ : nullptr, y);
  }
  Tensor dequantize() const override { return host_; }

 private:
  Tensor host_, host_bias_, weight_, bias_;
  LinearInfo info_;
};

}  // namespace

std::unique_ptr<Linear> fuse_packed_linears(const std::vector<std::unique_ptr<Linear>*>& parts, Backend& be) {
  std::vector<const PackedLinear*> p;
  for (auto* part : parts) p.push_back(dynamic_cast<const PackedLinear*>(part->get()));
  for (const PackedLinear* q : p) {
    if (!q) return nullptr;
    const PackedWeight &a = q->host(), &b = p[0]->host();
    if (a.bits != b.bits || a.k != b.k || a.group_size != b.group_size || !same_perm(a, b) ||
        q->host_bias().defined() != p[0]->host_bias().defined())
      return nullptr;
  }
  PackedWeight w = p[0]->host();
  std::vector<Tensor> qw, sc, ze;
  Tensor bias;
  for (const PackedLinear* q : p) qw.push_back(q->host().qweight), sc.push_back(q->host().scales), ze.push_back(q->host().zeros);
  w.qweight = Tensor::stack_rows(qw);
  w.scales = Tensor::stack_rows(sc);
  w.zeros = Tensor::stack_rows(ze);
  w.n = w.qweight.dim(0);
  if (p[0]->host_bias().defined()) {
    bias = Tensor::zeros(DType::F32, {w.n});
    int64_t at = 0;
    for (const PackedLinear* q : p) {
      const Tensor& b = q->host_bias();
      for (int64_t i = 0; i < b.numel(); ++i) bias.data<float>()[at + i] = load_as_f32(b.data(), b.dtype(), size_t(i));
      at += b.numel();
    }
  }
  LinearSpec spec = p[0]->spec();
  spec.prefix += " (fused)";
  spec.out_features = w.n;
  LinearInfo info = p[0]->info();
  auto fused = std::make_unique<PackedLinear>(std::move(spec), std::move(w), std::move(bias), std::move(info), be);
  // The parts keep their host weights (dequantize, inspect, the quantizer) and give their device copies back.
  for (size_t i = 0; i < parts.size(); ++i)
    *parts[i] = std::make_unique<PackedLinear>(p[i]->spec(), p[i]->host(), p[i]->host_bias(), p[i]->info(), be, true);
  return fused;
}

std::unique_ptr<Linear> make_packed_linear(const LoadContext& ctx, LinearSpec spec, PackedWeight weight, Tensor bias,
                                           LinearInfo info) {
  check(weight.n == spec.out_features && weight.k == spec.in_features,
        "layer '{}': packed weight is [{}, {}], the model expects [{}, {}]", spec.prefix, weight.n, weight.k,
        spec.out_features, spec.in_features);
  check(!bias.defined() || bias.device() == Device::CPU,
        "layer '{}': a packed layer's bias must be a host tensor (it keeps its host weights)", spec.prefix);
  if (ctx.dequant_cache)
    return std::make_unique<DequantCachedLinear>(std::move(spec), dequantize_packed(weight), std::move(bias),
                                                 std::move(info), ctx.backend);
  return std::make_unique<PackedLinear>(std::move(spec), std::move(weight), std::move(bias), std::move(info),
                                        ctx.backend);
}

}  // namespace dlx
