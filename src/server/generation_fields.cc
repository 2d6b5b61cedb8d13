#include "server/generation_fields.h"

namespace dlx {

const std::vector<GenerationField>& generation_fields() {
  using G = GenerationOptions;
  static const std::vector<GenerationField> fields = {
      {"--max-new-tokens,--gen-length,--max-tokens", "max_tokens", &G::max_new_tokens,
       "Tokens to generate (default: generation_config.json, else 64)"},
      {"--steps", "steps", &G::steps, "Diffusion steps (default: one per new token)"},
      {"--block-length", "block_length", &G::block_length, "Semi-autoregressive block length (0: one block)"},
      {"--alg", "alg", &G::alg, "Dream: origin | maskgit_plus | topk_margin | entropy"},
      {"--alg-temp", "alg_temp", &G::alg_temp, "Dream: sample positions by softmax(confidence / alg_temp)"},
      {"--temperature", "temperature", &G::temperature, "Sampling temperature (0: greedy)"},
      {"--top-p", "top_p", &G::top_p, "Nucleus sampling (1: off)"},
      {"--top-k", "top_k", &G::top_k, "Top-k sampling (0: off)"},
      {"--remasking", "remasking", &G::remasking, "LLaDA: low_confidence | random"},
      {"--cfg-scale", "cfg_scale", &G::cfg_scale, "LLaDA: classifier-free guidance scale (0: off)"},
      {"--threshold", "threshold", &G::threshold,
       "Parallel decoding: reveal every position with confidence > threshold"},
      {"--tokens-per-step", "tokens_per_step", &G::tokens_per_step, "Reveal this many tokens per step"},
      {"--sub-block", "sub_block", &G::sub_block,
       "Block diffusion: tokens per decoding sub-block (0: the model's; Fast-dLLM v2: 8)"},
      {"--seed", "seed", &G::seed, "Random seed"},
      {"--cache", "cache", &G::cache, "Block KV cache: none | prefix | dual (approximate; see docs/SAMPLERS.md)"},
      {"--kv-dtype,--kv-cache-dtype", "kv_dtype", &G::kv_dtype,
       "KV cache storage: bf16 (activation dtype) | fp8 (e4m3, per-head scales)"},
  };
  return fields;
}

void copy_field(const GenerationField& f, const GenerationOptions& src, GenerationOptions& dst) {
  std::visit([&](auto m) { dst.*m = src.*m; }, f.member);
}

}  // namespace dlx
