// The unmasking loop of the masked-diffusion samplers, one for Dream and LLaDA (docs/SAMPLERS.md):
//
//   x = prompt + [MASK] * max_new_tokens, decoded in blocks of block_length left to right (0: one region)
//   per step: every row lists its open positions (masked, not padding) in the current region and a quota:
//     schedule (steps / blocks per block): the policy's count (Dream: its timesteps; LLaDA: its even spread)
//     threshold > 0 (Fast-dLLM): all of them, revealing every proposal with probability >= threshold (at least one)
//     tokens_per_step > 0: that many
//   the open positions propose a token and a confidence (the policy's logits row, sampling rule and confidence),
//   and the quota's most confident are revealed (the policy may pick otherwise: Dream's origin and alg_temp).
//
// The policies (engine/dream_sampler.h, engine/llada_sampler.h) hold only what differs: Dream reads the logits
// shifted by one, samples with temperature / top-p / top-k and ranks by its `alg`; LLaDA reads unshifted logits,
// takes Gumbel-max tokens with optional classifier-free guidance and ranks by probability or at random.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "engine/generation_options.h"
#include "engine/sampling.h"

namespace dlx {

enum class UnmaskPolicy { Dream, Llada };

// The loop's options: the user's (SamplingOptions; `steps` must be >= 1 here) and the model's.
struct UnmaskOptions : SamplingOptions {
  int64_t mask_token_id = -1;
  float eps = 1e-3f;  // Dream: last timestep of linspace(1, eps, steps + 1)
  // Never generated (their logits are set to -inf); the mask token is always excluded. LLaDA's logits_eos_inf
  // is suppress_token_ids = {126081}.
  std::vector<int64_t> suppress_token_ids;
  // Optional U8 [B, P]: 0 marks left padding of the prompt (never revealed, passed on as key_mask).
  Tensor prompt_mask;
  // Key every random draw by the request rather than by its batch row (see draw_key in sampling.h).
  bool independent_rows = false;
};

// Throws dlx::Error naming the first invalid option (prefixed by the policy: "dream: ...", "llada: ...").
void validate(UnmaskPolicy policy, const UnmaskOptions& opts);

// Generates max_new_tokens after each prompt row; returns I64 [B, P + max_new_tokens].
Tensor unmask_generate(UnmaskPolicy policy, const LogitsFn& logits_fn, const Tensor& prompt_ids,
                       const UnmaskOptions& opts, const StepCallback& on_step = {});
// The same with a callback that computes only the rows read at each step (the policy's row for each open
// position; with LLaDA's CFG, of both halves of the 2B-row batch).
Tensor unmask_generate(UnmaskPolicy policy, const RowLogitsFn& logits_fn, const Tensor& prompt_ids,
                       const UnmaskOptions& opts, const StepCallback& on_step = {});
// The same with a callback that computes those rows and samples them where they are (backend_row_sampler): the
// per-position work runs on the backend and only the chosen tokens come back.
Tensor unmask_generate(UnmaskPolicy policy, const RowSampleFn& sample_fn, const Tensor& prompt_ids,
                       const UnmaskOptions& opts, const StepCallback& on_step = {});

}  // namespace dlx
