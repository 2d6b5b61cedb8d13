#include "quant/running_linear.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/thread_pool.h"
#include "formats/packed_convert.h"
#include "formats/packed_linear.h"
#include "quant/host_ops.h"

namespace dlx {

namespace {

class InputScaledLinear : public Linear {
 public:
  InputScaledLinear(Backend& be, std::unique_ptr<Linear> inner, std::vector<float> mul)
      : Linear(inner->spec()), inner_(std::move(inner)), mul_(std::move(mul)) {
    mul_dev_ = be.upload(host_view(DType::F32, {int64_t(mul_.size())}, mul_.data()));
  }
  LinearInfo info() const override { return inner_->info(); }
  HeldTensors held() const override { return inner_->held(); }
  void forward(Backend& be, const Tensor& x, Tensor& y) const override {
    // Into a new tensor (x is read by the other linears too), where x is: the same values as through host F32
    // (an fp32 product rounded once to the activation dtype), without the round trip.
    Tensor xs = backend_uninit(be, x.dtype(), x.shape());
    be.scale_columns(x, mul_dev_, xs);
    inner_->forward(be, xs, y);
  }
  Tensor dequantize() const override {
    Tensor w = inner_->dequantize();
    scale_columns(w.data<float>(), w.data<float>(), w.dim(0));
    return w;
  }

 private:
  // out[r][c] = in[r][c] * mul[c] over `rows` rows (in == out allowed).
  void scale_columns(const float* in, float* out, int64_t rows) const {
    const int64_t k = int64_t(mul_.size());
    const float* m = mul_.data();
    parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < k; ++c) out[r * k + c] = in[r * k + c] * m[c];
    });
  }
  std::unique_ptr<Linear> inner_;
  std::vector<float> mul_;
  Tensor mul_dev_;  // mul_ in the backend's memory (on the CPU a view of mul_)
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
  PackedWeight w = build_packed_weight_from_rows(
      codes.bits, N, K, codes.group_size, perm, [&](int64_t n) { return codes.q.data() + n * K; },
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
  return std::make_unique<InputScaledLinear>(be, std::move(lin), std::move(input_mul));
}

}  // namespace dlx
