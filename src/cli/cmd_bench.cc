// diffulex bench: forward-pass timings as JSON, on any backend.
//
//   --random-config PRESET   random weights at a real model's shape (dream-7b, llada-8b, or the tiny presets),
//                            made directly in the backend's memory (on the GPU: a hash-based generator, so a 7B
//                            model is ready in a second). The forward below issues exactly the backend ops of
//                            Model::forward (model/model.cc), in the same order and with the same shapes, and is
//                            timed per op: device events on CUDA, the host clock on the CPU (its ops are
//                            synchronous).
//   --model DIR              a real checkpoint through Model::load / Model::forward, timed end to end.
//   --quant w4a16            with --random-config: the seven linears of every layer are random packed 4-bit
//                            weights (--group-size, default 128), converted by Backend::upload_packed and run by
//                            matmul_packed; embeddings, norms and the LM head stay bf16.
//   --w4a16-kernels          the W4A16 linear alone at the Dream/LLaDA shapes (bench_w4a16.cc), no forward.
//
// Each batch size B runs sequences of --length tokens (prompt + block) and asks for logits at the last --block
// positions of every sequence, as a diffusion decoding step does. Reported per B: the median forward time
// (wall clock, host logits included), FLOPs and weight bytes per forward with the achieved TFLOP/s and GB/s,
// the floor max(FLOPs / measured matmul ceiling, weight bytes / measured copy ceiling), the per-op breakdown, and
// memory use. The ceilings are measured in the same run (CUDA: a device-to-device copy and an 8192^3 bf16 GEMM;
// CPU: memcpy and the backend's own matmul).
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/bench_w4a16.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/model.h"
#include "model/random_model.h"
#include "model/random_init.h"
#include "cli/bench_source.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx::cli {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

[[maybe_unused]] bool is_cuda(Backend& be) { return be.device() == Device::CUDA; }

void sync(Backend& be) {
#ifdef DIFFULEX_HAVE_CUDA
  if (is_cuda(be)) cuda_synchronize(be);
#else
  (void)be;
#endif
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

struct RandomWeights {
  Tensor embed, final_norm, lm_head;
  struct Layer {
    Tensor attn_norm, ffn_norm, w[7], bias[3];
    PackedWeight pw[7];  // --quant w4a16: the seven linears as packed 4-bit weights (w[] then undefined)
    Tensor gate_up;  // fused [2I, H] (w[4], w[5] are its halves) when Model::load would fuse them
    Tensor qkv, qkv_bias;  // fused [Nq + 2 Nkv, H] (w[0..2] and bias[0..2] are views), with DIFFULEX_FUSE_QKV=1
  };
  std::vector<Layer> layers;
  size_t bytes = 0;
};


RandomWeights make_random_weights(Backend& be, const ModelConfig& c, uint64_t seed, const std::string& quant = "none",
                                  int64_t group_size = 128) {
  RandomWeights rw;
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  uint64_t s = seed * 1000003;
  auto make = [&](Shape shape, float mean, float std) {
    Tensor t = random_weight(be, std::move(shape), ++s, mean, std);
    rw.bytes += t.nbytes();
    return t;
  };
  rw.embed = make({c.vocab_size, H}, 0, 0.02f);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    RandomWeights::Layer L;
    L.attn_norm = make({H}, 1.0f, 0.05f);
    L.ffn_norm = make({H}, 1.0f, 0.05f);
    const Shape shapes[7] = {{c.num_heads * D, H}, {c.num_kv_heads * D, H}, {c.num_kv_heads * D, H},
                             {H, c.num_heads * D}, {I, H}, {I, H}, {H, I}};
    // As Model::load: on the GPU gate and up are one weight unless DIFFULEX_FUSE_GATE_UP=0 (dense weights only).
    const char* fuse_env = std::getenv("DIFFULEX_FUSE_GATE_UP");
    const bool packed = quant == "w4a16";
    const bool fuse = !packed && be.device() == Device::CUDA && !(fuse_env && std::string(fuse_env) == "0");
    const char* fuse_qkv_env = std::getenv("DIFFULEX_FUSE_QKV");
    const bool fuse_qkv =
        !packed && be.device() == Device::CUDA && fuse_qkv_env && std::string(fuse_qkv_env) == "1";
    if (fuse_qkv) {
      const int64_t nq = c.num_heads * D, nkv = c.num_kv_heads * D;
      L.qkv = make({nq + 2 * nkv, H}, 0, 0.02f);
      if (c.qkv_bias) L.qkv_bias = make({nq + 2 * nkv}, 0, 0.02f);
      const int64_t at[4] = {0, nq, nq + nkv, nq + 2 * nkv};
      for (int r = 0; r < 3; ++r) {
        L.w[r] = L.qkv.slice_rows(at[r], at[r + 1]);
        if (c.qkv_bias) L.bias[r] = L.qkv_bias.slice_rows(at[r], at[r + 1]);
      }
    }
    for (int r = 0; r < 7; ++r) {
      if (packed) {
        const int64_t gs = group_size > 0 ? group_size : shapes[r][1];
        L.pw[r] = be.upload_packed(random_packed_w4(shapes[r][0], shapes[r][1], gs, ++s));
        rw.bytes += L.pw[r].nbytes();
        continue;
      }
      if (fuse_qkv && r < 3) continue;
      if (fuse && r == 4) {
        L.gate_up = make({2 * I, H}, 0, 0.02f);
        L.w[4] = L.gate_up.slice_rows(0, I);
        L.w[5] = L.gate_up.slice_rows(I, 2 * I);
      }
      if (fuse && (r == 4 || r == 5)) continue;
      L.w[r] = make(shapes[r], 0, 0.02f);
    }
    if (c.qkv_bias && !fuse_qkv)
      for (int r = 0; r < 3; ++r) L.bias[r] = make({shapes[r][0]}, 0, 0.02f);
    rw.layers.push_back(std::move(L));
  }
  rw.final_norm = make({H}, 1.0f, 0.05f);
  rw.lm_head = make({c.vocab_size, H}, 0, 0.02f);
  sync(be);
  return rw;
}

// Work of one op kind within one forward.
struct OpStat {
  std::vector<double> ms;  // per profiled forward: the op's total time
  double flops = 0, bytes = 0;
  int calls = 0;
};

struct Shapes {
  int64_t B, L, T, H, I, D, Hq, Hkv, V, R, layers;
};

// One forward with Model::forward's op sequence. When `timer` is set, marks before every op and records each
// op's time under its name in `stats` (flops/bytes are counted on the first profiled call).
void run_forward(Backend& be, const RandomWeights& w, const Shapes& s, double theta, float eps, const Tensor& ids,
                 const Tensor& pos, const Tensor& mask, const std::vector<int64_t>& rows, OpTimer* timer,
                 std::map<std::string, OpStat>* stats, bool count) {
  const DType at = be.act_dtype();
  const int64_t T = s.T, H = s.H, I = s.I, D = s.D;
  std::vector<std::string> names;
  auto op = [&](const char* name, double flops, double bytes) {
    if (!timer) return;
    timer->mark();
    names.push_back(name);
    if (count) {
      OpStat& st = (*stats)[name];
      st.flops += flops, st.bytes += bytes, ++st.calls;
    }
  };
  auto mm = [&](const char* name, const Tensor& x, const Tensor& wt, const Tensor& b, Tensor& y) {
    const double M = double(x.dim(0)), N = double(wt.dim(0)), K = double(wt.dim(1));
    op(name, 2 * M * N * K, 2 * (M * K + N * K + M * N));
    Tensor y2 = y.reshape({x.dim(0), y.numel() / x.dim(0)});
    be.matmul(x, wt, b.defined() ? &b : nullptr, y2);
  };
  // --quant w4a16: the same linear on a packed weight (bytes: the packed tensors as the backend holds them).
  auto mmq = [&](const char* name, const Tensor& x, const PackedWeight& wt, const Tensor& b, Tensor& y) {
    const double M = double(x.dim(0)), N = double(wt.n), K = double(wt.k);
    op(name, 2 * M * N * K, 2 * (M * K + M * N) + double(wt.nbytes()));
    Tensor y2 = y.reshape({x.dim(0), y.numel() / x.dim(0)});
    be.matmul_packed(x, wt, b.defined() ? &b : nullptr, y2);
  };
  auto lin = [&](const char* name, const Tensor& x, const RandomWeights::Layer& lw, int r, const Tensor& b, Tensor& y) {
    if (lw.pw[r].qweight.defined()) mmq(name, x, lw.pw[r], b, y);
    else mm(name, x, lw.w[r], b, y);
  };
  const double act = double(dtype_size(at));
  Tensor h = be.empty(at, {T, H}), x = be.empty(at, {T, H}), tmp = be.empty(at, {T, H});
  Tensor q = be.empty(at, {s.B, s.L, s.Hq, D}), k = be.empty(at, {s.B, s.L, s.Hkv, D}), v = be.empty(at, {s.B, s.L, s.Hkv, D});
  Tensor att = be.empty(at, {s.B, s.L, s.Hq, D});
  Tensor gate = be.empty(at, {T, I}), up = be.empty(at, {T, I});
  const Tensor* mk = mask.defined() ? &mask : nullptr;

  op("embedding", 0, 2 * act * T * H);
  be.embedding(ids.reshape({T}), w.embed, h);
  for (const auto& lw : w.layers) {
    op("rmsnorm", 0, 2 * act * T * H);
    be.rmsnorm(h, lw.attn_norm, eps, x);
    if (lw.qkv.defined()) {
      Tensor qkv = be.empty(at, {T, lw.qkv.dim(0)});
      mm("matmul_qkv", x, lw.qkv, lw.qkv_bias, qkv);
      op("split_qkv", 0, 2 * act * T * lw.qkv.dim(0));
      be.split_columns(qkv, {&q, &k, &v});
    } else {
      lin("matmul_qkv", x, lw, 0, lw.bias[0], q);
      lin("matmul_qkv", x, lw, 1, lw.bias[1], k);
      lin("matmul_qkv", x, lw, 2, lw.bias[2], v);
    }
    op("rope", 0, 2 * act * T * s.Hq * D);
    be.rope(q, pos, theta);
    op("rope", 0, 2 * act * T * s.Hkv * D);
    be.rope(k, pos, theta);
    op("attention", 4.0 * s.B * s.L * s.L * s.Hq * D, act * (2.0 * T * s.Hq * D + 2.0 * T * s.Hkv * D));
    be.attention(q, k, v, mk, att);
    Tensor att2 = att.reshape({T, s.Hq * D});
    lin("matmul_o", att2, lw, 3, Tensor(), tmp);
    op("add", 0, 3 * act * T * H);
    be.add(h, tmp);
    op("rmsnorm", 0, 2 * act * T * H);
    be.rmsnorm(h, lw.ffn_norm, eps, x);
    if (lw.gate_up.defined()) {
      Tensor gu = be.empty(at, {T, 2 * I});
      mm("matmul_gate_up", x, lw.gate_up, Tensor(), gu);
      op("silu_mul", 0, 3 * act * T * I);
      be.silu_mul_fused(gu, gate);
    } else {
      lin("matmul_gate_up", x, lw, 4, Tensor(), gate);
      lin("matmul_gate_up", x, lw, 5, Tensor(), up);
      op("silu_mul", 0, 3 * act * T * I);
      be.silu_mul(gate, up, gate);
    }
    lin("matmul_down", gate, lw, 6, Tensor(), tmp);
    op("add", 0, 3 * act * T * H);
    be.add(h, tmp);
  }
  // The logit rows, picked on the backend before the final norm as Model::finish_forward does.
  op("gather_rows", 0, 2 * act * s.R * H);
  Tensor sel = be.empty(at, {s.R, H});
  be.gather_rows(h, rows, sel);
  op("rmsnorm", 0, 2 * act * s.R * H);
  Tensor xr = be.empty(at, {s.R, H});
  be.rmsnorm(sel, w.final_norm, eps, xr);
  Tensor logits = be.empty(at, {s.R, s.V});
  mm("lm_head", xr, w.lm_head, Tensor(), logits);
  op("logits_to_host", 0, act * s.R * s.V);
  Tensor out = be.to_host_f32(logits);
  if (timer) {
    timer->mark();
    std::vector<double> iv = timer->intervals_ms();
    std::map<std::string, double> sum;
    for (size_t i = 0; i < names.size() && i < iv.size(); ++i) sum[names[i]] += iv[i];
    for (auto& [name, ms] : sum) (*stats)[name].ms.push_back(ms);
    timer->clear();
  }
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

json memory_json(Backend& be, size_t weight_bytes) {
  json m = {{"weight_bytes", weight_bytes}};
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

struct Args : BenchSource {
  std::vector<int64_t> batches{1, 8, 32};
  int64_t length = 288, block = 32;
  int warmup = 2, iters = 10;
  uint64_t seed = 1;
  bool no_ceilings = false;
  std::string output;
};

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

// FLOPs of one forward: every linear, attention's two products, and the LM head on R rows.
double forward_flops(const ModelConfig& c, int64_t B, int64_t L, int64_t R) {
  const double T = double(B * L), H = double(c.hidden_size), I = double(c.intermediate_size), D = double(c.head_dim);
  const double qo = H * c.num_heads * D, kv = H * c.num_kv_heads * D;
  const double per_layer = 2 * T * (2 * qo + 2 * kv + 3 * H * I) + 4.0 * B * L * L * c.num_heads * D;
  return per_layer * double(c.num_layers) + 2.0 * R * H * double(c.vocab_size);
}

json run_bench(const Args& a) {
  check_bench_source(a, "bench");
  check(a.length > 0 && a.block > 0 && a.block <= a.length, "bench: need 0 < --block <= --length (got {} and {})",
        a.block, a.length);
  check(a.iters > 0 && a.warmup >= 0, "bench: --iters must be positive");
  for (int64_t b : a.batches) check(b > 0, "bench: batch sizes must be positive (got {})", b);

  std::unique_ptr<Model> model;
  std::unique_ptr<Backend> own;
  ModelConfig cfg;
  if (!a.model.empty()) {
    LoadOptions lo;
    lo.device = a.device;
    model = Model::load(a.model, lo);
    cfg = model->config();
  } else {
    cfg = bench_preset_config(a);
    own = make_backend(a.device);
  }
  Backend& be = model ? model->backend() : *own;

  json out;
  out["device"] = a.device;
  out["backend"] = be.name();
  out["source"] = model ? a.model : "random:" + a.preset;
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

  auto t_load = Clock::now();
  RandomWeights rw;
  if (!model) rw = make_random_weights(be, cfg, a.seed, a.quant, a.group_size);
  out["quant"] = a.quant;
  if (a.quant != "none") out["group_size"] = a.group_size;
  const size_t weight_bytes = model ? model->weight_bytes() : rw.bytes;
  if (!model) out["random_weights_ms"] = ms_since(t_load);

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
    const int64_t R = int64_t(rows.size());
    Shapes s{B, L, T, cfg.hidden_size, cfg.intermediate_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads,
             cfg.vocab_size, R, cfg.num_layers};

#ifdef DIFFULEX_HAVE_CUDA
    if (is_cuda(be)) cuda_reset_peak(be);  // the activation peak of this batch size alone
#endif
    auto forward = [&](OpTimer* timer, std::map<std::string, OpStat>* stats, bool count) {
      if (model)
        model->forward(ids, mask, rows, pos);
      else
        run_forward(be, rw, s, cfg.rope_theta, float(cfg.rms_norm_eps), ids, pos, mask, rows, timer, stats, count);
    };
    for (int i = 0; i < a.warmup; ++i) forward(nullptr, nullptr, false);
    sync(be);
    std::vector<double> wall;
    for (int i = 0; i < a.iters; ++i) {
      auto t0 = Clock::now();
      forward(nullptr, nullptr, false);
      sync(be);
      wall.push_back(ms_since(t0));
    }
    const double fwd_ms = median(wall);
    const double flops = forward_flops(cfg, B, L, R);
    json run = {{"batch", B},
                {"tokens", T},
                {"forward_ms_median", fwd_ms},
                {"forward_ms_min", *std::min_element(wall.begin(), wall.end())},
                {"forward_ms_max", *std::max_element(wall.begin(), wall.end())},
                {"flops", flops},
                {"TFLOPs", flops / (fwd_ms * 1e-3) / 1e12},
                {"weight_GBps", double(weight_bytes) / (fwd_ms * 1e-3) / 1e9}};
    if (ceil.matmul_tflops > 0) {
      const double floor_ms = std::max(flops / (ceil.matmul_tflops * 1e12), double(weight_bytes) / (ceil.copy_gbps * 1e9)) * 1e3;
      run["floor_ms"] = floor_ms;
      run["fraction_of_floor"] = floor_ms / fwd_ms;
    }
    if (!model) {
      std::map<std::string, OpStat> stats;
      OpTimer timer(be);
      for (int i = 0; i < a.iters; ++i) forward(&timer, &stats, i == 0);
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
    }
    run["memory"] = memory_json(be, weight_bytes);
    runs.push_back(run);
  }
  out["runs"] = runs;
  return out;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Time forward passes (per op and per forward) and print JSON");
  auto a = std::make_shared<Args>();
  add_bench_source_options(*cmd, *a);
  cmd->add_option("--batch", a->batches, "Batch sizes, comma separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--length", a->length, "Tokens per sequence (prompt + block)")->capture_default_str();
  cmd->add_option("--block", a->block, "Positions per sequence that need logits")->capture_default_str();
  cmd->add_option("--warmup", a->warmup, "Untimed forwards per batch size")->capture_default_str();
  cmd->add_option("--iters", a->iters, "Timed forwards per batch size (medians are reported)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the random weights and ids")->capture_default_str();
  cmd->add_flag("--no-ceilings", a->no_ceilings, "Skip measuring the copy and matmul ceilings");
  cmd->add_option("--output", a->output, "Also write the JSON to this file");
  // --w4a16-kernels: the W4A16 linear alone (bench_w4a16.cc) instead of forward passes.
  auto w4 = std::make_shared<bool>(false);
  auto w4a = std::make_shared<W4A16BenchArgs>();
  cmd->add_flag("--w4a16-kernels", *w4, "Time the W4A16 linear alone at the Dream/LLaDA shapes (CUDA; see bench_w4a16.cc)");
  cmd->add_option("--w4a16-ms", w4a->ms, "--w4a16-kernels: the M values, comma separated")->delimiter(',');
  cmd->add_option("--w4a16-shape", w4a->shape, "--w4a16-kernels: only shapes whose name contains this");
  add_bench_decode_subcommand(*cmd);
  cmd->callback([a, cmd, w4, w4a] {
    if (cmd->got_subcommand("decode")) return;  // `bench decode` (cmd_bench_decode.cc) ran instead
    if (*w4) {
      check(a->device == "cuda", "bench --w4a16-kernels needs --device cuda");
      W4A16BenchArgs wa = *w4a;
      wa.seed = a->seed;
      const std::string text = run_w4a16_kernel_bench(wa).dump(2) + "\n";
      if (!a->output.empty()) write_file_atomic(a->output, text);
      fmt::print("{}", text);
      return;
    }
    json out = run_bench(*a);
    const std::string text = out.dump(2) + "\n";
    if (!a->output.empty()) write_file_atomic(a->output, text);
    fmt::print("{}", text);
  });
}

}  // namespace dlx::cli
