#include "engine/batch_scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <thread>

#include "core/error.h"

namespace dlx {

namespace {

struct Cancelled {};  // unwinds a slot's sampler when the scheduler is destroyed mid-request

}  // namespace

size_t request_kv_bytes(Model& model, int64_t prompt_len, const GenerationOptions& o) {
  const ModelConfig& c = model.config();
  if (c.block_diffusion()) {  // always cached, over whole blocks (engine/block_sampler.h)
    const int64_t len = (prompt_len + o.max_new_tokens + c.block_size - 1) / c.block_size * c.block_size;
    return kv_cache_bytes(c, model.backend().act_dtype(), 1, len, o.kv_dtype == KvDtype::FP8);
  }
  if (o.cache == CacheMode::None) return 0;
  return kv_cache_bytes(c, model.backend().act_dtype(), 1, prompt_len + o.max_new_tokens, o.kv_dtype == KvDtype::FP8);
}

struct BatchScheduler::Slot {
  enum class State { Running, Posted, Done };
  uint64_t id = 0;
  std::vector<int64_t> prompt;
  GenerationOptions opts;
  size_t bytes = 0;
  StepCallback on_step;
  bool cancel = false;  // cancel(): unwind before the next model call
  State state = State::Running;
  SlotPass pass;      // Posted: the pass it waits for
  Tensor logits;      // its result, in the backend's memory (the slot's sampler runs Backend::sample_rows on it)
  std::exception_ptr forward_error;
  GenerationResult result;
  std::string error;
  std::thread thread;
};

BatchScheduler::BatchScheduler(Model& model, const Tokenizer& tok, SchedulerOptions opts)
    : model_(model), tok_(tok), opts_(opts) {
  check(opts_.max_batch > 0, "max batch must be positive, got {}", opts_.max_batch);
}

BatchScheduler::~BatchScheduler() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancel_ = true;
  }
  slot_cv_.notify_all();
  for (auto& s : slots_)
    if (s->thread.joinable()) s->thread.join();
}

uint64_t BatchScheduler::submit(std::vector<int64_t> prompt_ids, const GenerationOptions& opts, StepCallback on_step) {
  check(!prompt_ids.empty(), "the prompt is empty (no tokens to condition on)");
  validate_generation_options(model_, opts);
  // Checked here so that a bad request fails alone rather than failing the batched pass it would join.
  const int64_t V = model_.config().vocab_size;
  for (size_t i = 0; i < prompt_ids.size(); ++i)
    check(prompt_ids[i] >= 0 && prompt_ids[i] < V, "prompt token {} = {} is outside the vocabulary [0, {})", i,
          prompt_ids[i], V);
  const size_t bytes = request_kv_bytes(model_, int64_t(prompt_ids.size()), opts);
  std::lock_guard<std::mutex> lk(mu_);
  check(opts_.kv_budget_bytes == 0 || bytes <= opts_.kv_budget_bytes,
        "request {}: its KV cache needs {} bytes ({} prompt + {} new tokens, {} cache), more than the KV budget of {} "
        "bytes",
        next_id_, bytes, prompt_ids.size(), opts.max_new_tokens, to_string(opts.kv_dtype), opts_.kv_budget_bytes);
  queue_.push_back({next_id_, std::move(prompt_ids), opts, bytes, std::move(on_step)});
  return next_id_++;
}

void BatchScheduler::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto q = std::find_if(queue_.begin(), queue_.end(), [&](const Queued& e) { return e.id == id; });
    if (q != queue_.end()) {
      queue_.erase(q);
      FinishedRequest f;
      f.id = id;
      f.error = "cancelled";
      cancelled_queued_.push_back(std::move(f));
      ++cancelled_;
    }
    for (auto& s : slots_)
      if (s->id == id && s->state != Slot::State::Done && !s->cancel) s->cancel = true, ++cancelled_;
  }
  engine_cv_.notify_all();
}

int64_t BatchScheduler::cancelled() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cancelled_;
}

bool BatchScheduler::idle() const {
  std::lock_guard<std::mutex> lk(mu_);
  return queue_.empty() && slots_.empty() && cancelled_queued_.empty();
}
size_t BatchScheduler::queued() const {
  std::lock_guard<std::mutex> lk(mu_);
  return queue_.size();
}
int64_t BatchScheduler::active() const {
  std::lock_guard<std::mutex> lk(mu_);
  return int64_t(slots_.size());
}
size_t BatchScheduler::kv_bytes_in_use() const {
  std::lock_guard<std::mutex> lk(mu_);
  return bytes_in_use_;
}

// A slot's model call: hand the pass to the engine, give up the sampler turn, wait for the batched forward.
Tensor BatchScheduler::post(Slot* s, SlotPass pass, std::unique_lock<std::mutex>& turn) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (s->cancel) throw Cancelled{};
    s->pass = std::move(pass);
    s->state = Slot::State::Posted;
  }
  engine_cv_.notify_all();
  turn.unlock();
  {
    std::unique_lock<std::mutex> lk(mu_);
    slot_cv_.wait(lk, [&] { return cancel_ || s->state == Slot::State::Running; });
    if (cancel_ || s->cancel) throw Cancelled{};  // the pass's result, if it ran, is dropped
  }
  turn.lock();
  if (s->forward_error) std::rethrow_exception(s->forward_error);
  return std::move(s->logits);
}

void BatchScheduler::slot_main(Slot* s) {
  std::unique_lock<std::mutex> turn(turn_);
  ForwardHooks hooks;
  hooks.forward = [&](const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& rows, const Tensor& pos) {
    SlotPass p;
    p.ids = ids, p.key_mask = key_mask, p.positions = pos, p.logit_rows = rows;
    return post(s, std::move(p), turn);
  };
  hooks.forward_window = [&](const Tensor& ids, const Tensor& key_mask, KvCache& cache, int64_t begin, int64_t end,
                             const std::vector<int64_t>& rows, const Tensor& pos) {
    SlotPass p;
    p.ids = ids, p.key_mask = key_mask, p.positions = pos, p.cache = &cache, p.begin = begin, p.end = end;
    p.logit_rows = rows;
    return post(s, std::move(p), turn);
  };
  GenerationResult result;
  std::string error;
  try {
    result = generate_batch(model_, tok_, {s->prompt}, s->opts, s->on_step, &hooks)[0];
  } catch (const Cancelled&) {
    error = "cancelled";
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (turn.owns_lock()) turn.unlock();
  {
    std::lock_guard<std::mutex> lk(mu_);
    s->result = std::move(result);
    s->error = std::move(error);
    s->state = Slot::State::Done;
  }
  engine_cv_.notify_all();
}

void BatchScheduler::wait_quiet(std::unique_lock<std::mutex>& lk) {
  engine_cv_.wait(lk, [&] {
    for (auto& s : slots_)
      if (s->state == Slot::State::Running) return false;
    return true;
  });
}

void BatchScheduler::retire(std::unique_lock<std::mutex>& lk, std::vector<FinishedRequest>& done) {
  for (size_t i = 0; i < slots_.size();) {
    Slot& s = *slots_[i];
    if (s.state != Slot::State::Done) {
      ++i;
      continue;
    }
    lk.unlock();
    s.thread.join();
    lk.lock();
    FinishedRequest f;
    f.id = s.id;
    f.result = std::move(s.result);
    f.error = std::move(s.error);
    done.push_back(std::move(f));
    bytes_in_use_ -= s.bytes;
    slots_.erase(slots_.begin() + int64_t(i));
  }
}

bool BatchScheduler::admit() {
  bool any = false;
  while (!queue_.empty() && int64_t(slots_.size()) < opts_.max_batch &&
         (opts_.kv_budget_bytes == 0 || bytes_in_use_ + queue_.front().bytes <= opts_.kv_budget_bytes)) {
    Queued q = std::move(queue_.front());
    queue_.pop_front();
    auto s = std::make_unique<Slot>();
    s->id = q.id;
    s->prompt = std::move(q.prompt);
    s->opts = q.opts;
    s->bytes = q.bytes;
    s->on_step = std::move(q.on_step);
    bytes_in_use_ += q.bytes;
    Slot* raw = s.get();
    slots_.push_back(std::move(s));
    raw->thread = std::thread([this, raw] { slot_main(raw); });
    any = true;
  }
  return any;
}

std::vector<FinishedRequest> BatchScheduler::step() {
  std::unique_lock<std::mutex> lk(mu_);
  std::vector<FinishedRequest> done = std::move(cancelled_queued_);
  cancelled_queued_.clear();
  // Retire and admit until every active request waits for a forward (a new one posts its first pass at once).
  for (;;) {
    wait_quiet(lk);
    retire(lk, done);
    if (!admit()) break;
  }
  std::vector<Slot*> posted;
  std::vector<SlotPass> passes;
  bool woken = false;
  for (auto& s : slots_) {
    if (s->state != Slot::State::Posted) continue;
    if (s->cancel) {  // leaves the pass: wakes up in post(), unwinds, and is retired by the next step
      s->pass = SlotPass();
      s->state = Slot::State::Running;
      woken = true;
      continue;
    }
    posted.push_back(s.get()), passes.push_back(s->pass);
  }
  if (posted.empty()) {
    lk.unlock();
    if (woken) slot_cv_.notify_all();
    return done;
  }
  max_active_ = std::max(max_active_, int64_t(posted.size()));
  // Every slot thread is blocked in post(): the forward owns their tensors and caches until it hands them back.
  lk.unlock();
  std::vector<Tensor> out;
  std::exception_ptr err;
  try {
    out = model_.forward_slots(passes);
  } catch (...) {
    err = std::current_exception();
  }
  lk.lock();
  ++forwards_;
  for (size_t i = 0; i < posted.size(); ++i) {
    posted[i]->forward_error = err;
    if (!err) posted[i]->logits = std::move(out[i]);
    posted[i]->pass = SlotPass();
    posted[i]->state = Slot::State::Running;
  }
  lk.unlock();
  slot_cv_.notify_all();
  return done;
}

void BatchScheduler::run(const std::function<void(FinishedRequest&&)>& on_done) {
  while (!idle())
    for (FinishedRequest& f : step()) on_done(std::move(f));
}

std::vector<GenerationResult> generate_continuous(Model& model, const Tokenizer& tok,
                                                  const std::vector<std::vector<int64_t>>& prompts,
                                                  const GenerationOptions& opts, const SchedulerOptions& sched,
                                                  const std::function<void(size_t, const GenerationResult&)>& on_done,
                                                  int64_t* forwards) {
  check(!prompts.empty(), "no prompts to generate from");
  std::vector<GenerationResult> results(prompts.size());
  BatchScheduler s(model, tok, sched);
  for (const auto& p : prompts) s.submit(p, opts);
  std::string first_error;
  s.run([&](FinishedRequest&& f) {
    if (!f.error.empty()) {
      if (first_error.empty()) first_error = fmt::format("request {}: {}", f.id, f.error);
      return;
    }
    results[size_t(f.id)] = std::move(f.result);
    if (on_done) on_done(size_t(f.id), results[size_t(f.id)]);
  });
  check(first_error.empty(), "{}", first_error);
  if (forwards) *forwards = s.forwards();
  return results;
}

}  // namespace dlx
