// Float re-computation of a decoder layer's sub-blocks with candidate weights, on the model's backend, for
// AWQ's scale search (the "block output" whose error a candidate is judged by). Same math as Model::run_layer.
// Weights and activations are host F32 tensors; outputs come back as host F32.
#pragma once
#include <cstddef>
#include "core/tensor.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/model.h"

namespace dlx {

struct AttnBlockWeights {
  Tensor wq, wk, wv, wo;  // [out, in]
  Tensor bq, bk, bv;      // [out] or undefined
  Tensor q_norm, k_norm;  // SDAR's per-head norms [head_dim] in the backend's memory (the model's), or undefined
};

// o_proj(attention(rope(q(x)), rope(k(x)), v(x))) for x = the attention norm's output [T, H] of one calibration
// chunk (`st` gives its batch shape, positions and key mask); q and k normalized per head first when the weights
// have q/k norms, attention block-causal for block-diffusion configs, as in Model::run_layer.
Tensor attention_block(Backend& be, const ModelConfig& c, const ForwardState& st, const Tensor& x,
                       const AttnBlockWeights& w);

// down(silu(gate(x)) * up(x)) for x = the MLP norm's output [T, H].
Tensor mlp_block(Backend& be, const Tensor& x, const Tensor& wg, const Tensor& wu, const Tensor& wd);

// Sum of squared differences of two F32 host tensors of the same size.
double sum_sq_diff(const Tensor& a, const Tensor& b);

}  // namespace dlx
