// Runs one decoder layer of a model over the calibration batch, as often as a quantizer needs, always from the
// same input: the hidden states that left the previous (already quantized) layer. The batch is split into
// chunks (ForwardStates of a few thousand tokens) so that attention buffers stay small
// and AWQ can run its block searches on a subset of whole chunks.
#pragma once
#include <cstddef>
#include <vector>

#include "model/model.h"

namespace dlx {

class LayerRunner {
 public:
  // ids: I64 [B, L]; chunks of at most `chunk_tokens` tokens (whole sequences).
  LayerRunner(Model& model, const Tensor& ids, int64_t chunk_tokens = 1024);

  // Snapshots the current hidden states as the input of `layer`.
  void begin(int64_t layer);
  // Runs the layer on every chunk from the snapshot; `observer` sees each linear's input. Afterwards the chunks
  // hold the layer's output (with whatever linears the model has now), ready for the next begin().
  void run(const LinearObserver& observer = {});

  Model& model() { return model_; }
  int64_t layer() const { return layer_; }
  int64_t tokens() const { return tokens_; }
  const std::vector<ForwardState>& chunks() const { return chunks_; }
  // The layer's input per chunk [T_c, H], in the backend's memory and activation dtype.
  const std::vector<Tensor>& inputs() const { return inputs_; }

 private:
  Model& model_;
  std::vector<ForwardState> chunks_;
  std::vector<Tensor> inputs_;
  int64_t layer_ = -1, tokens_ = 0;
};

}  // namespace dlx
