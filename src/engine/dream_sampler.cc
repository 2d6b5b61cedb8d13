#include "engine/dream_sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "engine/unmask_policy.h"

namespace dlx {

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

// Purposes of the keyed random streams: Rng::keyed(seed, {purpose, row, step, position}).
enum : uint64_t { kTokenDraw = 1, kTransferDraw = 2, kPositionDraw = 3 };

Confidence confidence_of(DreamAlg alg) {
  if (alg == DreamAlg::TopkMargin) return Confidence::Margin;
  if (alg == DreamAlg::Entropy) return Confidence::NegEntropy;
  return Confidence::Prob;  // maskgit_plus (origin ranks nothing)
}

class DreamPolicy final : public Policy {
 public:
  using Policy::Policy;
  const char* name() const override { return "dream"; }

  void validate() const override {
    check(o_.eps > 0 && o_.eps < 1, "dream: eps must be in (0, 1) (got {})", o_.eps);
    check(o_.alg_temp >= 0 && std::isfinite(o_.alg_temp), "dream: alg_temp must be >= 0 (got {})", o_.alg_temp);
    check(o_.top_p > 0 && o_.top_p <= 1, "dream: top_p must be in (0, 1] (got {})", o_.top_p);
    check(o_.top_k >= 0, "dream: top_k must be >= 0 (got {})", o_.top_k);
    check((o_.threshold == 0 && o_.tokens_per_step == 0) || o_.alg != DreamAlg::Origin,
          "dream: alg origin ranks no positions; threshold / tokens_per_step need maskgit_plus, topk_margin or "
          "entropy");
  }

  bool fills_prompt_masks() const override { return true; }  // as the reference, without blocks

  void start(const Tensor& x, const Tensor&) override {
    L_ = x.dim(1);
    how_ = {.rule = RowSampling::Rule::Dream, .temperature = o_.temperature, .top_p = o_.top_p, .top_k = o_.top_k,
            .confidence = confidence_of(o_.alg), .suppress = never_generated()};
  }

  void start_block(int steps, const std::vector<int64_t>&) override {
    if (steps != steps_) t_ = dream_timesteps(steps, o_.eps), steps_ = steps;
  }

  int64_t scheduled(int64_t b, int i, int step, std::vector<int64_t>& open) const override {
    if (o_.alg != DreamAlg::Origin) return dream_transfer_count(int64_t(open.size()), i, steps_, t_);
    // Each masked position moves with probability 1 - s/t (float32, as the reference), all at the end.
    const float p_transfer = i < steps_ - 1 ? 1.0f - t_[size_t(i) + 1] / t_[size_t(i)] : 1.0f;
    std::vector<int64_t> moving;
    for (int64_t p : open)
      if (const DrawKey key = draw_key(o_.independent_rows, b, p, L_);
          Rng::keyed(o_.seed, {kTransferDraw, key.row, uint64_t(step), key.pos}).uniform() < p_transfer)
        moving.push_back(p);
    open = std::move(moving);
    return int64_t(open.size());
  }

  // Position p reads logits row p - 1 (row 0 for p = 0), which is Dream's `cat(logits[:, :1], logits[:, :-1])`
  // without building the shifted tensor; one draw per site with the site's own uniform, so a row's tokens do not
  // depend on the other rows of the batch.
  std::vector<Proposal> propose(const LogitsSource& source, const Tensor& x, const Tensor& key_mask,
                                const std::vector<Site>& sites, int step) const override {
    std::vector<RowDraw> draws(sites.size());
    for (size_t i = 0; i < sites.size(); ++i) {
      const Site s = sites[i];
      draws[i].row = s.row * L_ + std::max<int64_t>(s.pos - 1, 0);
      const DrawKey key = draw_key(o_.independent_rows, s.row, s.pos, L_);
      draws[i].u =
          o_.temperature > 0 ? Rng::keyed(o_.seed, {kTokenDraw, key.row, uint64_t(step), key.pos}).uniform() : 0.0;
    }
    const std::vector<TokenChoice> choices = source.choose(x, key_mask, how_, draws);
    std::vector<Proposal> out(sites.size());
    for (size_t i = 0; i < sites.size(); ++i)
      out[i] = Proposal{sites[i].pos, choices[i].token, choices[i].prob, choices[i].confidence};
    return out;
  }

  std::vector<size_t> pick(int64_t b, std::vector<Proposal>& row, int64_t quota, int step) const override {
    if (o_.alg == DreamAlg::Origin) {  // the transfer draws already chose the positions
      std::vector<size_t> all(row.size());
      std::iota(all.begin(), all.end(), size_t(0));
      return all;
    }
    if (o_.alg_temp > 0)  // multinomial without replacement on softmax(conf / alg_temp) = Gumbel-top-k
      for (Proposal& p : row) {
        const DrawKey key = draw_key(o_.independent_rows, b, p.pos, L_);
        p.confidence =
            p.confidence / o_.alg_temp + Rng::keyed(o_.seed, {kPositionDraw, key.row, uint64_t(step), key.pos}).gumbel();
      }
    return pick_top_k(row, quota);
  }

 private:
  int64_t L_ = 0;
  int steps_ = 0;
  std::vector<float> t_;
  RowSampling how_;
};

}  // namespace

std::unique_ptr<Policy> make_dream_policy(const UnmaskOptions& o) { return std::make_unique<DreamPolicy>(o); }

}  // namespace dlx
