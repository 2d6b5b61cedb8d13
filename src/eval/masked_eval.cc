#include "eval/masked_eval.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/log.h"

namespace dlx {

double mask_uniform(uint64_t seed, int64_t w, int64_t j) {
  const uint64_t x = (seed << 40) ^ (uint64_t(w) << 20) ^ uint64_t(j);
  return double(splitmix64(x) >> 11) / 9007199254740992.0;  // 2^53
}

double MaskedEvalRatio::ppl() const { return std::exp(nll); }

namespace {

struct Tally {
  double nll = 0;
  int64_t masked = 0, correct = 0;
};

// Windows [w0, w1) (all of length L) with draw seed `seed`: one forward, logits only for the masked rows.
void eval_batch(Model& model, const std::vector<int32_t>& tokens, int64_t window, int64_t w0, int64_t w1, int64_t L,
                double ratio, uint64_t seed, Tally& t) {
  const ModelConfig& c = model.config();
  const int64_t B = w1 - w0, V = c.vocab_size;
  Tensor ids = Tensor::zeros(DType::I64, {B, L});
  std::vector<int64_t> rows, targets;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < L; ++j) {
      const int64_t w = w0 + b, tok = tokens[size_t(w * window + j)];
      const bool m = j >= 1 && mask_uniform(seed, w, j) < ratio;
      ids.data<int64_t>()[b * L + j] = m ? c.mask_token_id : tok;
      if (m) {
        rows.push_back(b * L + (c.shift_logits() ? j - 1 : j));
        targets.push_back(tok);
      }
    }
  if (rows.empty()) return;
  Tensor logits = model.forward(ids, {}, rows);
  for (size_t i = 0; i < rows.size(); ++i) {
    const float* l = logits.data<float>() + int64_t(i) * V;
    int64_t arg = 0;
    for (int64_t v = 1; v < V; ++v)
      if (l[v] > l[arg]) arg = v;
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(double(l[v]) - double(l[arg]));
    t.nll += double(l[arg]) + std::log(s) - double(l[targets[i]]);
    t.correct += arg == targets[i];
  }
  t.masked += int64_t(rows.size());
}

}  // namespace

MaskedEvalResult masked_token_eval(Model& model, const std::vector<int32_t>& tokens, const MaskedEvalOptions& opt) {
  const ModelConfig& c = model.config();
  check(c.mask_token_id >= 0 && c.mask_token_id < c.vocab_size,
        "eval: the model has no mask token (mask_token_id in config.json)");
  check(opt.window >= 2, "eval: window {} is too short (at least 2 tokens)", opt.window);
  check(opt.draws >= 1, "eval: draws must be at least 1 (got {})", opt.draws);
  check(!tokens.empty(), "eval: the text has no tokens");
  for (double r : opt.ratios) check(r > 0.0 && r <= 1.0, "eval: mask ratio {} is outside (0, 1]", r);
  const int64_t N = int64_t(tokens.size()), W = (N + opt.window - 1) / opt.window, V = c.vocab_size;
  for (int32_t t : tokens) check(t >= 0 && t < V, "eval: token id {} is outside the model's vocabulary [0, {})", t, V);

  MaskedEvalResult res;
  res.tokens = N;
  res.windows = W;
  res.window = opt.window;
  res.seed = opt.seed;
  res.draws = opt.draws;
  Progress progress("eval", int64_t(opt.ratios.size()) * W * opt.draws);
  int64_t done = 0;
  for (double ratio : opt.ratios) {
    Tally t;
    for (int64_t draw = 0; draw < opt.draws; ++draw) {
      for (int64_t w0 = 0; w0 < W;) {
        // A batch of consecutive windows of the same length (only the last window can be shorter).
        const int64_t L = std::min(opt.window, N - w0 * opt.window);
        int64_t w1 = w0 + 1;
        while (w1 < W && w1 - w0 < opt.batch_windows && std::min(opt.window, N - w1 * opt.window) == L) ++w1;
        eval_batch(model, tokens, opt.window, w0, w1, L, ratio, opt.seed + uint64_t(draw), t);
        done += w1 - w0;
        progress.update(done, fmt::format("ratio {}", ratio));
        w0 = w1;
      }
    }
    MaskedEvalRatio r;
    r.ratio = ratio;
    r.masked_tokens = t.masked;
    r.nll = t.masked ? t.nll / double(t.masked) : 0.0;
    r.accuracy = t.masked ? double(t.correct) / double(t.masked) : 0.0;
    res.ratios.push_back(r);
  }
  return res;
}

}  // namespace dlx
