#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "kernels/backend.h"

namespace dlx {

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
