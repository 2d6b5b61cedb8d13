// The samplers' per-position work on rows of logits, as one backend op (Backend::sample_rows): each draw names a
// row of a logits matrix [N, V] (and, for classifier-free guidance, an unconditional row), and gets back one
// token, its probability and a confidence. The logits stay where the backend computed them: the CUDA backend runs
// the whole row pipeline on the GPU and copies back only the small results; the host implementation
// (sample_rows_host, also the CPU backend's) runs the row functions below.
//
// Per draw, in this order (the reference samplers' order):
//   x = cond, or uncond + (cfg_scale + 1) * (cond - uncond) when cfg_scale > 0
//   x[suppress] = -inf
//   Dream rule:  x /= temperature (when > 0); top-p filter; top-k filter; p = softmax(x);
//                token = argmax x (temperature 0) or the inverse-CDF draw with the draw's uniform u;
//                prob = p[token]; confidence = prob | top1 - top2 of p | sum p log(p + 1e-10)
//   Gumbel rule (LLaDA): token = argmax x (temperature 0) or argmax x - T log(-log u_v) with one uniform per
//                vocabulary entry from Rng::keyed(seed, noise_key) in index order; prob = confidence =
//                softmax(x)[token] (in double)
// The randomness comes from the host (u, or the key of the noise stream), so a draw's result depends only on its
// own row and key: rows of a batch equal their solo runs on every backend.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/rng.h"

namespace dlx {

enum class Confidence { Prob, Margin, NegEntropy };

struct TokenChoice {
  int64_t token = 0;
  double prob = 0;        // probability of `token` under the (filtered, tempered) distribution
  double confidence = 0;  // the ranking measure chosen by the sampler
};

struct RowSampling {
  enum class Rule { Dream, Gumbel };
  Rule rule = Rule::Dream;
  float temperature = 0;                  // 0: greedy argmax
  float top_p = 1;                        // Dream rule; 1: off
  int64_t top_k = 0;                      // Dream rule; 0: off
  Confidence confidence = Confidence::Prob;  // Dream rule
  float cfg_scale = 0;                    // > 0: every draw has an unconditional row
  std::vector<int64_t> suppress;          // token ids set to -inf (ids outside [0, V) are ignored)
  uint64_t seed = 0;                      // Gumbel rule with temperature > 0: seed of the noise streams
};

struct RowDraw {
  int64_t row = 0;                       // row of the logits matrix
  int64_t uncond_row = -1;               // cfg_scale > 0: the unconditional row
  double u = 0;                          // Dream rule, temperature > 0: uniform in [0, 1) for the categorical draw
  std::array<uint64_t, 4> noise_key{};   // Gumbel rule, temperature > 0: Rng::keyed(seed, noise_key)
};

// ---- One row of logits / probabilities of length n ----

// out = softmax(x); max-subtracted, sum accumulated in double; -inf entries give 0. `out` may alias `x`.
void softmax(const float* x, int64_t n, float* out);
// Index of the first maximum.
int64_t argmax(const float* x, int64_t n);
// Dream's top_k_logits: entries below the k-th largest value become -inf (ties with it are kept). k <= 0: off.
void top_k_filter(float* logits, int64_t n, int64_t k);
// Dream's top_p_logits (nucleus): in descending order (ties: lower index first), an entry is removed when the
// probability mass strictly before it exceeds top_p; the first entry is always kept. Removed entries become
// -inf. top_p >= 1: off. Expected O(n): a weighted quickselect finds the cut, only a short segment is sorted.
void top_p_filter(float* logits, int64_t n, double top_p);
// Inverse-CDF draw from `probs` (need not sum to exactly 1) with u uniform in [0, 1); never returns a
// zero-probability entry.
int64_t sample_categorical(const float* probs, int64_t n, double u);
// sum p * log(p + 1e-10), as Dream's neg_entropy confidence (0 for a one-hot row, more negative when flatter).
double neg_entropy(const float* probs, int64_t n);
// Largest minus second largest probability (Dream's topk_margin confidence); the second is 0 when n == 1.
double top2_margin(const float* probs, int64_t n);
// softmax(logits)[token] computed in double (LLaDA's low_confidence measure).
double softmax_prob(const float* logits, int64_t n, int64_t token);
// Sets the listed token ids to -inf (ids outside [0, n) are ignored).
void suppress_tokens(float* logits, int64_t n, std::span<const int64_t> ids);
// Classifier-free guidance as in LLaDA: out = uncond + (scale + 1) * (cond - uncond). `out` may alias either.
void cfg_combine(const float* cond, const float* uncond, int64_t n, float scale, float* out);

// ---- Choosing a token at one masked position ----


struct TokenSampling {
  float temperature = 0;  // 0: greedy argmax
  float top_p = 1;        // 1: off
  int64_t top_k = 0;      // 0: off
};

// Dream's sample_tokens on one row, in place: logits /= temperature (when > 0), top-p, then top-k filtering,
// then softmax (the row then holds the probabilities). The token is drawn with uniform u when temperature > 0,
// else it is the argmax. confidence = prob | top1 - top2 | neg_entropy of the filtered distribution.
TokenChoice sample_token(float* logits, int64_t n, const TokenSampling& s, Confidence kind, double u);

// LLaDA's add_gumbel_noise + argmax: temperature 0 is the plain argmax and draws nothing; otherwise the token is
// argmax_v exp(l_v) / (-log u_v)^T, taken in log space as l_v - T log(-log u_v) (same argmax, no overflow),
// with one uniform per vocabulary entry from `rng` in index order. prob = softmax(logits)[token] in double.
TokenChoice gumbel_choice(const float* logits, int64_t n, double temperature, Rng* rng);

// Checks the parameters (temperature >= 0, top_p in (0, 1], top_k >= 0, rows in [0, rows) and the cfg rows
// present); throws Error naming `op` and the first bad value.
void check_row_sampling(const RowSampling& how, const std::vector<RowDraw>& draws, int64_t rows, const char* op);

// The host implementation over rows given by `row(i)` (F32, V entries each; draws index rows through it).
// Draws run in parallel on the thread pool.
std::vector<TokenChoice> sample_rows_host(const std::function<const float*(int64_t)>& row, int64_t V,
                                          const RowSampling& how, const std::vector<RowDraw>& draws);

}  // namespace dlx
