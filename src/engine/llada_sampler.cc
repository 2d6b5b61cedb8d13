#include "engine/llada_sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "core/rng.h"

namespace dlx {

namespace {

enum class Mode { Schedule, Threshold, FixedCount };

// Purposes of the keyed random streams: Rng::keyed(seed, {purpose, row, step, position}).
enum : uint64_t { kGumbelDraw = 11, kRandomConfidence = 12 };

Mode mode_of(const LladaOptions& o) {
  if (o.threshold > 0) return Mode::Threshold;
  if (o.tokens_per_step > 0) return Mode::FixedCount;
  return Mode::Schedule;
}

struct Site {
  int64_t row, pos;
};

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

// One draw per site through the source's sampling path (the backend's sample_rows or the host's); the Gumbel
// noise of a site comes from its own keyed stream.
std::vector<Proposal> propose(const LogitsSource& source, const Tensor& ids, const Tensor& key_mask, int64_t batch,
                              int64_t L, const std::vector<Site>& sites, const LladaOptions& o,
                              const std::vector<int64_t>& suppress, int step) {
  RowSampling how;
  how.rule = RowSampling::Rule::Gumbel;
  how.temperature = o.temperature;
  how.cfg_scale = o.cfg_scale;
  how.suppress = suppress;
  how.seed = o.seed;
  std::vector<RowDraw> draws(sites.size());
  for (size_t i = 0; i < sites.size(); ++i) {
    const Site s = sites[i];
    draws[i].row = s.row * L + s.pos;
    if (o.cfg_scale > 0) draws[i].uncond_row = (batch + s.row) * L + s.pos;
    const DrawKey key = draw_key(o.independent_rows, s.row, s.pos, L);
    draws[i].noise_key = {kGumbelDraw, key.row, uint64_t(step), key.pos};
  }
  const std::vector<TokenChoice> choices = source.choose(ids, key_mask, how, draws);
  std::vector<Proposal> out(sites.size());
  for (size_t i = 0; i < sites.size(); ++i) {
    const Site s = sites[i];
    const DrawKey key = draw_key(o.independent_rows, s.row, s.pos, L);
    const double confidence =
        o.remasking == "random" ? Rng::keyed(o.seed, {kRandomConfidence, key.row, uint64_t(step), key.pos}).uniform()
                                : choices[i].prob;
    out[i] = Proposal{s.pos, choices[i].token, choices[i].prob, confidence};
  }
  return out;
}

}  // namespace

void validate(const LladaOptions& o) {
  check(o.gen_length >= 1, "llada: gen_length must be >= 1 (got {})", o.gen_length);
  check(o.block_length >= 0, "llada: block_length must be >= 0 (got {})", o.block_length);
  check(o.block_length == 0 || o.gen_length % o.block_length == 0,
        "llada: block_length ({}) must divide gen_length ({})", o.block_length, o.gen_length);
  check(o.steps >= 1, "llada: steps must be >= 1 (got {})", o.steps);
  check(o.temperature >= 0 && std::isfinite(o.temperature), "llada: temperature must be >= 0 (got {})",
        o.temperature);
  check(o.cfg_scale >= 0 && std::isfinite(o.cfg_scale), "llada: cfg_scale must be >= 0 (got {})", o.cfg_scale);
  check(o.remasking == "low_confidence" || o.remasking == "random",
        "llada: remasking must be low_confidence or random (got '{}')", o.remasking);
  check(o.mask_token_id >= 0, "llada: mask_token_id must be >= 0 (got {})", o.mask_token_id);
  check(o.threshold >= 0 && o.threshold <= 1, "llada: threshold must be in [0, 1] (got {})", o.threshold);
  check(o.tokens_per_step >= 0, "llada: tokens_per_step must be >= 0 (got {})", o.tokens_per_step);
  check(!(o.threshold > 0 && o.tokens_per_step > 0), "llada: threshold and tokens_per_step cannot both be set");
  check(!(o.threshold > 0 && o.remasking == "random"),
        "llada: threshold compares token probabilities and needs remasking low_confidence (got random)");
  if (mode_of(o) == Mode::Schedule) {
    const int64_t blocks = o.block_length > 0 ? o.gen_length / o.block_length : 1;
    check(o.steps % blocks == 0, "llada: steps ({}) must be divisible by the number of blocks ({} = {} / {})",
          o.steps, blocks, o.gen_length, o.block_length);
  }
}

std::vector<int64_t> llada_transfer_schedule(int64_t masked, int steps) {
  check(steps >= 1 && masked >= 0, "llada: bad transfer schedule request ({} masked over {} steps)", masked, steps);
  std::vector<int64_t> n(size_t(steps), masked / steps);
  for (int64_t i = 0; i < masked % steps; ++i) ++n[size_t(i)];
  return n;
}

namespace {

Tensor run_llada(const LogitsSource& source, const Tensor& prompt_ids, const LladaOptions& o,
                 const StepCallback& on_step) {
  validate(o);
  Tensor x = make_canvas(prompt_ids, o.gen_length, o.mask_token_id);
  const int64_t B = x.dim(0), P = prompt_ids.dim(1), L = x.dim(1);
  const Tensor key_mask = extend_key_mask(o.prompt_mask, B, P, L);
  const Tensor key_mask2 = o.cfg_scale > 0 ? stacked_twice(key_mask) : Tensor();
  int64_t* ids = x.data<int64_t>();
  const uint8_t* valid = key_mask.defined() ? key_mask.data<uint8_t>() : nullptr;

  // The reference's prompt_index: positions that were not [MASK] at the start (CFG masks them).
  std::vector<uint8_t> is_prompt(static_cast<size_t>(B * L));
  for (int64_t i = 0; i < B * L; ++i) is_prompt[size_t(i)] = ids[i] != o.mask_token_id;

  const Mode mode = mode_of(o);
  const int64_t block_length = o.block_length > 0 ? o.block_length : o.gen_length;
  const int64_t blocks = o.gen_length / block_length;
  const int steps_per_block = int(o.steps / blocks);
  std::vector<int64_t> suppress = o.suppress_token_ids;
  suppress.push_back(o.mask_token_id);

  auto open_positions = [&](int64_t b, int64_t begin, int64_t end) {
    std::vector<int64_t> pos;
    for (int64_t p = begin; p < end; ++p)
      if (ids[b * L + p] == o.mask_token_id && (!valid || valid[b * L + p])) pos.push_back(p);
    return pos;
  };

  // Steps reported to the callback: exact for the schedule; an upper bound for the dynamic modes.
  int64_t total = mode == Mode::Schedule ? o.steps
                  : mode == Mode::Threshold
                      ? o.gen_length
                      : blocks * ((block_length + o.tokens_per_step - 1) / o.tokens_per_step);

  int step = 0;
  int64_t revealed = 0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t begin = P + blk * block_length, end = begin + block_length;
    std::vector<std::vector<int64_t>> schedule(static_cast<size_t>(B));
    if (mode == Mode::Schedule)
      for (int64_t b = 0; b < B; ++b)
        schedule[size_t(b)] = llada_transfer_schedule(int64_t(open_positions(b, begin, end).size()), steps_per_block);

    for (int i = 0;; ++i) {
      if (mode == Mode::Schedule && i == steps_per_block) break;
      std::vector<std::vector<int64_t>> open(static_cast<size_t>(B));
      std::vector<int64_t> quota(static_cast<size_t>(B));
      bool any_open = false;
      for (int64_t b = 0; b < B; ++b) {
        open[size_t(b)] = open_positions(b, begin, end);
        const int64_t n = int64_t(open[size_t(b)].size());
        any_open |= n > 0;
        quota[size_t(b)] = mode == Mode::Schedule    ? std::min(n, schedule[size_t(b)][size_t(i)])
                           : mode == Mode::Threshold ? n
                                                     : std::min(n, o.tokens_per_step);
        if (quota[size_t(b)] == 0) open[size_t(b)].clear();
      }
      if (mode != Mode::Schedule && !any_open) break;

      std::vector<Site> sites;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p : open[size_t(b)]) sites.push_back({b, p});
      // A step with nothing to reveal (steps > block masks) changes nothing: its forward pass is skipped.
      if (!sites.empty()) {
        const std::vector<Proposal> props =
            o.cfg_scale > 0 ? propose(source, with_unconditional(x, is_prompt, o.mask_token_id), key_mask2, B, L, sites,
                                      o, suppress, step)
                            : propose(source, x, key_mask, B, L, sites, o, suppress, step);
        size_t first = 0;
        for (int64_t b = 0; b < B; ++b) {
          const size_t n = open[size_t(b)].size();
          const std::vector<Proposal> row(props.begin() + first, props.begin() + first + n);
          first += n;
          if (row.empty()) continue;
          const std::vector<size_t> pick = mode == Mode::Threshold ? pick_above_threshold(row, o.threshold)
                                                                   : pick_top_k(row, quota[size_t(b)]);
          for (size_t j : pick) ids[b * L + row[j].pos] = row[j].token;
          revealed += int64_t(pick.size());
        }
      }
      if (on_step) on_step(step, int(total), revealed, x);
      ++step;
    }
  }
  return x;
}

}  // namespace

Tensor llada_generate(const LogitsFn& logits_fn, const Tensor& prompt_ids, const LladaOptions& opts,
                      const StepCallback& on_step) {
  check(bool(logits_fn), "llada: no logits function");
  return run_llada(LogitsSource{logits_fn, {}, {}}, prompt_ids, opts, on_step);
}

Tensor llada_generate(const RowLogitsFn& logits_fn, const Tensor& prompt_ids, const LladaOptions& opts,
                      const StepCallback& on_step) {
  check(bool(logits_fn), "llada: no logits function");
  return run_llada(LogitsSource{{}, logits_fn, {}}, prompt_ids, opts, on_step);
}

Tensor llada_generate(const RowSampleFn& sample_fn, const Tensor& prompt_ids, const LladaOptions& opts,
                      const StepCallback& on_step) {
  check(bool(sample_fn), "llada: no row sampler");
  return run_llada(LogitsSource{{}, {}, sample_fn}, prompt_ids, opts, on_step);
}

}  // namespace dlx
