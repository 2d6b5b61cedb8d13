// Text in, text out: prompt formatting (plain or chat template), the architecture's sampler (Dream, LLaDA, or the
// block-diffusion decoder for SDAR and Fast-dLLM v2) over the model's forward, stop-token truncation and decoding.
// The CLI and the server call this.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/sampling.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace dlx {

struct GenerationOptions {
  int64_t max_new_tokens = 64;  // Dream: max_new_tokens; LLaDA: gen_length
  int steps = 0;                // 0: one step per new token
  int64_t block_length = 0;     // 0: Dream one region; LLaDA one block of max_new_tokens
  std::string alg = "entropy";  // Dream: origin | maskgit_plus | topk_margin | entropy
  float alg_temp = 0;
  float temperature = 0;
  float top_p = 1;
  int64_t top_k = 0;
  std::string remasking = "low_confidence";  // LLaDA: low_confidence | random
  float cfg_scale = 0;                       // LLaDA
  float threshold = 0;                       // parallel decoding (Fast-dLLM); 0: off
  int64_t tokens_per_step = 0;               // fixed tokens per step; 0: off
  // Block diffusion (SDAR, Fast-dLLM v2; engine/block_sampler.h): `steps` is per block (SDAR's denoising steps,
  // clamped to the block size; 0: at least one token per step), `threshold` 0 takes the model's default (SDAR
  // 0.85, Fast-dLLM v2 0.9), block_length must be 0 or the model's block size, and the exact block KV cache is
  // always on (`cache` is ignored; kv_dtype applies).
  int64_t sub_block = 0;  // tokens per decoding sub-block; 0: the model's (Fast-dLLM v2: 8, SDAR: the whole block)
  uint64_t seed = 0;
  // Block KV cache (Fast-dLLM): "none" recomputes the whole sequence every step; "prefix" refreshes the cache at
  // the first step of each block and then recomputes only the current block and everything after it; "dual"
  // recomputes only the current block, reading cached keys/values for the prefix and the suffix.
  std::string cache = "none";
  // KV cache storage: "bf16" (the backend's activation dtype: bf16 on CUDA, f32 on the CPU) or "fp8" (e4m3 with
  // per-(position, head) scales; see KvCache). Only with a cache.
  std::string kv_dtype = "bf16";
};

// The checkpoint's generation_config.json (Dream-style fields: max_new_tokens, steps, alg, alg_temp, temperature,
// top_p, top_k) over the built-in defaults; absent file or fields keep the defaults.
GenerationOptions generation_defaults(const std::string& model_dir);

struct GenerationResult {
  std::string text;                 // decoded new tokens, up to the first stop token
  std::vector<int64_t> prompt_ids;  // what the model saw before the masks
  std::vector<int64_t> new_ids;     // generated ids, up to the first stop token
  int steps_run = 0;
  double seconds = 0;
};

// Token ids for a prompt: with `chat`, the tokenizer's chat_template renders a single user turn with the
// generation prompt (a template error falls back to the plain prompt with a warning); plain prompts get the
// BOS token when tokenizer_config.json asks for it.
std::vector<int64_t> format_prompt(const Tokenizer& tok, const std::string& prompt, bool chat);

// The ids that end a generated text (the tokenizer's and the config's EOS and pad): the text is the tokens
// before the first of them.
std::vector<int64_t> stop_token_ids(const Model& model, const Tokenizer& tok);

GenerationResult generate(Model& model, const Tokenizer& tok, const std::vector<int64_t>& prompt_ids,
                          const GenerationOptions& opts, const StepCallback& on_step = {});

// Many prompts in one batch: prompts are left-padded to the longest, padding is masked out of attention and
// every row's positions start at 0 at its first real token, and the samplers draw each row's randomness from
// its own stream, so each result equals generating that prompt alone with the same options and seed.
// `forward`, when given, replaces the model's forward passes (the continuous-batching scheduler routes them into
// its shared batched pass); the decoding is otherwise the same code.
struct ForwardHooks {
  std::function<Tensor(const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& rows,
                       const Tensor& positions)>
      forward;  // as Model::forward_device (the logits in the backend's memory)
  std::function<Tensor(const Tensor& ids, const Tensor& key_mask, KvCache& cache, int64_t begin, int64_t end,
                       const std::vector<int64_t>& rows, const Tensor& positions)>
      forward_window;  // as Model::forward_window_device
};
std::vector<GenerationResult> generate_batch(Model& model, const Tokenizer& tok,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             const GenerationOptions& opts, const StepCallback& on_step = {},
                                             const ForwardHooks* hooks = nullptr);

// The decoding of generate_batch without a tokenizer (no stop tokens, no text): the final canvas I64
// [B, P + max_new_tokens] with the prompts left-padded to the longest, P; `steps_run` receives the steps taken.
// The decode benchmark runs this on random weights.
// `stop_ids`: the block-diffusion decoder ends a row once it has decoded one (the other samplers run to the end).
Tensor generate_canvas(Model& model, const std::vector<std::vector<int64_t>>& prompts, const GenerationOptions& opts,
                       const StepCallback& on_step = {}, const ForwardHooks* hooks = nullptr, int* steps_run = nullptr,
                       const std::vector<int64_t>& stop_ids = {});

// Checks the options that do not depend on the prompt (cache, kv_dtype, max_new_tokens, ...), naming the first
// invalid one.
void validate_generation_options(const Model& model, const GenerationOptions& opts);

}  // namespace dlx
