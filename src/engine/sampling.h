// Helpers shared by the diffusion samplers (dream_sampler, llada_sampler): operations on one row of logits
// over the vocabulary (softmax, top-k / top-p filtering, categorical and Gumbel sampling, confidence
// measures), the choice of which masked positions to reveal in a step, and stop-token truncation.
// The row functions keep no state, so callers run positions in parallel.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "core/rng.h"
#include "kernels/row_sampling.h"

namespace dlx {

// ---- The samplers' view of the model ----

// Returns logits F32 [B, L, V] (host) for token ids I64 [B, L]; `key_mask` U8 [B, L] (1 = real token, 0 = left
// padding) may be undefined (all valid). Raw model logits: the Dream sampler applies Dream's shift itself.
using LogitsFn = std::function<Tensor(const Tensor& ids, const Tensor& key_mask)>;
// The same, computing only the rows the sampler reads: `rows` lists flat indices b * L + l into `ids`
// (ascending, distinct) and the result is F32 [rows.size(), V] in that order (the shape of
// Model::forward(ids, key_mask, rows)). Saves the LM head on rows whose logits would be thrown away.
using RowLogitsFn =
    std::function<Tensor(const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& rows)>;
// Computes the logits of the rows that `draws` name (flat indices b * L + l into `ids`, RowDraw::row and, with
// CFG, RowDraw::uncond_row) and returns one choice per draw (kernels/row_sampling.h), wherever the logits live:
// with backend_row_sampler the logits never leave the backend and only the choices come back to the host.
using RowSampleFn = std::function<std::vector<TokenChoice>(const Tensor& ids, const Tensor& key_mask,
                                                           const RowSampling& how, const std::vector<RowDraw>& draws)>;
// Logits in a backend's memory for the listed flat rows (ascending, distinct): [rows.size(), V] of the backend's
// activation dtype (Model::forward_device).
using DeviceRowLogitsFn =
    std::function<Tensor(const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& rows)>;
// A RowSampleFn that asks `logits` for the distinct rows the draws name and runs be.sample_rows on the result.
RowSampleFn backend_row_sampler(class Backend& be, DeviceRowLogitsFn logits);
// Called after each step with (index of the step just done, 0-based; total steps; tokens revealed so far over
// all rows; the canvas I64 [B, L] after the step, prompt included, [MASK] where nothing is revealed yet). In
// threshold / tokens_per_step modes `total` is an upper bound and the loop may end earlier. A revealed position
// never changes again, so the canvas tells which text is final (the server streams it, docs/SERVER.md).
using StepCallback = std::function<void(int step, int total, int64_t revealed, const Tensor& canvas)>;

// The (row, position) words of a random draw's key. By default the batch row and the canvas position. With
// independent rows (batched serving), every row uses row 0 and positions counted back from the end of the
// canvas (prompts are left-padded, so the generated region lines up at the end): a request then draws the
// same numbers in any batch and equals its solo run with the same seed.
struct DrawKey {
  uint64_t row, pos;
};
inline DrawKey draw_key(bool independent_rows, int64_t row, int64_t pos, int64_t canvas_len) {
  return independent_rows ? DrawKey{0, uint64_t(canvas_len - pos)} : DrawKey{uint64_t(row), uint64_t(pos)};
}

// Logits of some rows of a canvas, whichever callback produced them.
class LogitRows {
 public:
  // Checks that `logits` is host F32 [B, L, V] for `ids` [B, L] (every row present).
  static LogitRows all(Tensor logits, const Tensor& ids);
  // Checks that `logits` is host F32 [rows.size(), V] (the listed flat rows of `ids`, ascending).
  static LogitRows some(Tensor logits, const Tensor& ids, std::vector<int64_t> rows);
  int64_t vocab() const { return vocab_; }
  // Logits of flat row b * L + l; it must be one of the rows asked for.
  const float* row(int64_t flat) const;

 private:
  Tensor data_;
  std::vector<int64_t> rows_;  // empty: data_ holds every row
  int64_t vocab_ = 0;
};

// Asks for the logits of `rows` (flat, any order, repeats allowed) of `ids` through whichever callback is set.
struct LogitsSource {
  LogitsFn all;
  RowLogitsFn rows;
  RowSampleFn sample;  // when set, choose() calls it and the logits never reach the sampler
  LogitRows fetch(const Tensor& ids, const Tensor& key_mask, std::vector<int64_t> wanted) const;
  // One choice per draw (draw rows are flat indices into `ids`): through `sample`, or the host logits of
  // all / rows and sample_rows_host. The samplers' only way to turn logits into tokens.
  std::vector<TokenChoice> choose(const Tensor& ids, const Tensor& key_mask, const RowSampling& how,
                                  const std::vector<RowDraw>& draws) const;
};

// The canvas: I64 [B, P + new_tokens] = prompt followed by new_tokens copies of mask_id.
Tensor make_canvas(const Tensor& prompt_ids, int64_t new_tokens, int64_t mask_id);
// key_mask for the canvas: prompt_mask (U8 [B, P]) followed by ones; undefined when prompt_mask is.
Tensor extend_key_mask(const Tensor& prompt_mask, int64_t batch, int64_t prompt_len, int64_t total_len);

// ---- Choosing which masked positions to reveal in one step of one row ----

struct Proposal {
  int64_t pos = 0;        // position in the sequence
  int64_t token = 0;      // token that would be written there
  double prob = 0;        // its probability (threshold mode compares this)
  double confidence = 0;  // ranking score (top-k modes sort by this)
};

// Indices into `props` of the min(k, size) highest confidences; ties go to the lower position.
std::vector<size_t> pick_top_k(const std::vector<Proposal>& props, int64_t k);
// Fast-dLLM parallel decoding: every proposal with prob >= threshold, and always the most probable one (ties:
// lower position), so each step makes progress. Empty only when `props` is.
std::vector<size_t> pick_above_threshold(const std::vector<Proposal>& props, double threshold);

// ---- After generation ----

// Index of the first id in ids[0, n) that is one of `stop_ids`, or n when there is none.
int64_t find_stop(const int64_t* ids, int64_t n, std::span<const int64_t> stop_ids);
// For each row of `out` (I64 [B, L]): how many generated tokens (after the first `prompt_len`) come before the
// first stop id (EOS, pad, ...). Decode out[b, prompt_len : prompt_len + result[b]].
std::vector<int64_t> generated_lengths(const Tensor& out, int64_t prompt_len, std::span<const int64_t> stop_ids);

}  // namespace dlx
