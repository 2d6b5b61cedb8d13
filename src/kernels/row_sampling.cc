#include "kernels/row_sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"

namespace dlx {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The largest entry, or NaN when any is NaN (std::max would skip it, and a NaN row would sample as if fine).
float row_max(const float* x, int64_t n) {
  float m = kNegInf;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) return x[i];
    m = std::max(m, x[i]);
  }
  return m;
}

}  // namespace

void softmax(const float* x, int64_t n, float* out) {
  const float m = row_max(x, n);
  check(std::isfinite(m), "softmax: the logits are not finite (no finite logit in the row; max {})", m);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] - m);
    out[i] = e;
    sum += e;
  }
  const double inv = 1.0 / sum;
  for (int64_t i = 0; i < n; ++i) out[i] = float(out[i] * inv);
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

void top_k_filter(float* logits, int64_t n, int64_t k) {
  if (k <= 0 || k >= n) return;
  std::vector<float> tmp(logits, logits + n);
  std::nth_element(tmp.begin(), tmp.begin() + (k - 1), tmp.end(), std::greater<float>());
  const float kth = tmp[k - 1];
  for (int64_t i = 0; i < n; ++i)
    if (logits[i] < kth) logits[i] = kNegInf;
}

void top_p_filter(float* logits, int64_t n, double top_p) {
  if (top_p >= 1.0 || n <= 1) return;
  const float m = row_max(logits, n);
  check(std::isfinite(m), "top_p_filter: the logits are not finite (no finite logit in the row; max {})", m);
  std::vector<double> w(static_cast<size_t>(n));  // unnormalized probabilities
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += w[size_t(i)] = std::exp(logits[i] - m);  // float exp, double sums
  const double budget = top_p * total;  // compare unnormalized masses

  // Strict total order: larger logit first, then lower index (torch's sort order is unspecified for ties).
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };

  // The first `cut` entries of the order are kept, with cut = the smallest j >= 1 whose head mass exceeds top_p
  // (entry j then has more than top_p before it). A weighted quickselect finds it in expected O(n): the entries
  // in order[0, lo) precede everything in order[lo, hi) and weigh `acc`; those in order[hi, n) follow it.
  int64_t lo = 0, hi = n, cut = n;
  double acc = 0;
  uint64_t pick = 0x9e3779b97f4a7c15ull;  // deterministic pivot choice
  while (hi - lo > 32) {
    pick = pick * 6364136223846793005ull + 1442695040888963407ull;
    std::swap(order[size_t(lo + int64_t((pick >> 33) % uint64_t(hi - lo)))], order[size_t(hi - 1)]);
    const int32_t pivot = order[size_t(hi - 1)];
    const auto mid_it = std::partition(order.begin() + lo, order.begin() + (hi - 1),
                                       [&](int32_t a) { return before(a, pivot); });
    const int64_t mid = mid_it - order.begin();
    std::swap(order[size_t(mid)], order[size_t(hi - 1)]);  // pivot at mid
    double head = 0;
    for (int64_t j = lo; j < mid; ++j) head += w[size_t(order[size_t(j)])];
    if (acc + head > budget) {
      hi = mid;  // the cut is inside the entries before the pivot
    } else if (acc + head + w[size_t(pivot)] > budget) {
      lo = hi = mid + 1;  // the pivot is the last kept entry
      cut = mid + 1;
    } else {
      acc += head + w[size_t(pivot)];
      lo = mid + 1;
    }
  }
  if (lo < hi) {  // finish the small segment by sorting it; the cut is at most hi (rounding aside)
    if (hi < n) cut = hi;
    std::sort(order.begin() + lo, order.begin() + hi, before);
    for (int64_t j = lo; j < hi; ++j) {
      acc += w[size_t(order[size_t(j)])];
      if (acc > budget) {
        cut = j + 1;
        break;
      }
    }
  }
  for (int64_t j = std::max<int64_t>(cut, 1); j < n; ++j) logits[order[size_t(j)]] = kNegInf;
}

int64_t sample_categorical(const float* probs, int64_t n, double u) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += probs[i];
  const double target = u * total;
  double cum = 0;
  int64_t last_positive = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (probs[i] <= 0) continue;
    cum += probs[i];
    last_positive = i;
    if (cum > target) return i;
  }
  check(last_positive >= 0, "sample_categorical: all probabilities are zero");
  return last_positive;  // u * total rounded up to the full sum
}

double neg_entropy(const float* probs, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i)
    if (probs[i] > 0) s += double(probs[i]) * double(std::log(probs[i] + 1e-10f));  // float32, as the reference
  return s;
}

double top2_margin(const float* probs, int64_t n) {
  float a = kNegInf, b = kNegInf;  // largest, second largest (duplicates count twice)
  for (int64_t i = 0; i < n; ++i) {
    if (probs[i] > a) {
      b = a;
      a = probs[i];
    } else if (probs[i] > b) {
      b = probs[i];
    }
  }
  return n >= 2 ? double(a) - double(b) : double(a);
}

double softmax_prob(const float* logits, int64_t n, int64_t token) {
  const float m = row_max(logits, n);
  check(std::isfinite(m), "softmax_prob: the logits are not finite (no finite logit in the row; max {})", m);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - double(m));
  return std::exp(double(logits[token]) - double(m)) / sum;
}

void suppress_tokens(float* logits, int64_t n, std::span<const int64_t> ids) {
  for (int64_t id : ids)
    if (id >= 0 && id < n) logits[id] = kNegInf;
}

void cfg_combine(const float* cond, const float* uncond, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = uncond[i] + (scale + 1.0f) * (cond[i] - uncond[i]);
}

TokenChoice sample_token(float* logits, int64_t n, const TokenSampling& s, Confidence kind, double u) {
  if (s.temperature > 0)
    for (int64_t i = 0; i < n; ++i) logits[i] /= s.temperature;
  top_p_filter(logits, n, s.top_p);
  top_k_filter(logits, n, s.top_k);
  // Greedy takes the argmax of the filtered logits (the reference takes it of the probabilities: the same
  // entry unless exp() rounds two nearly equal logits to one probability).
  const int64_t greedy = s.temperature > 0 ? -1 : argmax(logits, n);
  softmax(logits, n, logits);
  TokenChoice c;
  c.token = s.temperature > 0 ? sample_categorical(logits, n, u) : greedy;
  c.prob = logits[c.token];
  switch (kind) {
    case Confidence::Prob: c.confidence = c.prob; break;
    case Confidence::Margin: c.confidence = top2_margin(logits, n); break;
    case Confidence::NegEntropy: c.confidence = neg_entropy(logits, n); break;
  }
  return c;
}

TokenChoice gumbel_choice(const float* logits, int64_t n, double temperature, Rng* rng) {
  TokenChoice c;
  if (temperature == 0) {
    c.token = argmax(logits, n);
  } else {
    double best = -std::numeric_limits<double>::infinity();
    c.token = -1;
    for (int64_t v = 0; v < n; ++v) {
      const double u = rng->uniform_open();  // drawn for every entry, so the stream never depends on values
      const double score = double(logits[v]) - temperature * std::log(-std::log(u));
      if (score > best) best = score, c.token = v;
    }
    check(c.token >= 0, "gumbel_choice: the row has no finite logit");
  }
  c.prob = softmax_prob(logits, n, c.token);
  c.confidence = c.prob;
  return c;
}

void check_row_sampling(const RowSampling& how, const std::vector<RowDraw>& draws, int64_t rows, const char* op) {
  check(how.temperature >= 0 && std::isfinite(how.temperature), "{}: temperature must be >= 0 (got {})", op,
        how.temperature);
  check(how.top_p > 0 && how.top_p <= 1, "{}: top_p must be in (0, 1] (got {})", op, how.top_p);
  check(how.top_k >= 0, "{}: top_k must be >= 0 (got {})", op, how.top_k);
  check(how.cfg_scale >= 0 && std::isfinite(how.cfg_scale), "{}: cfg_scale must be >= 0 (got {})", op, how.cfg_scale);
  for (size_t i = 0; i < draws.size(); ++i) {
    const RowDraw& d = draws[i];
    check(d.row >= 0 && d.row < rows, "{}: draw {} reads row {} of {} logits rows", op, i, d.row, rows);
    check(how.cfg_scale <= 0 || (d.uncond_row >= 0 && d.uncond_row < rows),
          "{}: draw {} needs an unconditional row in [0, {}) for cfg_scale {} (got {})", op, i, rows, how.cfg_scale,
          d.uncond_row);
    check(how.rule != RowSampling::Rule::Dream || how.temperature <= 0 || (d.u >= 0 && d.u < 1),
          "{}: draw {} has uniform {} outside [0, 1)", op, i, d.u);
  }
}

std::vector<TokenChoice> sample_rows_host(const std::function<const float*(int64_t)>& row, int64_t V,
                                          const RowSampling& how, const std::vector<RowDraw>& draws) {
  check(V >= 1, "sample_rows: empty vocabulary");
  std::vector<TokenChoice> out(draws.size());
  const TokenSampling sampling{how.temperature, how.top_p, how.top_k};
  parallel_for(int64_t(draws.size()), 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> x(static_cast<size_t>(V));
    for (int64_t i = lo; i < hi; ++i) {
      const RowDraw& d = draws[size_t(i)];
      const float* cond = row(d.row);
      if (how.cfg_scale > 0)
        cfg_combine(cond, row(d.uncond_row), V, how.cfg_scale, x.data());
      else
        std::copy(cond, cond + V, x.begin());
      suppress_tokens(x.data(), V, how.suppress);
      if (how.rule == RowSampling::Rule::Dream) {
        out[size_t(i)] = sample_token(x.data(), V, sampling, how.confidence, d.u);
      } else {
        Rng noise = Rng::keyed(how.seed, {d.noise_key[0], d.noise_key[1], d.noise_key[2], d.noise_key[3]});
        out[size_t(i)] = gumbel_choice(x.data(), V, how.temperature, &noise);
      }
    }
  });
  return out;
}

}  // namespace dlx
