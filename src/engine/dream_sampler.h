// Dream's policy for the unmasking loop (engine/unmask.h: unmask_generate with UnmaskPolicy::Dream; the reference
// is Dream's `diffusion_generate` / `_sample` in generation_utils.py), plus Fast-dLLM's block and parallel-decoding
// variants.
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
#include <vector>

#include "engine/unmask.h"

namespace dlx {

// Dream's timesteps: torch.linspace(1, eps, steps + 1) in float32, bit for bit (torch computes the first half
// as fma(step, i, 1) and the second as fma(-step, steps - i, eps) with step = (eps - 1) / steps).
std::vector<float> dream_timesteps(int steps, float eps);
// Tokens to reveal at step i out of `steps` (t = dream_timesteps) when `masked` positions are still masked:
// int(float(masked) * (1 - t[i+1] / t[i])) in float32, and all of them at the last step.
int64_t dream_transfer_count(int64_t masked, int i, int steps, const std::vector<float>& t);

}  // namespace dlx
