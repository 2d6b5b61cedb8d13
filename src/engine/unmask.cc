#include "engine/unmask.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "engine/unmask_policy.h"

namespace dlx {

namespace {

enum class Mode { Schedule, Threshold, FixedCount };

Mode mode_of(const UnmaskOptions& o) {
  if (o.threshold > 0) return Mode::Threshold;
  if (o.tokens_per_step > 0) return Mode::FixedCount;
  return Mode::Schedule;
}

std::unique_ptr<Policy> make_policy(UnmaskPolicy p, const UnmaskOptions& o) {
  return p == UnmaskPolicy::Dream ? make_dream_policy(o) : make_llada_policy(o);
}

// The checks every policy shares, then the policy's own.
void validate(const Policy& policy, const UnmaskOptions& o) {
  const char* n = policy.name();
  check(o.max_new_tokens >= 1, "{}: max_new_tokens must be >= 1 (got {})", n, o.max_new_tokens);
  check(o.steps >= 1, "{}: steps must be >= 1 (got {})", n, o.steps);
  check(o.temperature >= 0 && std::isfinite(o.temperature), "{}: temperature must be >= 0 (got {})", n,
        o.temperature);
  check(o.mask_token_id >= 0, "{}: mask_token_id must be >= 0 (got {})", n, o.mask_token_id);
  check(o.block_length >= 0, "{}: block_length must be >= 0 (got {})", n, o.block_length);
  check(o.block_length == 0 || o.max_new_tokens % o.block_length == 0,
        "{}: block_length ({}) must divide max_new_tokens ({})", n, o.block_length, o.max_new_tokens);
  check(o.threshold >= 0 && o.threshold <= 1, "{}: threshold must be in [0, 1] (got {})", n, o.threshold);
  check(o.tokens_per_step >= 0, "{}: tokens_per_step must be >= 0 (got {})", n, o.tokens_per_step);
  check(!(o.threshold > 0 && o.tokens_per_step > 0), "{}: threshold and tokens_per_step cannot both be set", n);
  policy.validate();
  if (mode_of(o) == Mode::Schedule && o.block_length > 0) {
    const int64_t blocks = o.max_new_tokens / o.block_length;
    check(o.steps % blocks == 0, "{}: steps ({}) must be divisible by the number of blocks ({} = {} / {})", n,
          o.steps, blocks, o.max_new_tokens, o.block_length);
  }
}

Tensor run(UnmaskPolicy which, const LogitsSource& source, const Tensor& prompt_ids, const UnmaskOptions& o,
           const StepCallback& on_step) {
  const std::unique_ptr<Policy> policy = make_policy(which, o);
  validate(*policy, o);
  Tensor x = make_canvas(prompt_ids, o.max_new_tokens, o.mask_token_id);
  const int64_t B = x.dim(0), P = prompt_ids.dim(1), L = x.dim(1);
  const Tensor key_mask = extend_key_mask(o.prompt_mask, B, P, L);
  int64_t* ids = x.data<int64_t>();
  const uint8_t* valid = key_mask.defined() ? key_mask.data<uint8_t>() : nullptr;
  policy->start(x, key_mask);

  const Mode mode = mode_of(o);
  const int64_t blocks = o.block_length > 0 ? o.max_new_tokens / o.block_length : 1;
  const int steps_per_block = mode == Mode::Schedule ? int(o.steps / blocks) : 1;

  // Region of block `blk`: its slice of the new tokens, or (no blocks) the new tokens or the whole canvas.
  auto region = [&](int64_t blk) {
    if (o.block_length > 0) return std::pair<int64_t, int64_t>{P + blk * o.block_length, P + (blk + 1) * o.block_length};
    return std::pair<int64_t, int64_t>{policy->fills_prompt_masks() ? 0 : P, L};
  };
  auto open_positions = [&](int64_t b, std::pair<int64_t, int64_t> r) {
    std::vector<int64_t> pos;
    for (int64_t p = r.first; p < r.second; ++p)
      if (ids[b * L + p] == o.mask_token_id && (!valid || valid[b * L + p])) pos.push_back(p);
    return pos;
  };

  // Steps reported to the callback: exact for the schedule; an upper bound for the dynamic modes.
  int64_t total = o.steps;
  if (mode != Mode::Schedule) {
    total = 0;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      int64_t most = 0;
      for (int64_t b = 0; b < B; ++b) most = std::max<int64_t>(most, int64_t(open_positions(b, region(blk)).size()));
      total += mode == Mode::Threshold ? most : (most + o.tokens_per_step - 1) / o.tokens_per_step;
    }
  }

  int step = 0;
  int64_t revealed = 0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const auto r = region(blk);
    if (mode == Mode::Schedule) {
      std::vector<int64_t> counts(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) counts[size_t(b)] = int64_t(open_positions(b, r).size());
      policy->start_block(steps_per_block, counts);
    }
    for (int i = 0;; ++i) {
      if (mode == Mode::Schedule && i == steps_per_block) break;
      // Per row: the masked positions that may be revealed now, and how many of them to reveal.
      std::vector<std::vector<int64_t>> open(static_cast<size_t>(B));
      std::vector<int64_t> quota(static_cast<size_t>(B));
      bool any_open = false;
      for (int64_t b = 0; b < B; ++b) {
        open[size_t(b)] = open_positions(b, r);
        const int64_t n = int64_t(open[size_t(b)].size());
        any_open |= n > 0;
        quota[size_t(b)] = mode == Mode::Schedule    ? policy->scheduled(b, i, step, open[size_t(b)])
                           : mode == Mode::Threshold ? n
                                                     : std::min(n, o.tokens_per_step);
        if (quota[size_t(b)] == 0) open[size_t(b)].clear();  // nothing to propose in this row
      }
      if (mode != Mode::Schedule && !any_open) break;

      std::vector<Site> sites;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p : open[size_t(b)]) sites.push_back({b, p});
      // A step that reveals nothing changes nothing (its random draws are keyed by step), so its forward pass
      // is skipped; the references run it and discard the result.
      if (!sites.empty()) {
        const std::vector<Proposal> props = policy->propose(source, x, key_mask, sites, step);
        size_t first = 0;
        for (int64_t b = 0; b < B; ++b) {
          const size_t n = open[size_t(b)].size();
          std::vector<Proposal> row(props.begin() + first, props.begin() + first + n);
          first += n;
          if (row.empty()) continue;
          const std::vector<size_t> pick = mode == Mode::Threshold ? pick_above_threshold(row, o.threshold)
                                                                   : policy->pick(b, row, quota[size_t(b)], step);
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

void validate(UnmaskPolicy policy, const UnmaskOptions& o) { validate(*make_policy(policy, o), o); }

Tensor unmask_generate(UnmaskPolicy policy, const LogitsFn& logits_fn, const Tensor& prompt_ids,
                       const UnmaskOptions& opts, const StepCallback& on_step) {
  check(bool(logits_fn), "no logits function");
  return run(policy, LogitsSource{logits_fn, {}, {}}, prompt_ids, opts, on_step);
}

Tensor unmask_generate(UnmaskPolicy policy, const RowLogitsFn& logits_fn, const Tensor& prompt_ids,
                       const UnmaskOptions& opts, const StepCallback& on_step) {
  check(bool(logits_fn), "no logits function");
  return run(policy, LogitsSource{{}, logits_fn, {}}, prompt_ids, opts, on_step);
}

Tensor unmask_generate(UnmaskPolicy policy, const RowSampleFn& sample_fn, const Tensor& prompt_ids,
                       const UnmaskOptions& opts, const StepCallback& on_step) {
  check(bool(sample_fn), "no row sampler");
  return run(policy, LogitsSource{{}, {}, sample_fn}, prompt_ids, opts, on_step);
}

}  // namespace dlx
