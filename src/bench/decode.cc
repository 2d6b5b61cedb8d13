// diffulex bench decode: time diffusion decoding end to end (model passes, block KV cache, sampling on the backend)
// and print JSON. For each batch size B, cache mode (none | prefix | dual) and fixed tokens-per-step count, B
// prompts of --prompt-length random ids generate --gen-length tokens in blocks of --block through the same code as
// `diffulex generate` (generate_canvas). Each step's time is taken between the sampler's step callbacks (the
// chosen tokens reach the host every step, so device work is included). --blocks K times only the first K blocks of
// every generation (a block has a cache refresh step and block / tokens-per-step - 1 window steps, so whole
// blocks give the same per-step mix as a full generation); 0 times the whole generation. Each configuration first
// runs the same steps untimed: the pass shapes (window widths, logit rows) change from step to step, and the CUDA
// GEMM tunes every new shape once by timing candidates, which must not land in the measurement.
//
// Reported per configuration: mean and median step time, the refresh steps' and the window steps' medians,
// and tokens/s = tokens revealed in the timed steps / their time (B rows together); plus speedup_vs_none, the
// ratio of tokens/s to the no-cache configuration with the same B and tokens per step in the same run.
#include "bench/decode.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/stats.h"
#include "core/thread_pool.h"
#include "engine/generate.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "model/random_model.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct StopTiming {};  // thrown from the step callback once the timed blocks are done

}  // namespace

json run_decode_bench(const DecodeBenchArgs& a) {
  check(a.gen_length > 0 && a.block > 0 && a.gen_length % a.block == 0,
        "bench decode: the generation length ({}) must be a positive multiple of the block length ({})", a.gen_length,
        a.block);
  check(a.prompt_length > 0, "bench decode: the prompt length must be positive (got {})", a.prompt_length);
  check(a.blocks >= 0, "bench decode: the timed blocks must be >= 0 (got {})", a.blocks);
  check(a.threshold >= 0 && a.threshold <= 1, "bench decode: the threshold must be in [0, 1] (got {})", a.threshold);
  for (int64_t b : a.batches) check(b > 0, "bench decode: batch sizes must be positive (got {})", b);
  for (int64_t t : a.tokens_per_step)
    check(t > 0 && a.block % t == 0, "bench decode: tokens per step {} must divide the block length {}", t, a.block);
  for (const auto& c : a.caches) parse_cache_mode(c, "bench decode: cache");
  if (a.threads > 0) set_num_threads(a.threads);

  auto t_load = Clock::now();
  std::unique_ptr<Model> model = bench_model(a, a.seed);
  const ModelConfig& cfg = model->config();
  const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();

  json out;
  out["mode"] = "decode";
  out["device"] = a.device;
  out["backend"] = model->backend().name();
  out["source"] = a.model.empty() ? "random:" + a.preset : a.model;
  out["config"] = {{"arch", std::string(arch_name(cfg.arch))}, {"hidden", cfg.hidden_size}, {"layers", cfg.num_layers},
                   {"heads", cfg.num_heads}, {"kv_heads", cfg.num_kv_heads}, {"vocab", cfg.vocab_size}};
  // What the backend holds (device bytes on CUDA), by kind.
  const WeightBytes held = model->held_weight_bytes();
  out["weight_bytes"] = held.total();
  out["held_weight_bytes"] = weight_bytes_json(held);
  out["quant"] = a.model.empty() ? a.quant : "checkpoint";
  out["quant_head"] = a.quant_head;
  out["load_s"] = load_s;
  out["prompt_length"] = a.prompt_length;
  out["gen_length"] = a.gen_length;
  out["block"] = a.block;
  out["kv_dtype"] = a.kv_dtype;
  out["blocks_timed"] = a.blocks == 0 ? a.gen_length / a.block : std::min(a.blocks, a.gen_length / a.block);

  std::mt19937_64 rng(a.seed);
  auto prompts_for = [&](int64_t B) {
    std::vector<std::vector<int64_t>> p(size_t(B), std::vector<int64_t>(size_t(a.prompt_length)));
    for (auto& row : p)
      for (auto& id : row) {
        do id = int64_t(rng() % uint64_t(cfg.vocab_size));
        while (id == cfg.mask_token_id);
      }
    return p;
  };
  const int64_t blocks_total = a.gen_length / a.block;
  const int64_t blocks = a.blocks == 0 ? blocks_total : std::min(a.blocks, blocks_total);

  json runs = json::array();
  std::map<std::pair<int64_t, int64_t>, double> none_tps;  // (B, tokens per step) -> tokens/s without a cache
  for (int64_t B : a.batches) {
    const auto prompts = prompts_for(B);
    for (int64_t tps : a.tokens_per_step) {
      for (const std::string& cache : a.caches) {
        GenerationOptions o;
        o.max_new_tokens = a.gen_length;
        o.block_length = a.block;
        o.tokens_per_step = a.threshold > 0 ? 0 : tps;
        o.threshold = a.threshold;
        // Block diffusion (SDAR, Fast-dLLM v2): steps are per block (--block must be the model's block size; the
        // cache mode changes nothing there, its exact block cache is always on).
        o.steps = int(cfg.block_diffusion() ? a.block / tps : a.gen_length / tps);
        o.cache = parse_cache_mode(cache, "bench decode: cache");
        o.kv_dtype = o.cache == CacheMode::None ? KvDtype::BF16 : parse_kv_dtype(a.kv_dtype, "bench decode: kv_dtype");
        o.temperature = 0;
        o.seed = a.seed;
        const int64_t steps_per_block = a.block / tps, timed_steps = blocks * steps_per_block;
        // Warm-up: the same steps untimed. Greedy decoding on the same prompts repeats the same pass shapes, so
        // every shape the timed run meets has been seen (CUDA tunes each new GEMM shape once, by timing).
        try {
          generate_canvas(*model, prompts, o, [&](int step, int, int64_t, const Tensor&) {
            if (step + 1 >= timed_steps) throw StopTiming{};
          });
        } catch (const StopTiming&) {
        }
        std::vector<double> step_ms, refresh_ms, window_ms;
        int64_t revealed_at_end = 0;
        auto last = Clock::now();
        const auto t0 = last;
        try {
          generate_canvas(*model, prompts, o, [&](int step, int, int64_t revealed, const Tensor&) {
            const auto now = Clock::now();
            const double ms = std::chrono::duration<double, std::milli>(now - last).count();
            last = now;
            step_ms.push_back(ms);
            // With a threshold the steps per block vary: no refresh / window split.
            if (a.threshold <= 0) (step % steps_per_block == 0 ? refresh_ms : window_ms).push_back(ms);
            revealed_at_end = revealed;
            if (step + 1 >= timed_steps) throw StopTiming{};
          });
        } catch (const StopTiming&) {
        }
        const double secs = std::chrono::duration<double>(last - t0).count();
        double mean = 0;
        for (double v : step_ms) mean += v;
        mean /= double(std::max<size_t>(step_ms.size(), 1));
        const double tok_s = secs > 0 ? double(revealed_at_end) / secs : 0;
        json run = {{"batch", B},
                    {"cache", cache},
                    {"tokens_per_step", a.threshold > 0 ? 0 : tps},
                    {"threshold", a.threshold},
                    {"graphs", model->graphs()},
                    {"kv_dtype", to_string(o.kv_dtype)},
                    {"steps_timed", step_ms.size()},
                    {"tokens_timed", revealed_at_end},
                    {"step_ms_mean", mean},
                    {"step_ms_median", median(step_ms)},
                    {"refresh_step_ms_median", median(refresh_ms)},
                    {"window_step_ms_median", median(window_ms)},
                    {"tokens_per_s", tok_s}};
        if (cache == "none") none_tps[{B, tps}] = tok_s;
        if (none_tps.count({B, tps}) && none_tps[{B, tps}] > 0) run["speedup_vs_none"] = tok_s / none_tps[{B, tps}];
        runs.push_back(run);
        fmt::print(stderr, "B={:>3} cache={:<6} tps={} step {:8.2f} ms (refresh {:8.2f}, window {:8.2f})  {:9.1f} tok/s\n",
                   B, cache, tps, mean, median(refresh_ms), median(window_ms), tok_s);
      }
    }
  }
  out["runs"] = runs;
#ifdef DIFFULEX_HAVE_CUDA
  if (model->backend().device() == Device::CUDA) {
    const CudaMemoryStats s = cuda_memory_stats(model->backend());
    out["memory"] = {{"activation_peak_bytes", s.activation_peak_bytes}, {"device_used_bytes", s.device_used_bytes}};
    // The W4A16 path the tuner chose for each packed weight and M bucket the steps met.
    json choices = json::array();
    for (const W4A16Choice& c : cuda_w4a16_choices(model->backend()))
      choices.push_back({{"N", c.N}, {"K", c.K}, {"group_size", c.group_size}, {"m_bucket", c.m_bucket}, {"path", c.path},
                         {"splits", c.splits}});
    out["w4a16_paths"] = choices;
    // The W4A16 switches (cuda_backend.h; each has an environment variable): whether this run had them on.
    out["w4a16_swiglu_epilogue"] = cuda_w4a16_swiglu();
    out["w4a16_tma_weights"] = cuda_w4a16_tma_weights();
    out["w4a16_tune_splits"] = cuda_w4a16_tune_splits();
  }
#endif
  return out;
}

}  // namespace dlx
