// Dream's diffusion decoding (the reference is Dream's `diffusion_generate` / `_sample` in generation_utils.py),
// as a pure function over a logits callback, plus Fast-dLLM's block and parallel-decoding variants.
//
//   x = prompt + [MASK] * max_new_tokens;  t = linspace(1, eps, steps + 1)
//   step i:  logits = model(x) shifted right by one (position p reads the logits of p - 1; position 0 its own)
//            origin:   each masked position is revealed with probability 1 - t[i+1]/t[i] (1 at the last step)
//            others:   every masked position proposes a token (temperature / top-p / top-k) with a confidence
//                      (maskgit_plus: its probability, topk_margin: top1 - top2, entropy: negative entropy);
//                      the int(masked * (1 - t[i+1]/t[i])) most confident are revealed (all at the last step),
//                      or, with alg_temp > 0, that many sampled by softmax(confidence / alg_temp).
// docs/SAMPLERS.md lists every place where this differs from or interprets the reference.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "engine/sampling.h"

namespace dlx {

struct DreamOptions {
  int64_t max_new_tokens = 128;
  int steps = 128;                 // total diffusion steps (split evenly over blocks when block_length > 0)
  float eps = 1e-3f;               // last timestep of linspace(1, eps, steps + 1)
  std::string alg = "entropy";     // origin | maskgit_plus | topk_margin | entropy
  float alg_temp = 0;              // > 0: sample the positions to reveal instead of taking the top ones
  float temperature = 0;           // 0: greedy
  float top_p = 1;                 // 1: off
  int64_t top_k = 0;               // 0: off
  uint64_t seed = 0;
  int64_t mask_token_id = 151666;  // Dream-v0's [MASK]
  // > 0: the new tokens are decoded in blocks of this length, left to right; a block is finished before the
  // next starts and nothing outside the current block is revealed. 0: one region (the whole sequence).
  int64_t block_length = 0;
  // > 0: Fast-dLLM parallel decoding: each step reveals every masked position (of the region) whose proposed
  // token has probability >= threshold, and at least the most probable one; steps run until the region is done.
  float threshold = 0;
  // > 0: each step reveals exactly this many (the most confident; fewer at the end); steps run until done.
  int64_t tokens_per_step = 0;
  // Never generated (their logits are set to -inf); the mask token is always excluded.
  std::vector<int64_t> suppress_token_ids;
  // Optional U8 [B, P]: 0 marks left padding of the prompt (never revealed, passed on as key_mask).
  Tensor prompt_mask;
  // Key every random draw by the request rather than by its batch row (see draw_key in sampling.h).
  bool independent_rows = false;
};

// Throws dlx::Error naming the first invalid option.
void validate(const DreamOptions& opts);

// Dream's timesteps: torch.linspace(1, eps, steps + 1) in float32, bit for bit (torch computes the first half
// as fma(step, i, 1) and the second as fma(-step, steps - i, eps) with step = (eps - 1) / steps).
std::vector<float> dream_timesteps(int steps, float eps);
// Tokens to reveal at step i out of `steps` (t = dream_timesteps) when `masked` positions are still masked:
// int(float(masked) * (1 - t[i+1] / t[i])) in float32, and all of them at the last step.
int64_t dream_transfer_count(int64_t masked, int i, int steps, const std::vector<float>& t);

// Generates max_new_tokens after each prompt row; returns I64 [B, P + max_new_tokens].
Tensor dream_generate(const LogitsFn& logits_fn, const Tensor& prompt_ids, const DreamOptions& opts,
                      const StepCallback& on_step = {});
// The same with a callback that computes only the rows read at each step (row p - 1 for each masked p).
Tensor dream_generate(const RowLogitsFn& logits_fn, const Tensor& prompt_ids, const DreamOptions& opts,
                      const StepCallback& on_step = {});
// The same with a callback that computes those rows and samples them where they are (backend_row_sampler): the
// per-position work runs on the backend and only the chosen tokens come back.
Tensor dream_generate(const RowSampleFn& sample_fn, const Tensor& prompt_ids, const DreamOptions& opts,
                      const StepCallback& on_step = {});

}  // namespace dlx
