// AWQ (Lin et al. 2023, as AutoAWQ implements it): protect the weights that meet large activations by
// scaling input channel c of a group of linears by s[c] before quantization and dividing the same channel of
// their input by s[c] (folded into the operation that produces the input: an RMSNorm weight or the output
// rows of a preceding linear), then clip each group's range, then quantize with zero points.
//
//   x_mean[c] = mean over calibration tokens of |x[:, c]|
//   w_mean[c] = mean over output rows of |W[n, c]| / max_{c' in c's group} |W[n, c']|   (linears of the group
//               concatenated)
//   candidate r = 0, 1/20, ..., 19/20:  s = max(x_mean^r / (w_mean^(1-r) + 1e-4), 1e-4),  s /= sqrt(max s * min s)
//   the block's output with every linear replaced by Q(W diag(s)) diag(1/s) is compared to the float output;
//   the candidate with the smallest mean squared error wins. diffulex also evaluates s = 1 (plain RTN) and keeps
//   it when no candidate beats it, so AWQ is never worse than RTN on the calibration block loss.
//   clip: per output row and group, max |w| shrunk by 0, 5, ..., 45 %, the one with the smallest squared error
//   of the group's partial output, measured exactly over all calibration tokens with the group's block of H
//   (AutoAWQ samples 512 tokens); q_proj and k_proj are not clipped (AutoAWQ's rule).
#pragma once
#include <cstddef>
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "core/tensor.h"
#include "formats/quant_codes.h"
#include "quant/methods/hessian.h"
#include "quant/methods/rtn.h"

namespace dlx {

// Adds |x[t, c]| over the rows of x (F32 host, [rows, k]) into sum[c] (fp64); returns the rows added.
int64_t add_abs_columns(const Tensor& x, std::vector<double>& sum);
// sum / rows as F32.
std::vector<float> mean_from_sums(const std::vector<double>& sum, int64_t rows);
// mean |x[:, c]| over the rows of every tensor (F32 host, [rows, k]).
std::vector<float> mean_abs_columns(const std::vector<Tensor>& xs);

// AutoAWQ's w_mean over the linears (F32 host [n_i, k] each) with groups of `group_size` inputs.
std::vector<float> awq_weight_mean(const std::vector<const Tensor*>& ws, int64_t group_size);

// Candidate r of the grid (see above); r < 0 gives all ones.
std::vector<float> awq_candidate_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, double r);

struct ScaleSearch {
  std::vector<float> scales;
  double ratio = -1;        // the winning grid ratio, -1 when s = 1 won
  double loss = 0;          // its block loss
  double identity_loss = 0; // the block loss of s = 1 (RTN without clipping)
  std::vector<double> grid_losses;  // the block loss of every grid ratio g / n_grid, in grid order
};

// Evaluates s = 1 and the n_grid candidates with `loss` (block output MSE for the given scales). With `pinned`
// (a ratio in [0, 1), or -1 for s = 1) there is no search: s = 1 and that candidate are evaluated and the pinned
// one is kept (grid_losses stays empty); see QuantSettings::awq_ratios.
ScaleSearch awq_search_scales(const std::vector<float>& x_mean, const std::vector<float>& w_mean, int n_grid,
                              const std::function<double(const std::vector<float>&)>& loss,
                              std::optional<double> pinned = std::nullopt);

// w diag(s): columns scaled (F32 [n, k]); row_div (optional, size n) divides rows as well.
Tensor scale_weight(const Tensor& w, const std::vector<float>& col_mul, const std::vector<float>* row_div = nullptr);

// Q(w diag(s)) diag(1/s) with RTN on the scheme: the weight the block sees for candidate s (F32 [n, k]).
Tensor fake_quant_scaled(const Tensor& w, const std::vector<float>& s, const QuantScheme& scheme);

// Clip search on w (F32 [n, k], already scaled) with the Hessian of its (scaled) inputs: the best max |w| per
// (row, group), [n, groups] row-major. Per group, the weight errors of every row and shrink step form one matrix
// D [steps * n, gs] and the backend multiplies it by the group's diagonal block of H (one gemm_f32 per group).
std::vector<float> awq_search_clip(const Tensor& w, const OutputError& h, const QuantScheme& scheme, int n_grid = 20,
                                   double max_shrink = 0.5);

// Quantizes w with each (row, group) clamped to [-clip, clip] first (clip empty: no clamping).
QuantCodes quantize_clipped(const Tensor& w, const std::vector<float>& clip, const QuantScheme& scheme);

// The four scale vectors of one decoder layer (see layer_awq.cc for the pairs).
struct AwqLayerScales {
  std::vector<float> norm_qkv;      // [hidden]: attention norm -> q, k, v
  std::vector<float> v_o;           // [num_kv_heads * head_dim]: v's output channels, tied over query heads
  std::vector<float> norm_gate_up;  // [hidden]: MLP norm -> gate, up
  std::vector<float> up_down;       // [intermediate]: up's output channels -> down's inputs
};

// o_proj's input scales from v's: channel (head h, dim d) gets v channel (h / (Hq / Hkv), d).
std::vector<float> expand_kv_scales(const std::vector<float>& sv, int64_t num_heads, int64_t num_kv_heads,
                                    int64_t head_dim);

// A layer with its AWQ scales folded in, before quantization. Mathematically the same layer: each linear's input
// columns are multiplied by s and whatever produces that input divides it by s.
struct AwqFolded {
  std::array<Tensor, 7> w;                        // F32 [out, in] by LinearRole: W diag(s), v and up rows / s too
  Tensor v_bias;                                  // v's bias / s_vo (F32), or undefined
  std::vector<float> attn_norm, ffn_norm;         // the norms / s, rounded to the dtype they will be stored in
  std::array<std::vector<float>, 4> input_scale;  // by input (q/k/v, o, gate/up, down): the s each input is
                                                  // divided by; for the norms the one the rounded norm really
                                                  // applies (norm / stored), so that the folding stays exact
};

// w: the layer's float weights by LinearRole; v_bias F32 or undefined; norm weights as stored in the source.
AwqFolded awq_fold(const std::array<Tensor, 7>& w, const Tensor& v_bias, const std::vector<float>& attn_norm,
                   const std::vector<float>& ffn_norm, const AwqLayerScales& s, int64_t num_heads,
                   int64_t num_kv_heads, int64_t head_dim, DType norm_dtype);

}  // namespace dlx
