#include "quant/layer_runner.h"

#include <algorithm>

#include "core/error.h"
#include "quant/host_ops.h"
#include "quant/phase_times.h"

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
  Backend& be = model_.backend();
  for (auto& st : chunks_) {
    // A copy in the backend's own memory and dtype (the same values: no trip through host F32, which on a GPU cost
    // a download of every chunk here and an upload, with a host bf16 conversion, on every run).
    Tensor snap = backend_uninit(be, st.h.dtype(), st.h.shape());
    be.copy(st.h, snap);
    inputs_.push_back(snap);
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
  Backend& be = model_.backend();
  for (size_t c = 0; c < chunks_.size(); ++c) {
    // The layer adds into h in place: it gets a fresh copy of the snapshot.
    {
      PhaseTimes::Scope t(quant_phases(), "  layer input copy");
      Tensor h = backend_uninit(be, inputs_[c].dtype(), inputs_[c].shape());
      be.copy(inputs_[c], h);
      chunks_[c].h = h;
    }
    model_.run_layer(layer_, chunks_[c]);
  }
}

}  // namespace dlx
