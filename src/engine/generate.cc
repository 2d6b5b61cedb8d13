#include "engine/generate.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "core/log.h"
#include "engine/block_sampler.h"
#include "engine/unmask.h"
#include "tokenizer/chat_template.h"

namespace dlx {

std::vector<int64_t> format_prompt(const Tokenizer& tok, const std::string& prompt, bool chat) {
  std::vector<int32_t> ids;
  bool done = false;
  if (chat) {
    if (tok.chat_template().empty()) {
      log_warn("{}: no chat_template in tokenizer_config.json; using the plain prompt", tok.path());
    } else {
      try {
        const SpecialTokens& sp = tok.special();
        std::string text = render_chat_template(tok.chat_template(), {{"user", prompt}}, true,
                                                {{"bos_token", sp.bos_token}, {"eos_token", sp.eos_token}});
        ids = tok.encode(text, false);
        done = true;
      } catch (const Error& e) {
        log_warn("chat template failed ({}); using the plain prompt", e.what());
      }
    }
  }
  if (!done) {
    ids = tok.encode(prompt, false);
    if (tok.special().add_bos_token && tok.special().bos >= 0 && (ids.empty() || ids[0] != tok.special().bos))
      ids.insert(ids.begin(), tok.special().bos);
  }
  return {ids.begin(), ids.end()};
}

namespace {

// Left-padded rows count positions from their first real token, as if the row were alone; undefined (the
// default 0..L-1) without padding.
Tensor positions_from_mask(const Tensor& key_mask, int64_t B, int64_t L) {
  if (!key_mask.defined()) return {};
  Tensor pos = Tensor::zeros(DType::I64, {B, L});
  for (int64_t b = 0; b < B; ++b) {
    int64_t p = 0;
    for (int64_t l = 0; l < L; ++l) {
      pos.data<int64_t>()[b * L + l] = p;
      p += key_mask.data<uint8_t>()[b * L + l] ? 1 : 0;
    }
  }
  return pos;
}

// The logits callback with a block KV cache (the logits stay in the backend's memory for backend_row_sampler).
// Blocks are [P + j*block, P + (j+1)*block) (one block over the whole generation when block is 0). The first
// request in a new block refreshes the cache with a full pass; later ones recompute a window: prefix = [block
// start, L), dual = [block start, block end). Dream reads the logits of position p - 1 for position p, so a
// window also reaches back to the lowest row asked for.
class CachedLogits {
 public:
  CachedLogits(Model& m, CacheMode mode, int64_t prompt_len, int64_t block, int64_t shift, bool fp8 = false,
               const ForwardHooks* hooks = nullptr)
      : m_(m), dual_(mode == CacheMode::Dual), P_(prompt_len), block_(block), shift_(shift) {
    cache_.fp8 = fp8;
    if (hooks) window_ = hooks->forward_window;
  }

  Tensor operator()(const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& rows) {
    const int64_t L = ids.dim(1), block = block_ > 0 ? block_ : L - P_;
    const Tensor pos = positions_from_mask(key_mask, ids.dim(0), L);
    int64_t lo = L, hi = 0;
    for (int64_t r : rows) lo = std::min(lo, r % L), hi = std::max(hi, r % L + 1);
    if (rows.empty()) lo = P_, hi = L;
    const int64_t blk = std::max<int64_t>(0, (lo + shift_ - P_) / block);
    if (blk != current_ || cache_.empty()) {
      current_ = blk;
      return window(ids, key_mask, 0, L, rows, pos);
    }
    const int64_t begin = std::min(P_ + blk * block, lo);
    const int64_t end = dual_ ? std::min(L, std::max(P_ + (blk + 1) * block, hi)) : L;
    return window(ids, key_mask, begin, end, rows, pos);
  }

  // Through the scheduler's hook when there is one, else on the model (the logits in the backend's memory either way).
  Tensor window(const Tensor& ids, const Tensor& key_mask, int64_t begin, int64_t end, const std::vector<int64_t>& rows,
                const Tensor& pos) {
    if (window_) return window_(ids, key_mask, cache_, begin, end, rows, pos);
    return m_.forward_window_device(ids, key_mask, cache_, begin, end, rows, pos);
  }

 private:
  Model& m_;
  bool dual_;
  int64_t P_, block_, shift_;
  int64_t current_ = -1;
  KvCache cache_;
  decltype(ForwardHooks::forward_window) window_;
};

}  // namespace

std::vector<int64_t> stop_token_ids(const Model& model, const Tokenizer& tok) {
  const ModelConfig& c = model.config();
  std::vector<int64_t> stops;
  for (int64_t id : {int64_t(tok.special().eos), int64_t(tok.special().pad), c.eos_token_id, c.pad_token_id})
    if (id >= 0) stops.push_back(id);
  return stops;
}

GenerationResult generate(Model& model, const Tokenizer& tok, const std::vector<int64_t>& prompt_ids,
                          const GenerationOptions& o, const StepCallback& on_step) {
  return generate_batch(model, tok, {prompt_ids}, o, on_step)[0];
}

void validate_generation_options(const Model& model, const GenerationOptions& o) {
  check(o.max_new_tokens > 0, "max_new_tokens must be positive, got {}", o.max_new_tokens);
  check(model.config().mask_token_id >= 0, "{}/config.json has no mask_token_id; a diffusion model needs one", model.dir());
  const ModelConfig& c = model.config();
  if (c.block_diffusion()) {  // the exact block cache is always on
    check(o.block_length == 0 || o.block_length == c.block_size,
          "block length {} differs from the model's block size {} ({}/config.json)", o.block_length, c.block_size,
          model.dir());
    check(o.sub_block >= 0 && (o.sub_block == 0 || c.block_size % o.sub_block == 0),
          "sub block {} must divide the model's block size {}", o.sub_block, c.block_size);
    check(o.steps >= 0, "steps must not be negative, got {}", o.steps);
    return;
  }
  check(o.kv_dtype != KvDtype::FP8 || o.cache != CacheMode::None, "kv_dtype fp8 needs a KV cache (cache prefix or dual)");
}

namespace {

// SDAR and Fast-dLLM v2: engine/block_sampler.h, on the model or through the scheduler's hooks (one row there).
Tensor block_canvas(Model& model, const std::vector<std::vector<int64_t>>& prompts, const GenerationOptions& o,
                    const StepCallback& on_step, const ForwardHooks* hooks, int* steps_out,
                    const std::vector<int64_t>& stop_ids) {
  const ModelConfig& c = model.config();
  BlockDecodeOptions b;
  b.max_new_tokens = o.max_new_tokens;
  b.block_size = c.block_size;
  b.sub_block = o.sub_block > 0 ? o.sub_block : c.sub_block_size;
  b.steps = int(std::min<int64_t>(o.steps, c.block_size));
  // Defaults: SDAR's generate.py confidence_threshold 0.85; Fast-dLLM v2's run_chatbot.py threshold 0.9.
  b.threshold = o.threshold > 0 ? o.threshold : (c.arch == Arch::SDAR ? 0.85f : 0.9f);
  b.shift = c.shift_logits();
  b.temperature = o.temperature;
  b.top_p = o.top_p;
  b.top_k = o.top_k;
  b.seed = o.seed;
  b.mask_token_id = c.mask_token_id;
  b.stop_ids = stop_ids;
  b.fp8_kv = o.kv_dtype == KvDtype::FP8;
  BlockForwardFn forward = model_block_forward(model);
  if (hooks && hooks->forward_window)
    forward = [hooks, &be = model.backend()](std::vector<BlockPass>& passes) {
      // One window pass per row through the hook, then their logits rows gathered into one tensor.
      std::vector<Tensor> parts;
      int64_t total = 0;
      for (BlockPass& p : passes) {
        parts.push_back(hooks->forward_window(p.ids, Tensor(), *p.cache, p.begin, p.end, p.rows, Tensor()));
        total += parts.back().dim(0);
      }
      BlockLogits out;
      out.rows = be.empty(parts.front().dtype(), {total, parts.front().dim(1)});
      int64_t r0 = 0;
      for (const Tensor& t : parts) {
        out.first.push_back(r0);
        Tensor dst = out.rows.slice_rows(r0, r0 + t.dim(0));
        be.copy(t, dst);
        r0 += t.dim(0);
      }
      return out;
    };
  const int64_t pad_id = c.pad_token_id >= 0 ? c.pad_token_id : 0;
  return block_generate(model.backend(), forward, prompts, b, pad_id, on_step, steps_out);
}

}  // namespace

Tensor generate_canvas(Model& model, const std::vector<std::vector<int64_t>>& prompts, const GenerationOptions& o,
                       const StepCallback& on_step, const ForwardHooks* hooks, int* steps_out,
                       const std::vector<int64_t>& stop_ids) {
  const ModelConfig& c = model.config();
  check(!prompts.empty(), "no prompts to generate from");
  for (const auto& p : prompts) check(!p.empty(), "the prompt is empty (no tokens to condition on)");
  validate_generation_options(model, o);
  if (c.block_diffusion()) return block_canvas(model, prompts, o, on_step, hooks, steps_out, stop_ids);
  const int64_t B = int64_t(prompts.size());
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max<int64_t>(P, int64_t(p.size()));
  check(c.max_position_embeddings <= 0 || P + o.max_new_tokens <= c.max_position_embeddings,
        "the prompt is {} tokens; with max_new_tokens = {} that exceeds the model's context of {} tokens "
        "(max_position_embeddings in {}/config.json)",
        P, o.max_new_tokens, c.max_position_embeddings, model.dir());
  // Left padding: row b's prompt ends at column P; the pad id is never attended to.
  const int64_t pad_id = c.pad_token_id >= 0 ? c.pad_token_id : 0;
  Tensor prompt = Tensor::zeros(DType::I64, {B, P});
  Tensor prompt_mask;
  bool ragged = false;
  for (const auto& p : prompts) ragged |= int64_t(p.size()) != P;
  if (ragged) prompt_mask = Tensor::zeros(DType::U8, {B, P});
  for (int64_t b = 0; b < B; ++b) {
    const int64_t pad = P - int64_t(prompts[size_t(b)].size());
    for (int64_t l = 0; l < P; ++l) {
      prompt.data<int64_t>()[b * P + l] = l < pad ? pad_id : prompts[size_t(b)][size_t(l - pad)];
      if (ragged) prompt_mask.data<uint8_t>()[b * P + l] = l >= pad;
    }
  }
  // More steps than tokens would only add steps that reveal nothing.
  const int steps = int(o.steps > 0 ? std::min<int64_t>(o.steps, o.max_new_tokens) : o.max_new_tokens);
  // The logits of the rows a step reads stay on the backend (the model's or, through the scheduler's hooks, the
  // batched pass's), which also does the per-position sampling work (Backend::sample_rows); only the chosen
  // tokens and their confidences come back to the samplers.
  const bool fp8 = o.kv_dtype == KvDtype::FP8;
  const int64_t shift = c.shift_logits() ? 1 : 0;
  DeviceRowLogitsFn logits = [&model, hooks](const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& rows) {
    const Tensor pos = positions_from_mask(key_mask, ids.dim(0), ids.dim(1));
    if (hooks && hooks->forward) return hooks->forward(ids, key_mask, rows, pos);
    return model.forward_device(ids, key_mask, rows, pos);
  };
  if (o.cache != CacheMode::None) logits = CachedLogits(model, o.cache, P, o.block_length, shift, fp8, hooks);
  const RowSampleFn sample_fn = backend_row_sampler(model.backend(), std::move(logits));

  int steps_run = 0;
  StepCallback count = [&](int step, int total, int64_t revealed, const Tensor& canvas) {
    steps_run = step + 1;
    if (on_step) on_step(step, total, revealed, canvas);
  };
  UnmaskOptions u;
  static_cast<SamplingOptions&>(u) = o;
  u.steps = steps;
  u.mask_token_id = c.mask_token_id;
  u.prompt_mask = prompt_mask;
  u.independent_rows = true;
  const UnmaskPolicy policy = c.arch == Arch::Dream ? UnmaskPolicy::Dream : UnmaskPolicy::Llada;
  const Tensor out = unmask_generate(policy, sample_fn, prompt, u, count);
  if (steps_out) *steps_out = steps_run;
  return out;
}

std::vector<GenerationResult> generate_batch(Model& model, const Tokenizer& tok,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             const GenerationOptions& o, const StepCallback& on_step,
                                             const ForwardHooks* hooks) {
  const std::vector<int64_t> stops = stop_token_ids(model, tok);
  auto t0 = std::chrono::steady_clock::now();
  int steps_run = 0;
  Tensor out = generate_canvas(model, prompts, o, on_step, hooks, &steps_run, stops);
  const int64_t B = int64_t(prompts.size());
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max<int64_t>(P, int64_t(p.size()));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<int64_t> lengths = generated_lengths(out, P, stops);
  std::vector<GenerationResult> results(static_cast<size_t>(B));
  const int64_t total = out.dim(1);
  for (int64_t b = 0; b < B; ++b) {
    GenerationResult& r = results[size_t(b)];
    r.seconds = seconds;
    r.steps_run = steps_run;
    r.prompt_ids = prompts[size_t(b)];
    const int64_t* row = out.data<int64_t>() + b * total;
    r.new_ids.assign(row + P, row + P + lengths[size_t(b)]);
    r.text = tok.decode(std::vector<int32_t>(r.new_ids.begin(), r.new_ids.end()), true);
  }
  return results;
}

}  // namespace dlx
