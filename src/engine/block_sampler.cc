#include "engine/block_sampler.h"

#include <algorithm>

#include "core/error.h"
#include "core/rng.h"

namespace dlx {

namespace {

constexpr uint64_t kBlockTokenDraw = 0x626c6f636b746f6bULL;  // purpose word of the keyed token draws

struct Row {
  enum class Phase { Prefill, Denoise, Commit, Done };
  Tensor ids;  // I64 [1, L]: prompt, then the generated region (masks until revealed), L a multiple of bs
  int64_t P = 0, L = 0;
  KvCache cache;
  Phase phase = Phase::Prefill;
  int64_t block = 0;  // current block index
  int64_t sub = 0;    // start of the current sub-block (sequence index)
  int64_t from = 0;   // the next pass's window begins here: the block's start, or earlier to also write the final
                      // keys and values of the blocks before it (prompt blocks, the block just finished)
  int step = 0;       // steps taken in the current block
  uint64_t passes = 0;
  int64_t* x() { return ids.data<int64_t>(); }
};

// SDAR's get_num_transfer_tokens: the block's size spread over `steps` steps, the remainder on the first ones.
int64_t scheduled(int64_t bs, int steps, int step) {
  if (steps <= 0) return 1;
  if (step >= steps) return bs;
  return bs / steps + (step < bs % steps ? 1 : 0);
}

// Sets the row on block `blk` (or Done past the canvas): its first sub-block holding a mask, or Commit when none.
void enter_block(Row& r, int64_t blk, int64_t bs, int64_t sb, int64_t mask) {
  r.block = blk;
  r.step = 0;
  r.from = blk * bs;
  if (blk * bs >= r.L) {
    r.phase = Row::Phase::Done;
    return;
  }
  for (int64_t a = blk * bs; a < (blk + 1) * bs; a += sb)
    for (int64_t l = a; l < a + sb; ++l)
      if (r.x()[l] == mask) {
        r.sub = a;
        r.phase = Row::Phase::Denoise;
        return;
      }
  r.phase = Row::Phase::Commit;
}

// Whether a stop id has been decoded with no mask before it in the generated region.
bool stopped(Row& r, const std::vector<int64_t>& stops, int64_t mask) {
  for (int64_t l = r.P; l < r.L; ++l) {
    const int64_t t = r.x()[l];
    if (t == mask) return false;
    if (std::find(stops.begin(), stops.end(), t) != stops.end()) return true;
  }
  return false;
}

}  // namespace

BlockForwardFn model_block_forward(Model& model) {
  return [&model](std::vector<BlockPass>& passes) {
    std::vector<SlotPass> slots(passes.size());
    for (size_t i = 0; i < passes.size(); ++i) {
      slots[i].ids = passes[i].ids;
      slots[i].cache = passes[i].cache;
      slots[i].begin = passes[i].begin;
      slots[i].end = passes[i].end;
      slots[i].logit_rows = passes[i].rows;
    }
    BlockLogits out;
    out.rows = model.forward_slots_rows(slots, out.first);
    return out;
  };
}

Tensor block_generate(Backend& be, const BlockForwardFn& forward, const std::vector<std::vector<int64_t>>& prompts,
                      const BlockDecodeOptions& o, int64_t pad_id, const StepCallback& on_step, int* passes_run) {
  const int64_t bs = o.block_size, mask = o.mask_token_id, N = o.max_new_tokens;
  const int64_t sb = o.sub_block > 0 ? o.sub_block : bs;
  check(bs > 0, "block diffusion: block size must be positive, got {}", bs);
  check(bs % sb == 0, "block diffusion: sub-block size {} does not divide the block size {}", sb, bs);
  check(o.steps >= 0 && o.steps <= bs, "block diffusion: steps per block must be in [0, {}] (the block size), got {}",
        bs, o.steps);
  check(mask >= 0, "block diffusion: no mask token id");
  check(N > 0, "max_new_tokens must be positive, got {}", N);
  check(!prompts.empty(), "no prompts to generate from");
  const int64_t B = int64_t(prompts.size());
  std::vector<Row> rows(static_cast<size_t>(B));
  int64_t Pmax = 0;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[size_t(b)];
    check(!p.empty(), "the prompt is empty (no tokens to condition on)");
    Row& r = rows[size_t(b)];
    r.P = int64_t(p.size());
    r.L = (r.P + N + bs - 1) / bs * bs;
    r.ids = Tensor::zeros(DType::I64, {1, r.L});
    std::copy(p.begin(), p.end(), r.x());
    std::fill(r.x() + r.P, r.x() + r.L, mask);
    r.cache.fp8 = o.fp8_kv;
    Pmax = std::max(Pmax, r.P);
    // The prompt's whole blocks are written by the first block's first pass, unless Fast-dLLM v2 needs the
    // prefill's last row first (the prompt ends on a block boundary): then a prefill pass of its own.
    if (!(o.shift && r.P % bs == 0)) {
      enter_block(r, r.P / bs, bs, sb, mask);
      r.from = 0;
    }
  }

  RowSampling sample;
  sample.temperature = o.temperature;
  sample.top_p = o.top_p;
  sample.top_k = o.top_k;
  sample.suppress = {mask};  // a step never proposes the mask token itself
  RowSampling greedy;
  greedy.suppress = {mask};

  int passes = 0;
  int64_t revealed = 0;
  for (;;) {
    std::vector<BlockPass> batch;
    std::vector<Row*> who;
    for (Row& r : rows) {
      if (r.phase == Row::Phase::Done) continue;
      BlockPass p;
      p.ids = r.ids;
      p.cache = &r.cache;
      if (r.phase == Row::Phase::Prefill) {
        p.begin = 0, p.end = r.P / bs * bs;
        p.rows = {p.end - 1};  // Fast-dLLM v2's next token when the prompt fills its last block
      } else {
        p.begin = r.from, p.end = (r.block + 1) * bs;
        if (r.phase == Row::Phase::Commit) {
          p.rows = {p.end - 1};  // Fast-dLLM v2: the next block's first token
        } else {
          for (int64_t l = r.sub; l < r.sub + sb; ++l)
            if (r.x()[l] == mask) {
              check(l - (o.shift ? 1 : 0) >= p.begin, "block diffusion: the first position of block {} is masked",
                    r.block);
              p.rows.push_back(l - (o.shift ? 1 : 0));
            }
        }
      }
      batch.push_back(std::move(p));
      who.push_back(&r);
    }
    if (batch.empty()) break;
    const BlockLogits logits = forward(batch);
    check(logits.first.size() == batch.size(), "block diffusion: {} logit row sets for {} passes", logits.first.size(),
          batch.size());
    ++passes;
    // Every row's draws of this pass, sampled in (at most) two calls, not one per row (each call is a host
    // synchronization on a GPU): greedy for the token after a prefill or commit pass (Fast-dLLM v2), `sample` for
    // the masked rows of a diffusion step. draw_at[i]: where row i's draws start in its list (-1: a prefill or
    // commit pass that takes no token).
    std::vector<RowDraw> greedy_draws, sample_draws;
    std::vector<int64_t> draw_at(who.size(), -1);
    for (size_t i = 0; i < who.size(); ++i) {
      Row& r = *who[i];
      const BlockPass& p = batch[i];
      ++r.passes;
      if (r.phase == Row::Phase::Prefill || r.phase == Row::Phase::Commit) {
        if (o.shift && p.end < r.L && (r.phase == Row::Phase::Commit || r.P % bs == 0)) {
          draw_at[i] = int64_t(greedy_draws.size());
          RowDraw d;
          d.row = logits.first[i];
          greedy_draws.push_back(d);
        }
        continue;
      }
      draw_at[i] = int64_t(sample_draws.size());
      for (size_t j = 0; j < p.rows.size(); ++j) {
        RowDraw d;
        d.row = logits.first[i] + int64_t(j);
        if (o.temperature > 0)
          d.u = Rng::keyed(o.seed, {kBlockTokenDraw, 0, r.passes, uint64_t(p.rows[j] + (o.shift ? 1 : 0))}).uniform();
        sample_draws.push_back(d);
      }
    }
    const std::vector<TokenChoice> greedy_ch =
        greedy_draws.empty() ? std::vector<TokenChoice>{} : be.sample_rows(logits.rows, greedy, greedy_draws);
    const std::vector<TokenChoice> sample_ch =
        sample_draws.empty() ? std::vector<TokenChoice>{} : be.sample_rows(logits.rows, sample, sample_draws);
    for (size_t i = 0; i < who.size(); ++i) {
      Row& r = *who[i];
      const BlockPass& p = batch[i];
      if (r.phase == Row::Phase::Prefill || r.phase == Row::Phase::Commit) {
        const bool commit = r.phase == Row::Phase::Commit;
        if (draw_at[i] >= 0) {
          r.x()[p.end] = greedy_ch[size_t(draw_at[i])].token;
          ++revealed;
        }
        if (commit && stopped(r, o.stop_ids, mask)) {
          r.phase = Row::Phase::Done;
          continue;
        }
        enter_block(r, commit ? r.block + 1 : r.P / bs, bs, sb, mask);
        continue;
      }
      // A diffusion step over the current sub-block.
      std::vector<Proposal> props(p.rows.size());
      for (size_t j = 0; j < p.rows.size(); ++j) {
        const TokenChoice& c = sample_ch[size_t(draw_at[i]) + j];
        props[j].pos = p.rows[j] + (o.shift ? 1 : 0);
        props[j].token = c.token;
        props[j].prob = props[j].confidence = c.prob;
      }
      const int64_t n = std::min<int64_t>(scheduled(bs, o.steps, r.step), int64_t(props.size()));
      std::vector<size_t> pick = pick_above_threshold(props, o.threshold);
      if (int64_t(pick.size()) < n) pick = pick_top_k(props, n);
      for (size_t j : pick) r.x()[props[j].pos] = props[j].token;
      revealed += int64_t(pick.size());
      ++r.step;
      if (stopped(r, o.stop_ids, mask)) {
        r.phase = Row::Phase::Done;
        continue;
      }
      // Next: the same sub-block while it holds masks, else the next one that does, else the commit pass.
      r.from = r.block * bs;
      const int64_t block_end = (r.block + 1) * bs;
      while (r.sub < block_end && std::none_of(r.x() + r.sub, r.x() + r.sub + sb, [&](int64_t t) { return t == mask; }))
        r.sub += sb;
      if (r.sub < block_end) continue;
      // The block is finished. Nothing reads the last block's cache; Fast-dLLM v2 commits with a pass of its own
      // (it also gives the next block's first token); SDAR's next block's first pass writes it (window from here).
      if (block_end >= r.L) {
        r.phase = Row::Phase::Done;
      } else if (o.shift) {
        r.phase = Row::Phase::Commit;
      } else {
        enter_block(r, r.block + 1, bs, sb, mask);
        r.from = block_end - bs;
      }
    }
    if (on_step) {
      // The canvas: every row's ids, padded to the longest row with pad_id.
      int64_t Lmax = 0;
      for (Row& r : rows) Lmax = std::max(Lmax, r.L);
      Tensor canvas = Tensor::zeros(DType::I64, {B, Lmax});
      std::fill_n(canvas.data<int64_t>(), B * Lmax, pad_id);
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(rows[size_t(b)].x(), rows[size_t(b)].L, canvas.data<int64_t>() + b * Lmax);
      on_step(passes - 1, int(N + (Pmax + N) / bs + 2), revealed, canvas);
    }
  }
  if (passes_run) *passes_run = passes;

  Tensor out = Tensor::zeros(DType::I64, {B, Pmax + N});
  for (int64_t b = 0; b < B; ++b) {
    Row& r = rows[size_t(b)];
    int64_t* o_row = out.data<int64_t>() + b * (Pmax + N);
    const int64_t pad = Pmax - r.P;
    std::fill(o_row, o_row + pad, pad_id);
    std::copy(r.x(), r.x() + r.P + N, o_row + pad);
  }
  return out;
}

}  // namespace dlx
