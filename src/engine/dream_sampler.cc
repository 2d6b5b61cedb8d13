#include "engine/dream_sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/thread_pool.h"
#include "core/rng.h"

namespace dlx {

namespace {

enum class Mode { Schedule, Threshold, FixedCount };

// Purposes of the keyed random streams: Rng::keyed(seed, {purpose, row, step, position}).
enum : uint64_t { kTokenDraw = 1, kTransferDraw = 2, kPositionDraw = 3 };

Mode mode_of(const DreamOptions& o) {
  if (o.threshold > 0) return Mode::Threshold;
  if (o.tokens_per_step > 0) return Mode::FixedCount;
  return Mode::Schedule;
}

Confidence confidence_of(const std::string& alg) {
  if (alg == "topk_margin") return Confidence::Margin;
  if (alg == "entropy") return Confidence::NegEntropy;
  return Confidence::Prob;  // maskgit_plus (origin ranks nothing)
}

struct Site {
  int64_t row, pos;
};

// Proposes a token at each site from the shifted logits: position p reads logits row p - 1 (row 0 for p = 0),
// which is Dream's `cat(logits[:, :1], logits[:, :-1])` without building the shifted tensor.
int64_t logits_row(const Site& s, int64_t L) { return s.row * L + std::max<int64_t>(s.pos - 1, 0); }

// One draw per site through the source's sampling path (the backend's sample_rows or the host's), with the
// site's own uniform: a row's tokens do not depend on the other rows of the batch.
std::vector<Proposal> propose(const LogitsSource& source, const Tensor& x, const Tensor& key_mask, int64_t L,
                              const std::vector<Site>& sites, const DreamOptions& o,
                              const std::vector<int64_t>& suppress, int step) {
  RowSampling how;
  how.rule = RowSampling::Rule::Dream;
  how.temperature = o.temperature;
  how.top_p = o.top_p;
  how.top_k = o.top_k;
  how.confidence = confidence_of(o.alg);
  how.suppress = suppress;
  std::vector<RowDraw> draws(sites.size());
  for (size_t i = 0; i < sites.size(); ++i) {
    const Site s = sites[i];
    draws[i].row = logits_row(s, L);
    const DrawKey key = draw_key(o.independent_rows, s.row, s.pos, L);
    draws[i].u = o.temperature > 0 ? Rng::keyed(o.seed, {kTokenDraw, key.row, uint64_t(step), key.pos}).uniform() : 0.0;
  }
  const std::vector<TokenChoice> choices = source.choose(x, key_mask, how, draws);
  std::vector<Proposal> out(sites.size());
  for (size_t i = 0; i < sites.size(); ++i)
    out[i] = Proposal{sites[i].pos, choices[i].token, choices[i].prob, choices[i].confidence};
  return out;
}

}  // namespace

void validate(const DreamOptions& o) {
  check(o.max_new_tokens >= 1, "dream: max_new_tokens must be >= 1 (got {})", o.max_new_tokens);
  check(o.steps >= 1, "dream: steps must be >= 1 (got {})", o.steps);
  check(o.eps > 0 && o.eps < 1, "dream: eps must be in (0, 1) (got {})", o.eps);
  check(o.alg == "origin" || o.alg == "maskgit_plus" || o.alg == "topk_margin" || o.alg == "entropy",
        "dream: alg must be origin, maskgit_plus, topk_margin or entropy (got '{}')", o.alg);
  check(o.alg_temp >= 0 && std::isfinite(o.alg_temp), "dream: alg_temp must be >= 0 (got {})", o.alg_temp);
  check(o.temperature >= 0 && std::isfinite(o.temperature), "dream: temperature must be >= 0 (got {})",
        o.temperature);
  check(o.top_p > 0 && o.top_p <= 1, "dream: top_p must be in (0, 1] (got {})", o.top_p);
  check(o.top_k >= 0, "dream: top_k must be >= 0 (got {})", o.top_k);
  check(o.mask_token_id >= 0, "dream: mask_token_id must be >= 0 (got {})", o.mask_token_id);
  check(o.block_length >= 0, "dream: block_length must be >= 0 (got {})", o.block_length);
  check(o.block_length == 0 || o.max_new_tokens % o.block_length == 0,
        "dream: block_length ({}) must divide max_new_tokens ({})", o.block_length, o.max_new_tokens);
  check(o.threshold >= 0 && o.threshold <= 1, "dream: threshold must be in [0, 1] (got {})", o.threshold);
  check(o.tokens_per_step >= 0, "dream: tokens_per_step must be >= 0 (got {})", o.tokens_per_step);
  check(!(o.threshold > 0 && o.tokens_per_step > 0), "dream: threshold and tokens_per_step cannot both be set");
  check(mode_of(o) == Mode::Schedule || o.alg != "origin",
        "dream: alg origin ranks no positions; threshold / tokens_per_step need maskgit_plus, topk_margin or entropy");
  if (mode_of(o) == Mode::Schedule && o.block_length > 0) {
    const int64_t blocks = o.max_new_tokens / o.block_length;
    check(o.steps % blocks == 0, "dream: steps ({}) must be divisible by the number of blocks ({} = {} / {})",
          o.steps, blocks, o.max_new_tokens, o.block_length);
  }
}

std::vector<float> dream_timesteps(int steps, float eps) {
  check(steps >= 1, "dream: steps must be >= 1 (got {})", steps);
  const int64_t points = int64_t(steps) + 1, halfway = points / 2;
  const float step = (eps - 1.0f) / float(steps);
  std::vector<float> t(static_cast<size_t>(points));
  for (int64_t i = 0; i < points; ++i)
    t[size_t(i)] = i < halfway ? std::fma(step, float(i), 1.0f) : std::fma(-step, float(points - i - 1), eps);
  return t;
}

int64_t dream_transfer_count(int64_t masked, int i, int steps, const std::vector<float>& t) {
  if (i >= steps - 1) return masked;
  const float ratio = t[size_t(i) + 1] / t[size_t(i)];
  const float fraction = 1.0f - ratio;
  const float want = float(masked) * fraction;
  return std::min<int64_t>(masked, int64_t(want));  // Python int(): truncation
}

namespace {

Tensor run_dream(const LogitsSource& source, const Tensor& prompt_ids, const DreamOptions& o,
                 const StepCallback& on_step) {
  validate(o);
  Tensor x = make_canvas(prompt_ids, o.max_new_tokens, o.mask_token_id);
  const int64_t B = x.dim(0), P = prompt_ids.dim(1), L = x.dim(1);
  const Tensor key_mask = extend_key_mask(o.prompt_mask, B, P, L);
  int64_t* ids = x.data<int64_t>();
  const uint8_t* valid = key_mask.defined() ? key_mask.data<uint8_t>() : nullptr;

  const Mode mode = mode_of(o);
  const bool origin = o.alg == "origin";
  const int64_t blocks = o.block_length > 0 ? o.max_new_tokens / o.block_length : 1;
  const int steps_per_block = mode == Mode::Schedule ? int(o.steps / blocks) : 1;
  const std::vector<float> t = dream_timesteps(steps_per_block, o.eps);
  std::vector<int64_t> suppress = o.suppress_token_ids;
  suppress.push_back(o.mask_token_id);

  // Region of block `blk`: its slice of the new tokens, or (no blocks) the whole sequence, so [MASK]s placed
  // in the prompt are filled too, as in the reference.
  auto region = [&](int64_t blk) {
    return o.block_length > 0 ? std::pair<int64_t, int64_t>{P + blk * o.block_length, P + (blk + 1) * o.block_length}
                              : std::pair<int64_t, int64_t>{0, L};
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
        if (mode == Mode::Schedule && origin) {
          // Each masked position moves with probability 1 - s/t (float32, as the reference), all at the end.
          const float p_transfer = i < steps_per_block - 1 ? 1.0f - t[size_t(i) + 1] / t[size_t(i)] : 1.0f;
          std::vector<int64_t> moving;
          for (int64_t p : open[size_t(b)])
            if (const DrawKey key = draw_key(o.independent_rows, b, p, L);
                Rng::keyed(o.seed, {kTransferDraw, key.row, uint64_t(step), key.pos}).uniform() < p_transfer)
              moving.push_back(p);
          open[size_t(b)] = std::move(moving);
          quota[size_t(b)] = int64_t(open[size_t(b)].size());
        } else if (mode == Mode::Schedule) {
          quota[size_t(b)] = dream_transfer_count(n, i, steps_per_block, t);
        } else if (mode == Mode::Threshold) {
          quota[size_t(b)] = n;
        } else {
          quota[size_t(b)] = std::min(n, o.tokens_per_step);
        }
        if (quota[size_t(b)] == 0) open[size_t(b)].clear();  // nothing to propose in this row
      }
      if (mode != Mode::Schedule && !any_open) break;

      std::vector<Site> sites;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p : open[size_t(b)]) sites.push_back({b, p});
      // A step that reveals nothing changes nothing (its random draws are keyed by step), so its forward pass
      // is skipped; the reference runs it and discards the result.
      if (!sites.empty()) {
        std::vector<Proposal> props = propose(source, x, key_mask, L, sites, o, suppress, step);
        size_t first = 0;
        for (int64_t b = 0; b < B; ++b) {
          const size_t n = open[size_t(b)].size();
          std::vector<Proposal> row(props.begin() + first, props.begin() + first + n);
          first += n;
          if (row.empty()) continue;
          std::vector<size_t> pick;
          if (origin) {  // the transfer draws already chose the positions
            pick.resize(row.size());
            std::iota(pick.begin(), pick.end(), size_t(0));
          } else if (mode == Mode::Threshold) {
            pick = pick_above_threshold(row, o.threshold);
          } else {
            if (o.alg_temp > 0)  // multinomial without replacement on softmax(conf / alg_temp) = Gumbel-top-k
              for (Proposal& p : row) {
                const DrawKey key = draw_key(o.independent_rows, b, p.pos, L);
                p.confidence = p.confidence / o.alg_temp +
                               Rng::keyed(o.seed, {kPositionDraw, key.row, uint64_t(step), key.pos}).gumbel();
              }
            pick = pick_top_k(row, quota[size_t(b)]);
          }
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

Tensor dream_generate(const LogitsFn& logits_fn, const Tensor& prompt_ids, const DreamOptions& opts,
                      const StepCallback& on_step) {
  check(bool(logits_fn), "dream: no logits function");
  return run_dream(LogitsSource{logits_fn, {}, {}}, prompt_ids, opts, on_step);
}

Tensor dream_generate(const RowLogitsFn& logits_fn, const Tensor& prompt_ids, const DreamOptions& opts,
                      const StepCallback& on_step) {
  check(bool(logits_fn), "dream: no logits function");
  return run_dream(LogitsSource{{}, logits_fn, {}}, prompt_ids, opts, on_step);
}

Tensor dream_generate(const RowSampleFn& sample_fn, const Tensor& prompt_ids, const DreamOptions& opts,
                      const StepCallback& on_step) {
  check(bool(sample_fn), "dream: no row sampler");
  return run_dream(LogitsSource{{}, {}, sample_fn}, prompt_ids, opts, on_step);
}

}  // namespace dlx
