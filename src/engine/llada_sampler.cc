#include "engine/llada_sampler.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"
#include "engine/unmask_policy.h"

namespace dlx {

std::vector<int64_t> llada_transfer_schedule(int64_t masked, int steps) {
  check(steps >= 1 && masked >= 0, "llada: bad transfer schedule request ({} masked over {} steps)", masked, steps);
  std::vector<int64_t> n(size_t(steps), masked / steps);
  for (int64_t i = 0; i < masked % steps; ++i) ++n[size_t(i)];
  return n;
}

namespace {

// Purposes of the keyed random streams: Rng::keyed(seed, {purpose, row, step, position}).
enum : uint64_t { kGumbelDraw = 11, kRandomConfidence = 12 };

// Stacks x over its unconditional copy (the prompt positions set to [MASK]) for one CFG forward of 2B rows.
Tensor with_unconditional(const Tensor& x, const std::vector<uint8_t>& is_prompt, int64_t mask_id) {
  const int64_t B = x.dim(0), L = x.dim(1);
  Tensor both = Tensor::zeros(DType::I64, {2 * B, L});
  std::memcpy(both.data(), x.data(), x.nbytes());
  int64_t* un = both.data<int64_t>() + B * L;
  std::memcpy(un, x.data(), x.nbytes());
  for (int64_t i = 0; i < B * L; ++i)
    if (is_prompt[size_t(i)]) un[i] = mask_id;
  return both;
}

Tensor stacked_twice(const Tensor& key_mask) {
  if (!key_mask.defined()) return {};
  Tensor both = Tensor::zeros(DType::U8, {2 * key_mask.dim(0), key_mask.dim(1)});
  std::memcpy(both.data(), key_mask.data(), key_mask.nbytes());
  std::memcpy(both.data<uint8_t>() + key_mask.numel(), key_mask.data(), key_mask.nbytes());
  return both;
}

class LladaPolicy final : public Policy {
 public:
  using Policy::Policy;
  const char* name() const override { return "llada"; }

  void validate() const override {
    check(o_.cfg_scale >= 0 && std::isfinite(o_.cfg_scale), "llada: cfg_scale must be >= 0 (got {})", o_.cfg_scale);
    check(!(o_.threshold > 0 && o_.remasking == Remasking::Random),
          "llada: threshold compares token probabilities and needs remasking low_confidence (got random)");
  }

  bool fills_prompt_masks() const override { return false; }  // one block of the new tokens

  void start(const Tensor& x, const Tensor& key_mask) override {
    B_ = x.dim(0), L_ = x.dim(1);
    // The reference's prompt_index: positions that were not [MASK] at the start (CFG masks them).
    is_prompt_.resize(static_cast<size_t>(B_ * L_));
    for (int64_t i = 0; i < B_ * L_; ++i) is_prompt_[size_t(i)] = x.data<int64_t>()[i] != o_.mask_token_id;
    if (o_.cfg_scale > 0) key_mask2_ = stacked_twice(key_mask);
    how_ = {.rule = RowSampling::Rule::Gumbel, .temperature = o_.temperature, .cfg_scale = o_.cfg_scale,
            .suppress = never_generated(), .seed = o_.seed};
  }

  void start_block(int steps, const std::vector<int64_t>& open_counts) override {
    schedule_.clear();
    for (int64_t n : open_counts) schedule_.push_back(llada_transfer_schedule(n, steps));
  }

  int64_t scheduled(int64_t b, int i, int, std::vector<int64_t>& open) const override {
    return std::min(int64_t(open.size()), schedule_[size_t(b)][size_t(i)]);
  }

  // Gumbel-max tokens from the unshifted logits (with CFG, of the 2B-row batch: x over its unconditional copy);
  // the noise of a site comes from its own keyed stream.
  std::vector<Proposal> propose(const LogitsSource& source, const Tensor& x, const Tensor& key_mask,
                                const std::vector<Site>& sites, int step) const override {
    std::vector<RowDraw> draws(sites.size());
    for (size_t i = 0; i < sites.size(); ++i) {
      const Site s = sites[i];
      draws[i].row = s.row * L_ + s.pos;
      if (o_.cfg_scale > 0) draws[i].uncond_row = (B_ + s.row) * L_ + s.pos;
      const DrawKey key = draw_key(o_.independent_rows, s.row, s.pos, L_);
      draws[i].noise_key = {kGumbelDraw, key.row, uint64_t(step), key.pos};
    }
    const std::vector<TokenChoice> choices =
        o_.cfg_scale > 0 ? source.choose(with_unconditional(x, is_prompt_, o_.mask_token_id), key_mask2_, how_, draws)
                         : source.choose(x, key_mask, how_, draws);
    std::vector<Proposal> out(sites.size());
    for (size_t i = 0; i < sites.size(); ++i) {
      const Site s = sites[i];
      const DrawKey key = draw_key(o_.independent_rows, s.row, s.pos, L_);
      const double confidence =
          o_.remasking == Remasking::Random
              ? Rng::keyed(o_.seed, {kRandomConfidence, key.row, uint64_t(step), key.pos}).uniform()
              : choices[i].prob;
      out[i] = Proposal{s.pos, choices[i].token, choices[i].prob, confidence};
    }
    return out;
  }

  std::vector<size_t> pick(int64_t, std::vector<Proposal>& row, int64_t quota, int) const override {
    return pick_top_k(row, quota);
  }

 private:
  int64_t B_ = 0, L_ = 0;
  std::vector<uint8_t> is_prompt_;
  Tensor key_mask2_;
  RowSampling how_;
  std::vector<std::vector<int64_t>> schedule_;
};

}  // namespace

std::unique_ptr<Policy> make_llada_policy(const UnmaskOptions& o) { return std::make_unique<LladaPolicy>(o); }

}  // namespace dlx
