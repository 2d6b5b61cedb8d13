// Continuous batching (docs/BATCHING.md): requests are admitted into a fixed number of slots as others finish,
// within a byte budget for their KV caches, and every engine step runs ONE forward pass (Model::forward_slots)
// over the pending pass of every active slot, whatever its length, block position or window.
//
// Exactness by construction: each slot runs the very code of a solo request (generate_batch with one prompt,
// hence the same sampler, cache windows and random streams) on its own thread, with its model calls routed
// (ForwardHooks) into the shared batched pass, whose per-slot result equals the solo pass (per-row kernels,
// attention per slot over its own keys). Only one slot's sampler runs at a time (a turn lock), so the threads are
// a way of suspending the sampler between steps, not a source of races or of nondeterminism. The logits stay in
// the backend's memory and each slot samples its own rows there (Backend::sample_rows, from the slot's thread):
// the backend is still called by one thread at a time, since the engine's pass waits until every slot has posted.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/generate.h"

namespace dlx {

struct SchedulerOptions {
  int64_t max_batch = 8;       // slots: requests decoded at once
  size_t kv_budget_bytes = 0;  // KV-cache bytes of the active requests together; 0: no limit
};

struct FinishedRequest {
  uint64_t id = 0;  // from submit()
  GenerationResult result;
  std::string error;  // non-empty: the request failed with this message (result is empty)
};

// KV-cache bytes one request reserves while it runs: its cache of prompt + max_new_tokens positions (0 without a
// cache).
size_t request_kv_bytes(Model& model, int64_t prompt_len, const GenerationOptions& opts);

class BatchScheduler {
 public:
  BatchScheduler(Model& model, const Tokenizer& tok, SchedulerOptions opts);
  ~BatchScheduler();  // cancels what still runs
  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  // Queues a request (FIFO); returns its id (0, 1, 2, ... in submission order). Throws Error when the options
  // are invalid or the request's KV cache alone exceeds the budget. on_step, when set, is called after each of
  // its steps with its canvas [1, prompt + max_new_tokens] (StepCallback), from the scheduler's threads while no
  // other request's sampler runs: it must be quick (copy what it needs) and must not call into the scheduler.
  uint64_t submit(std::vector<int64_t> prompt_ids, const GenerationOptions& opts, StepCallback on_step = {});
  // Cancels a request (its client went away): a queued one leaves the queue, a running one stops before its
  // next model call, and its slot and KV bytes are free for the next step(), which returns it with error
  // "cancelled". Unknown or finished ids are ignored. Thread-safe.
  void cancel(uint64_t id);
  // One engine step: retires finished requests, admits queued ones while a slot is free and the head of the queue
  // fits the budget, then runs one batched forward for every active request. Returns the requests that finished.
  std::vector<FinishedRequest> step();
  // Steps until nothing is queued or running, handing each finished request to on_done.
  void run(const std::function<void(FinishedRequest&&)>& on_done);

  bool idle() const;
  size_t queued() const;
  int64_t active() const;
  size_t kv_bytes_in_use() const;  // reserved by the active requests
  int64_t forwards() const { return forwards_; }
  int64_t max_active() const { return max_active_; }  // most requests ever active in one forward
  int64_t cancelled() const;                          // requests ended by cancel() so far

 private:
  struct Slot;
  struct Queued {
    uint64_t id;
    std::vector<int64_t> prompt;
    GenerationOptions opts;
    size_t bytes;
    StepCallback on_step;
  };
  void wait_quiet(std::unique_lock<std::mutex>& lk);
  void retire(std::unique_lock<std::mutex>& lk, std::vector<FinishedRequest>& done);
  bool admit();
  void slot_main(Slot* s);
  Tensor post(Slot* s, SlotPass pass, std::unique_lock<std::mutex>& turn);

  Model& model_;
  const Tokenizer& tok_;
  SchedulerOptions opts_;
  mutable std::mutex mu_;       // slot states, the queue
  std::mutex turn_;             // held by the one slot thread that is running its sampler
  std::condition_variable engine_cv_, slot_cv_;
  std::deque<Queued> queue_;
  std::vector<FinishedRequest> cancelled_queued_;  // cancelled before admission, for the next step() to return
  std::vector<std::unique_ptr<Slot>> slots_;
  size_t bytes_in_use_ = 0;
  uint64_t next_id_ = 0;
  int64_t forwards_ = 0, max_active_ = 0, cancelled_ = 0;
  bool cancel_ = false;
};

// Runs every prompt through a BatchScheduler; results in input order (each equals generate() on that prompt
// with the same options). on_done, when set, is called as each request finishes (index into prompts).
std::vector<GenerationResult> generate_continuous(Model& model, const Tokenizer& tok,
                                                  const std::vector<std::vector<int64_t>>& prompts,
                                                  const GenerationOptions& opts, const SchedulerOptions& sched,
                                                  const std::function<void(size_t, const GenerationResult&)>& on_done = {},
                                                  int64_t* forwards = nullptr);

}  // namespace dlx
