// Masked-token evaluation: how well a masked-diffusion LM fills in masked tokens of held-out text, at fixed
// mask ratios and with fixed masks (testdata/kjv/eval_reference.json defines it; the PyTorch training code
// computes the same numbers):
//   1. the token stream (the tokenizer on the whole text, no special tokens) is cut into consecutive windows of
//      `window` tokens, the last one possibly shorter;
//   2. position j >= 1 of window w is replaced by the mask token iff u(seed, w, j) < ratio, with
//      u = (splitmix64((seed << 40) ^ (w << 20) ^ j) >> 11) / 2^53 (position 0 is never masked);
//   3. one forward per window (full attention, nothing else in the batch row); Dream reads the prediction for
//      position j from the logits of j - 1 (LLaDA from j);
//   4. NLL = full-vocabulary log-softmax at the target, averaged over all masked positions of all windows;
//      accuracy = argmax == target.
// masked_tokens counts every masked position over all draws.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/hash.h"
#include "model/model.h"

namespace dlx {

// The uniform number in [0, 1) deciding whether position j of window w is masked.
double mask_uniform(uint64_t seed, int64_t w, int64_t j);

struct MaskedEvalOptions {
  std::vector<double> ratios{0.15, 0.5, 0.9};
  uint64_t seed = 1234;
  int64_t window = 128;
  int64_t batch_windows = 8;  // windows per forward (same length only): speed, not results
  // Independent mask draws pooled into one number per ratio: seeds seed, seed + 1, ..., seed + draws - 1.
  // 1 reproduces the reference definition; more draws average out which tokens happen to be masked (the
  // held-out text is small), which matters when comparing models that differ by a few hundredths of a nat.
  int64_t draws = 1;
};

struct MaskedEvalRatio {
  double ratio = 0;
  int64_t masked_tokens = 0;
  double nll = 0;       // nats per masked token
  double accuracy = 0;
  double ppl() const;
};

struct MaskedEvalResult {
  int64_t tokens = 0, windows = 0, window = 0;
  uint64_t seed = 0;
  int64_t draws = 1;
  std::vector<MaskedEvalRatio> ratios;
};

MaskedEvalResult masked_token_eval(Model& model, const std::vector<int32_t>& tokens, const MaskedEvalOptions& opt);

}  // namespace dlx
