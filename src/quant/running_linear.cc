#include "quant/running_linear.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "formats/packed_convert.h"
#include "formats/packed_linear.h"

namespace dlx {

namespace {

class InputScaledLinear : public Linear {
 public:
  InputScaledLinear(std::unique_ptr<Linear> inner, std::vector<float> mul)
      : Linear(inner->spec()), inner_(std::move(inner)), mul_(std::move(mul)) {}
  LinearInfo info() const override { return inner_->info(); }
  HeldTensors held() const override { return inner_->held(); }
  void forward(Backend& be, const Tensor& x, Tensor& y) const override {
    // A private copy: to_host_f32 may return x itself (CPU), which other linears still read.
    Tensor xh = be.to_host_f32(x);
    Tensor h = Tensor::from_data(DType::F32, xh.shape(), xh.data());
    const int64_t k = int64_t(mul_.size()), rows = h.numel() / k;
    float* p = h.data<float>();
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < k; ++c) p[r * k + c] *= mul_[size_t(c)];
    inner_->forward(be, be.from_host_f32(h), y);
  }
  Tensor dequantize() const override {
    Tensor w = inner_->dequantize();
    const int64_t n = w.dim(0), k = w.dim(1);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) w.data<float>()[r * k + c] *= mul_[size_t(c)];
    return w;
  }

 private:
  std::unique_ptr<Linear> inner_;
  std::vector<float> mul_;
};

}  // namespace

std::unique_ptr<Linear> make_running_linear(Backend& be, const TensorStore& store, LinearSpec spec,
                                            const QuantCodes& codes, Tensor bias, std::vector<float> input_mul,
                                            const std::string& kind) {
  check(codes.n == spec.out_features && codes.k == spec.in_features, "layer '{}': codes [{}, {}] for a [{}, {}] layer",
        spec.prefix, codes.n, codes.k, spec.out_features, spec.in_features);
  // Act-order: the kernel wants groups contiguous, so its columns are the inputs sorted (stably) by group.
  std::vector<int32_t> perm;
  if (!codes.g_idx.empty()) {
    perm.resize(size_t(codes.k));
    std::iota(perm.begin(), perm.end(), 0);
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int32_t a, int32_t b) { return codes.g_idx[size_t(a)] < codes.g_idx[size_t(b)]; });
  }
  const int64_t N = codes.n, K = codes.k;
  PackedWeight w = build_packed_weight(
      codes.bits, N, K, codes.group_size, perm, [&](int64_t k, int64_t n) { return codes.q[size_t(n * K + k)]; },
      [&](int64_t g, int64_t n) { return codes.scale[size_t(g * N + n)]; },
      [&](int64_t g, int64_t n) { return float(codes.zero[size_t(g * N + n)]); });
  LinearInfo info;
  info.kind = kind;
  info.bits = codes.bits;
  info.group_size = codes.group_size;
  info.act_order = !perm.empty();
  LoadContext ctx{store, nullptr, be, false};
  auto lin = make_packed_linear(ctx, std::move(spec), std::move(w), std::move(bias), std::move(info));
  if (input_mul.empty()) return lin;
  check(int64_t(input_mul.size()) == K, "running linear: {} input factors for in_features {}", input_mul.size(), K);
  return std::make_unique<InputScaledLinear>(std::move(lin), std::move(input_mul));
}

}  // namespace dlx
