// LLaDA's policy for the unmasking loop (engine/unmask.h: unmask_generate with UnmaskPolicy::Llada; the reference is
// `generate` in ML-GSAI/LLaDA generate.py), plus Fast-dLLM's parallel-decoding variants.
//
//   x = prompt + [MASK] * max_new_tokens (the reference's gen_length), decoded in blocks of block_length, left to
//   right, steps / blocks each
//   per block: the block's masked count is spread evenly over its steps (remainder to the first steps)
//   step:  logits = model(x)   (with CFG: un = model(x with the prompt masked); logits = un + (s+1)(cond - un))
//          x0 = argmax(logits + Gumbel noise at `temperature`) at every masked position of the current block
//          confidence = softmax(logits)[x0] (low_confidence) or uniform random (random)
//          reveal that step's count of the most confident positions of the current block
// docs/SAMPLERS.md lists every place where this differs from or interprets the reference.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/unmask.h"

namespace dlx {

// LLaDA's get_num_transfer_tokens for one row: `masked` spread over `steps`, the remainder one each to the
// first steps.
std::vector<int64_t> llada_transfer_schedule(int64_t masked, int steps);

}  // namespace dlx
