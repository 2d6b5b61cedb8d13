#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "kernels/backend.h"

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

Tensor make_canvas(const Tensor& prompt_ids, int64_t new_tokens, int64_t mask_id) {
  check(prompt_ids.defined() && prompt_ids.device() == Device::CPU && prompt_ids.dtype() == DType::I64 &&
            prompt_ids.rank() == 2 && prompt_ids.dim(0) >= 1,
        "prompt ids must be a host I64 tensor [B >= 1, P], got {} {}", dtype_name(prompt_ids.dtype()),
        shape_str(prompt_ids.shape()));
  const int64_t B = prompt_ids.dim(0), P = prompt_ids.dim(1), L = P + new_tokens;
  Tensor x = Tensor::zeros(DType::I64, {B, L});
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* src = prompt_ids.data<int64_t>() + b * P;
    int64_t* dst = x.data<int64_t>() + b * L;
    std::copy(src, src + P, dst);
    std::fill(dst + P, dst + L, mask_id);
  }
  return x;
}

Tensor extend_key_mask(const Tensor& prompt_mask, int64_t batch, int64_t prompt_len, int64_t total_len) {
  if (!prompt_mask.defined()) return {};
  check(prompt_mask.device() == Device::CPU && prompt_mask.dtype() == DType::U8 &&
            prompt_mask.shape() == Shape{batch, prompt_len},
        "prompt_mask must be a host U8 tensor {} like the prompt ids, got {} {}", shape_str({batch, prompt_len}),
        dtype_name(prompt_mask.dtype()), shape_str(prompt_mask.shape()));
  Tensor km = Tensor::zeros(DType::U8, {batch, total_len});
  for (int64_t b = 0; b < batch; ++b) {
    const uint8_t* src = prompt_mask.data<uint8_t>() + b * prompt_len;
    uint8_t* dst = km.data<uint8_t>() + b * total_len;
    for (int64_t i = 0; i < prompt_len; ++i) dst[i] = src[i] ? 1 : 0;
    std::fill(dst + prompt_len, dst + total_len, uint8_t(1));
  }
  return km;
}

LogitRows LogitRows::all(Tensor logits, const Tensor& ids) {
  const Tensor& t = logits;
  check(t.defined() && t.device() == Device::CPU && t.dtype() == DType::F32 && t.rank() == 3 &&
            t.dim(0) == ids.dim(0) && t.dim(1) == ids.dim(1) && t.dim(2) >= 1,
        "logits callback returned {} {}, expected host F32 [{}, {}, V]", dtype_name(t.dtype()), shape_str(t.shape()),
        ids.dim(0), ids.dim(1));
  LogitRows r;
  r.vocab_ = t.dim(2);
  r.data_ = std::move(logits);
  return r;
}

LogitRows LogitRows::some(Tensor logits, const Tensor& ids, std::vector<int64_t> rows) {
  const Tensor& t = logits;
  check(t.defined() && t.device() == Device::CPU && t.dtype() == DType::F32 && t.rank() == 2 &&
            t.dim(0) == int64_t(rows.size()) && t.dim(1) >= 1,
        "row logits callback returned {} {}, expected host F32 [{}, V]", dtype_name(t.dtype()), shape_str(t.shape()),
        rows.size());
  for (int64_t row : rows)
    check(row >= 0 && row < ids.dim(0) * ids.dim(1), "logits row {} outside the {} canvas", row, shape_str(ids.shape()));
  LogitRows r;
  r.vocab_ = t.dim(1);
  r.data_ = std::move(logits);
  r.rows_ = std::move(rows);
  return r;
}

const float* LogitRows::row(int64_t flat) const {
  if (rows_.empty()) return data_.data<float>() + flat * vocab_;
  const auto it = std::lower_bound(rows_.begin(), rows_.end(), flat);
  check(it != rows_.end() && *it == flat, "logits of row {} were not requested", flat);
  return data_.data<float>() + (it - rows_.begin()) * vocab_;
}

LogitRows LogitsSource::fetch(const Tensor& ids, const Tensor& key_mask, std::vector<int64_t> wanted) const {
  if (!rows) {
    check(bool(all), "no logits callback");
    return LogitRows::all(all(ids, key_mask), ids);
  }
  std::sort(wanted.begin(), wanted.end());
  wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
  return LogitRows::some(rows(ids, key_mask, wanted), ids, wanted);
}

std::vector<TokenChoice> LogitsSource::choose(const Tensor& ids, const Tensor& key_mask, const RowSampling& how,
                                               const std::vector<RowDraw>& draws) const {
  if (sample) {
    std::vector<TokenChoice> out = sample(ids, key_mask, how, draws);
    check(out.size() == draws.size(), "row sampler returned {} choices for {} draws", out.size(), draws.size());
    return out;
  }
  std::vector<int64_t> wanted;
  for (const RowDraw& d : draws) {
    wanted.push_back(d.row);
    if (how.cfg_scale > 0) wanted.push_back(d.uncond_row);
  }
  const LogitRows logits = fetch(ids, key_mask, wanted);
  return sample_rows_host([&](int64_t flat) { return logits.row(flat); }, logits.vocab(), how, draws);
}

RowSampleFn backend_row_sampler(Backend& be, DeviceRowLogitsFn logits) {
  check(bool(logits), "backend_row_sampler: no logits function");
  return [&be, logits = std::move(logits)](const Tensor& ids, const Tensor& key_mask, const RowSampling& how,
                                           const std::vector<RowDraw>& draws) {
    std::vector<int64_t> rows;
    for (const RowDraw& d : draws) {
      rows.push_back(d.row);
      if (how.cfg_scale > 0) rows.push_back(d.uncond_row);
    }
    const int64_t canvas = ids.dim(0) * ids.dim(1);
    for (int64_t r : rows) check(r >= 0 && r < canvas, "row sampler: row {} outside the {} canvas", r, shape_str(ids.shape()));
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    auto index = [&](int64_t flat) { return int64_t(std::lower_bound(rows.begin(), rows.end(), flat) - rows.begin()); };
    std::vector<RowDraw> local = draws;  // rows renumbered into the computed [rows.size(), V]
    for (RowDraw& d : local) {
      d.row = index(d.row);
      if (how.cfg_scale > 0) d.uncond_row = index(d.uncond_row);
    }
    const Tensor l = logits(ids, key_mask, rows);
    check(l.defined() && l.rank() == 2 && l.dim(0) == int64_t(rows.size()),
          "row sampler: the logits function returned {} for {} rows", shape_str(l.shape()), rows.size());
    return be.sample_rows(l, how, local);
  };
}

void softmax(const float* x, int64_t n, float* out) {
  const float m = row_max(x, n);
  check(std::isfinite(m), "softmax: the logits are not finite (max {}): the model computed NaN or Inf", m);
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
  check(std::isfinite(m), "top_p_filter: the logits are not finite (max {}): the model computed NaN or Inf", m);
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
  check(std::isfinite(m), "softmax_prob: the logits are not finite (max {}): the model computed NaN or Inf", m);
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

namespace {
// Ranking: higher score first, then lower position.
template <typename Key>
std::vector<size_t> ranked(const std::vector<Proposal>& props, Key key) {
  std::vector<size_t> idx(props.size());
  std::iota(idx.begin(), idx.end(), size_t(0));
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    const double ka = key(props[a]), kb = key(props[b]);
    return ka > kb || (ka == kb && props[a].pos < props[b].pos);
  });
  return idx;
}
}  // namespace

std::vector<size_t> pick_top_k(const std::vector<Proposal>& props, int64_t k) {
  std::vector<size_t> idx = ranked(props, [](const Proposal& p) { return p.confidence; });
  idx.resize(size_t(std::clamp<int64_t>(k, 0, int64_t(idx.size()))));
  return idx;
}

std::vector<size_t> pick_above_threshold(const std::vector<Proposal>& props, double threshold) {
  std::vector<size_t> idx = ranked(props, [](const Proposal& p) { return p.prob; });
  size_t keep = idx.empty() ? 0 : 1;
  while (keep < idx.size() && props[idx[keep]].prob >= threshold) ++keep;
  idx.resize(keep);
  return idx;
}

int64_t find_stop(const int64_t* ids, int64_t n, std::span<const int64_t> stop_ids) {
  for (int64_t i = 0; i < n; ++i)
    if (std::find(stop_ids.begin(), stop_ids.end(), ids[i]) != stop_ids.end()) return i;
  return n;
}

std::vector<int64_t> generated_lengths(const Tensor& out, int64_t prompt_len, std::span<const int64_t> stop_ids) {
  check(out.dtype() == DType::I64 && out.rank() == 2, "generated_lengths: expected I64 [B, L] ids, got {} {}",
        dtype_name(out.dtype()), shape_str(out.shape()));
  const int64_t B = out.dim(0), L = out.dim(1);
  check(prompt_len >= 0 && prompt_len <= L, "generated_lengths: prompt_len {} outside [0, {}]", prompt_len, L);
  std::vector<int64_t> lens(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b)
    lens[size_t(b)] = find_stop(out.data<int64_t>() + b * L + prompt_len, L - prompt_len, stop_ids);
  return lens;
}

}  // namespace dlx
