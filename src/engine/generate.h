// Text in, text out: prompt formatting (plain or chat template), the architecture's sampler (Dream, LLaDA, or the
// block-diffusion decoder for SDAR and Fast-dLLM v2) over the model's forward, stop-token truncation and decoding.
// The CLI and the server call this.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/generation_options.h"
#include "engine/sampling.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace dlx {

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
