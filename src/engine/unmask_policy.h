// What the unmasking loop (engine/unmask.cc) asks of a model family; Dream's and LLaDA's answers are in
// dream_sampler.cc and llada_sampler.cc. Internal to engine/.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/unmask.h"

namespace dlx {

struct Site {
  int64_t row, pos;
};

class Policy {
 public:
  explicit Policy(const UnmaskOptions& o) : o_(o) {}
  virtual ~Policy() = default;
  // The prefix of its error messages.
  virtual const char* name() const = 0;
  // Checks the options only this family reads (after the loop's shared checks).
  virtual void validate() const = 0;
  // Without blocks, whether the region is the whole canvas (Dream: [MASK]s placed in the prompt are filled too)
  // rather than the new tokens.
  virtual bool fills_prompt_masks() const = 0;
  // Once, before the first step, with the canvas I64 [B, L] and its key mask.
  virtual void start(const Tensor& x, const Tensor& key_mask) = 0;
  // Schedule mode, at the start of each block: its steps and each row's open positions.
  virtual void start_block(int steps, const std::vector<int64_t>& open_counts) = 0;
  // Schedule mode: how many of row b's open positions step i of the block (`step` overall) reveals; may narrow
  // `open` to the positions that may move.
  virtual int64_t scheduled(int64_t b, int i, int step, std::vector<int64_t>& open) const = 0;
  // One proposal (token, probability, confidence) per site of the canvas `x`.
  virtual std::vector<Proposal> propose(const LogitsSource& source, const Tensor& x, const Tensor& key_mask,
                                        const std::vector<Site>& sites, int step) const = 0;
  // Schedule and tokens_per_step modes: which of row b's proposals to reveal (`quota` of them).
  virtual std::vector<size_t> pick(int64_t b, std::vector<Proposal>& row, int64_t quota, int step) const = 0;

 protected:
  // The ids never generated: suppress_token_ids and the mask token.
  std::vector<int64_t> never_generated() const {
    std::vector<int64_t> ids = o_.suppress_token_ids;
    ids.push_back(o_.mask_token_id);
    return ids;
  }

  const UnmaskOptions& o_;
};

std::unique_ptr<Policy> make_dream_policy(const UnmaskOptions& o);
std::unique_ptr<Policy> make_llada_policy(const UnmaskOptions& o);

}  // namespace dlx
