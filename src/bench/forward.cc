// diffulex bench: forward-pass timings as JSON, on any backend.
//
//   --random-config PRESET   a model with random weights at a real model's shape (dream-7b, llada-8b, or the tiny
//                            presets), made directly in the backend's memory by Model::random (on the GPU: a
//                            hash-based generator, so a 7B model is ready in a second).
//   --model DIR              a real checkpoint through Model::load.
//   --quant w4a16            with --random-config: the seven linears of every layer are random packed 4-bit
//                            weights (--group-size, default 128), converted by Backend::upload_packed and run by
//                            matmul_packed (fused q/k/v and gate/up on CUDA, as a loaded checkpoint); embeddings,
//                            norms and the LM head stay bf16, unless --quant-head makes the head packed too.
//   --w4a16-kernels          the W4A16 linear alone at the Dream/LLaDA shapes (w4a16.cc), no forward.
//
// Either way the timed forward is the model's own (Model::forward); its per-op table comes from the forward's
// op reports (Model::set_observer, ForwardObserver::op), timed by device events on CUDA and the host clock on the
// CPU (its ops are synchronous).
//
// Each batch size B runs sequences of --length tokens (prompt + block) and asks for logits at the last --block
// positions of every sequence, as a diffusion decoding step does. Reported per B: the median forward time
// (wall clock, host logits included), FLOPs (the sum over the reported ops) and weight bytes per forward with the
// achieved TFLOP/s and GB/s, the floor max(FLOPs / measured matmul ceiling, weight bytes / measured copy ceiling),
// the per-op breakdown, and memory use: the weight bytes the backend holds (Model::held_weight_bytes, split into
// packed linears / dense / embedding / head). The ceilings are measured in the same run (CUDA: a device-to-device
// copy and an 8192^3 bf16 GEMM; CPU: memcpy and the backend's own matmul).
//
// --ragged adds, per B, a decoding step's pass in its two forms: the window (the last --block positions) over a KV
// cache that a pass over the whole sequence filled, as B slots of one Model::forward_slots (each sequence its own
// cache: the continuous-batching scheduler's pass, eager) and as one Model::forward_window_device over B rows (one
// cache: generate's uniform batch, captured as a graph on CUDA); logits for every window row stay on the device.
// Median wall times, the backend synchronized after each pass.
#include "bench/forward.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/stats.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/model.h"
#include "model/random_init.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

[[maybe_unused]] bool is_cuda(Backend& be) { return be.device() == Device::CUDA; }

void sync(Backend& be) {
#ifdef DIFFULEX_HAVE_CUDA
  if (is_cuda(be)) cuda_synchronize(be);
#else
  (void)be;
#endif
}

// Wall times (ms) of `iters` runs of pass after `warmup` untimed ones, the backend synchronized after each.
std::vector<double> wall_times(Backend& be, int warmup, int iters, const std::function<void()>& pass) {
  for (int i = 0; i < warmup; ++i) pass();
  sync(be);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    pass();
    sync(be);
    ms.push_back(ms_since(t0));
  }
  return ms;
}

// Marks between ops: device events on CUDA, host time on the CPU.
class OpTimer {
 public:
  explicit OpTimer(Backend& be) {
#ifdef DIFFULEX_HAVE_CUDA
    if (is_cuda(be)) cuda_ = std::make_unique<CudaEventTimer>(be);
#else
    (void)be;
#endif
  }
  void mark() {
#ifdef DIFFULEX_HAVE_CUDA
    if (cuda_) return cuda_->mark();
#endif
    host_.push_back(Clock::now());
  }
  std::vector<double> intervals_ms() {
#ifdef DIFFULEX_HAVE_CUDA
    if (cuda_) return cuda_->intervals_ms();
#endif
    std::vector<double> out;
    for (size_t i = 0; i + 1 < host_.size(); ++i)
      out.push_back(std::chrono::duration<double, std::milli>(host_[i + 1] - host_[i]).count());
    return out;
  }
  void clear() {
#ifdef DIFFULEX_HAVE_CUDA
    if (cuda_) return cuda_->clear();
#endif
    host_.clear();
  }

 private:
#ifdef DIFFULEX_HAVE_CUDA
  std::unique_ptr<CudaEventTimer> cuda_;
#endif
  std::vector<Clock::time_point> host_;
};

// Work of one op kind within one forward.
struct OpStat {
  std::vector<double> ms;  // per profiled forward: the op's total time
  double flops = 0, bytes = 0;
  int calls = 0;
};

// One forward with its ops timed: every op the model reports marks the timer, and its time (up to the next mark)
// goes to its name in `stats`; the work is counted when `count` (the first profiled call). Returns the forward's
// FLOPs (the sum over its ops).
double profile_forward(Model& model, OpTimer& timer, std::map<std::string, OpStat>& stats, bool count,
                       const std::function<void()>& forward) {
  std::vector<std::string> names;
  double flops = 0;
  ForwardObserver obs;
  obs.op = [&](const ForwardOp& op) {
    timer.mark();
    names.push_back(op.name);
    flops += op.flops;
    if (count) {
      OpStat& st = stats[op.name];
      st.flops += op.flops, st.bytes += op.bytes, ++st.calls;
    }
  };
  model.set_observer(std::move(obs));
  forward();
  model.set_observer({});
  timer.mark();
  const std::vector<double> iv = timer.intervals_ms();
  std::map<std::string, double> sum;
  for (size_t i = 0; i < names.size() && i < iv.size(); ++i) sum[names[i]] += iv[i];
  for (auto& [name, ms] : sum) stats[name].ms.push_back(ms);
  timer.clear();
  return flops;
}

struct Ceilings {
  double copy_gbps = 0, matmul_tflops = 0;
  std::string matmul_what;
};

Ceilings measure_ceilings(Backend& be) {
  Ceilings c;
#ifdef DIFFULEX_HAVE_CUDA
  if (is_cuda(be)) {
    c.copy_gbps = cuda_measure_copy_gbps(be, size_t(2) << 30, 10);
    c.matmul_tflops = cuda_measure_bf16_tflops(be, 8192, 10);
    c.matmul_what = "bf16 8192x8192x8192 through cuBLASLt";
    return c;
  }
#endif
  const size_t n = size_t(256) << 20;
  std::vector<char> a(n, 1), b(n, 0);
  std::vector<double> ms;
  for (int r = 0; r < 4; ++r) {
    auto t0 = Clock::now();
    std::memcpy(b.data(), a.data(), n);
    ms.push_back(ms_since(t0));
  }
  c.copy_gbps = 2.0 * double(n) / (median(ms) * 1e-3) / 1e9;
  const int64_t M = 128, N = 1024, K = 1024;
  Tensor xh = Tensor::zeros(DType::F32, {M, K});
  for (int64_t i = 0; i < xh.numel(); ++i) xh.data<float>()[i] = float(int64_t(splitmix64(uint64_t(i)) % 2001) - 1000) / 1000.0f;
  Tensor x = be.from_host_f32(xh);
  Tensor w = random_weight(be, {N, K}, 99, 0, 0.02f);
  Tensor y = be.empty(be.act_dtype(), {M, N});
  ms.clear();
  for (int r = 0; r < 4; ++r) {
    auto t0 = Clock::now();
    be.matmul(x, w, nullptr, y);
    ms.push_back(ms_since(t0));
  }
  c.matmul_tflops = 2.0 * M * N * K / (median(ms) * 1e-3) / 1e12;
  c.matmul_what = "backend matmul 128x1024x1024 (bf16 weight)";
  return c;
}

json memory_json(Backend& be, const WeightBytes& held) {
  json m = {{"weight_bytes", held.total()}, {"held_weight_bytes", weight_bytes_json(held)}};
#ifdef DIFFULEX_HAVE_CUDA
  if (is_cuda(be)) {
    const CudaMemoryStats s = cuda_memory_stats(be);
    m["device_weight_bytes"] = s.weight_bytes;
    m["activation_peak_bytes"] = s.activation_peak_bytes;
    m["activation_cached_bytes"] = s.activation_cached_bytes;
    m["device_used_bytes"] = s.device_used_bytes;
    m["device_total_bytes"] = s.device_total_bytes;
  }
#endif
  return m;
}

Tensor random_ids(int64_t B, int64_t L, int64_t V, std::mt19937_64& rng) {
  Tensor ids = Tensor::zeros(DType::I64, {B, L});
  for (int64_t i = 0; i < B * L; ++i) ids.data<int64_t>()[i] = int64_t(rng() % uint64_t(V));
  return ids;
}

std::vector<int64_t> block_rows(int64_t B, int64_t L, int64_t block) {
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = L - block; l < L; ++l) rows.push_back(b * L + l);
  return rows;
}

}  // namespace

json run_forward_bench(const ForwardBenchArgs& a) {
  check(a.length > 0 && a.block > 0 && a.block <= a.length,
        "bench: need 0 < logit positions (block) <= sequence length (got {} and {})", a.block, a.length);
  check(a.iters > 0 && a.warmup >= 0, "bench: the timed iterations must be positive, the warm-up ones >= 0");
  for (int64_t b : a.batches) check(b > 0, "bench: batch sizes must be positive (got {})", b);

  auto t_load = Clock::now();
  std::unique_ptr<Model> model = bench_model(a, a.seed);
  sync(model->backend());
  const double load_ms = ms_since(t_load);
  const ModelConfig& cfg = model->config();
  Backend& be = model->backend();

  json out;
  out["device"] = a.device;
  out["backend"] = be.name();
  out["source"] = a.model.empty() ? "random:" + a.preset : a.model;
  out["config"] = {{"arch", std::string(arch_name(cfg.arch))}, {"hidden", cfg.hidden_size},
                   {"intermediate", cfg.intermediate_size}, {"layers", cfg.num_layers}, {"heads", cfg.num_heads},
                   {"kv_heads", cfg.num_kv_heads}, {"head_dim", cfg.head_dim}, {"vocab", cfg.vocab_size}};
  out["length"] = a.length;
  out["logit_rows_per_sequence"] = a.block;
  out["iters"] = a.iters;

  Ceilings ceil;
  if (!a.no_ceilings) {
    ceil = measure_ceilings(be);
    out["ceilings"] = {{"copy_GBps", ceil.copy_gbps}, {"matmul_TFLOPs", ceil.matmul_tflops},
                       {"matmul", ceil.matmul_what}};
  }

  out["quant"] = a.quant;
  if (a.model.empty() && a.quant != "none") out["group_size"] = a.group_size;
  out["quant_head"] = a.quant_head;
  if (a.model.empty()) out["random_weights_ms"] = load_ms;
  else out["load_ms"] = load_ms;

  std::mt19937_64 rng(a.seed);
  json runs = json::array();
  for (int64_t B : a.batches) {
    const int64_t L = a.length, T = B * L;
    Tensor ids = random_ids(B, L, cfg.vocab_size, rng);
    Tensor pos = Tensor::zeros(DType::I64, {B, L});
    for (int64_t t = 0; t < T; ++t) pos.data<int64_t>()[t] = t % L;
    Tensor mask = Tensor::zeros(DType::U8, {B, L});
    std::fill_n(mask.data<uint8_t>(), T, uint8_t(1));
    const std::vector<int64_t> rows = block_rows(B, L, a.block);

#ifdef DIFFULEX_HAVE_CUDA
    if (is_cuda(be)) cuda_reset_peak(be);  // the activation peak of this batch size alone
#endif
    auto forward = [&] { model->forward(ids, mask, rows, pos); };
    const std::vector<double> wall = wall_times(be, a.warmup, a.iters, forward);
    std::map<std::string, OpStat> stats;
    OpTimer timer(be);
    double flops = 0;
    for (int i = 0; i < a.iters; ++i) flops = profile_forward(*model, timer, stats, i == 0, forward);
    // The weights a forward reads: what the backend holds (a part kept only for use alone is not held).
    const WeightBytes held = model->held_weight_bytes();
    const double weight_bytes = double(held.total());
    const double fwd_ms = median(wall);
    json run = {{"batch", B},
                {"tokens", T},
                {"forward_ms_median", fwd_ms},
                {"forward_ms_min", *std::min_element(wall.begin(), wall.end())},
                {"forward_ms_max", *std::max_element(wall.begin(), wall.end())},
                {"flops", flops},
                {"TFLOPs", flops / (fwd_ms * 1e-3) / 1e12},
                {"weight_GBps", weight_bytes / (fwd_ms * 1e-3) / 1e9}};
    if (ceil.matmul_tflops > 0) {
      const double floor_ms = std::max(flops / (ceil.matmul_tflops * 1e12), weight_bytes / (ceil.copy_gbps * 1e9)) * 1e3;
      run["floor_ms"] = floor_ms;
      run["fraction_of_floor"] = floor_ms / fwd_ms;
    }
    json ops = json::object();
    double sum = 0;
    for (auto& [name, st] : stats) {
      const double ms = median(st.ms);
      sum += ms;
      json o = {{"calls", st.calls}, {"ms_median", ms}};
      if (st.flops > 0) o["TFLOPs"] = st.flops / (ms * 1e-3) / 1e12;
      o["GBps"] = st.bytes / (ms * 1e-3) / 1e9;
      ops[name] = o;
    }
    run["ops"] = ops;
    run["ops_ms_sum"] = sum;
    if (a.ragged) {
      const int64_t W = a.block, begin = L - W;
      std::vector<KvCache> caches(static_cast<size_t>(B));
      std::vector<SlotPass> fill(static_cast<size_t>(B)), step(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) {
        const Tensor row = ids.slice_rows(b, b + 1);  // [1, L], ids' storage
        SlotPass& f = fill[size_t(b)];
        f.ids = row, f.cache = &caches[size_t(b)], f.logit_rows = {L - 1};
        SlotPass& s = step[size_t(b)];
        s.ids = row, s.cache = &caches[size_t(b)], s.begin = begin, s.end = L;  // logits for the whole window
      }
      model->forward_slots(fill);
      KvCache shared;
      model->forward_window_device(ids, mask, shared, 0, L, {L - 1});
      run["ragged_window_ms_median"] = median(wall_times(be, a.warmup, a.iters, [&] { model->forward_slots(step); }));
      run["uniform_window_ms_median"] = median(
          wall_times(be, a.warmup, a.iters, [&] { model->forward_window_device(ids, mask, shared, begin, L, rows); }));
    }
    run["memory"] = memory_json(be, held);
    runs.push_back(run);
  }
  out["runs"] = runs;
  return out;
}

}  // namespace dlx
