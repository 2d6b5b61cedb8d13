#include "quant/layer_runner.h"

#include <algorithm>

#include "core/error.h"
#include "quant/host_ops.h"

namespace dlx {

LayerRunner::LayerRunner(Model& model, const Tensor& ids, int64_t chunk_tokens) : model_(model) {
  const int64_t B = ids.dim(0), L = ids.dim(1);
  const int64_t rows = std::max<int64_t>(1, chunk_tokens / L);
  for (int64_t b0 = 0; b0 < B; b0 += rows) {
    const int64_t b1 = std::min(B, b0 + rows);
    Tensor part = Tensor::from_data(DType::I64, {b1 - b0, L}, ids.data<int64_t>() + b0 * L);
    chunks_.push_back(model_.begin_forward(part));
  }
  tokens_ = B * L;
}

void LayerRunner::begin(int64_t layer) {
  layer_ = layer;
  inputs_.clear();
  for (auto& st : chunks_) {
    Tensor h = model_.backend().to_host_f32(st.h);
    // to_host_f32 may hand back the activation itself (CPU), or a device backend's staging memory: keep a private
    // copy (in parallel: with 64K calibration tokens of a 3584-wide model one snapshot is ~1 GB).
    inputs_.push_back(host_copy(h));
  }
}

void LayerRunner::run(const LinearObserver& observer) {
  check(layer_ >= 0, "LayerRunner::run before begin");
  // The observer watches the model for this run only (also when a layer throws).
  struct Watch {
    Model& m;
    ~Watch() { m.set_observer({}); }
  } watch{model_};
  model_.set_observer({observer, {}});
  for (size_t c = 0; c < chunks_.size(); ++c) {
    // from_host_f32 may alias its argument (CPU) and the layer adds into h in place: then give it a copy. An
    // upload (a device backend) is a copy already.
    Tensor h = model_.backend().from_host_f32(inputs_[c]);
    if (h.data() == inputs_[c].data()) h = model_.backend().from_host_f32(host_copy(inputs_[c]));
    chunks_[c].h = h;
    model_.run_layer(layer_, chunks_[c]);
  }
}

}  // namespace dlx
