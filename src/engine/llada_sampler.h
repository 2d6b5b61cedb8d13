// LLaDA's semi-autoregressive diffusion decoding (the reference is `generate` in ML-GSAI/LLaDA generate.py), as a
// pure function over a logits callback, plus Fast-dLLM's parallel-decoding variants.
//
//   x = prompt + [MASK] * gen_length, decoded in blocks of block_length, left to right, steps / blocks each
//   per block: the block's masked count is spread evenly over its steps (remainder to the first steps)
//   step:  logits = model(x)   (with CFG: un = model(x with the prompt masked); logits = un + (s+1)(cond - un))
//          x0 = argmax(logits + Gumbel noise at `temperature`) at every masked position of the current block
//          confidence = softmax(logits)[x0] (low_confidence) or uniform random (random)
//          reveal that step's count of the most confident positions of the current block
// docs/SAMPLERS.md lists every place where this differs from or interprets the reference.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "engine/sampling.h"

namespace dlx {

struct LladaOptions {
  int64_t gen_length = 128;
  int64_t block_length = 0;  // 0: one block of gen_length; must divide gen_length
  int steps = 128;           // total steps; must be a multiple of the number of blocks
  float temperature = 0;     // Gumbel-max noise scale; 0: greedy
  float cfg_scale = 0;       // classifier-free guidance; 0: off (one forward per step, else one of 2B rows)
  std::string remasking = "low_confidence";  // low_confidence | random
  uint64_t seed = 0;
  int64_t mask_token_id = 126336;  // LLaDA-8B's [MASK]
  // > 0: Fast-dLLM parallel decoding: each step reveals every masked position of the current block whose token
  // has probability >= threshold, and at least the most probable one; a block runs until it is done.
  float threshold = 0;
  // > 0: each step reveals exactly this many of the current block (the most confident; fewer at its end).
  int64_t tokens_per_step = 0;
  // Never generated (their logits are set to -inf); the mask token is always excluded. The reference's
  // logits_eos_inf is suppress_token_ids = {126081}.
  std::vector<int64_t> suppress_token_ids;
  // Optional U8 [B, P]: 0 marks left padding of the prompt (passed on as key_mask).
  Tensor prompt_mask;
  // Key every random draw by the request rather than by its batch row (see draw_key in sampling.h).
  bool independent_rows = false;
};

// Throws dlx::Error naming the first invalid option.
void validate(const LladaOptions& opts);

// LLaDA's get_num_transfer_tokens for one row: `masked` spread over `steps`, the remainder one each to the
// first steps.
std::vector<int64_t> llada_transfer_schedule(int64_t masked, int steps);

// Generates gen_length tokens after each prompt row; returns I64 [B, P + gen_length].
Tensor llada_generate(const LogitsFn& logits_fn, const Tensor& prompt_ids, const LladaOptions& opts,
                      const StepCallback& on_step = {});
// The same with a callback that computes only the rows read at each step (the masked positions of the current
// block; with CFG, of both halves of the 2B-row batch).
Tensor llada_generate(const RowLogitsFn& logits_fn, const Tensor& prompt_ids, const LladaOptions& opts,
                      const StepCallback& on_step = {});
// The same with a callback that computes those rows and samples them where they are (backend_row_sampler).
Tensor llada_generate(const RowSampleFn& sample_fn, const Tensor& prompt_ids, const LladaOptions& opts,
                      const StepCallback& on_step = {});

}  // namespace dlx
