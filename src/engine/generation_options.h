// The generation options: the modes as enums (parsed and printed here, the only place that knows their
// spellings), SamplingOptions (what the unmasking loop reads, engine/unmask.h), GenerationOptions (those plus
// the model-level ones: sub-blocks, KV cache) and the table of user-settable fields that `diffulex generate`,
// `diffulex serve` (flags) and the HTTP API (request fields, server/api.h) all read, so an option is named once.
// Strings appear only at those boundaries and in generation_config.json.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace dlx {

// Block KV cache (Fast-dLLM): None recomputes the whole sequence every step; Prefix refreshes the cache at the
// first step of each block and then recomputes only the current block and everything after it; Dual recomputes
// only the current block, reading cached keys/values for the prefix and the suffix.
enum class CacheMode { None, Prefix, Dual };
// KV cache storage: BF16 is the backend's activation dtype (bf16 on CUDA, f32 on the CPU); FP8 is e4m3 with
// per-(position, head) scales (see KvCache).
enum class KvDtype { BF16, FP8 };
// Dream's confidence measure (engine/dream_sampler.h): Origin reveals by the transfer probability and ranks
// nothing; MaskgitPlus ranks by the token's probability, TopkMargin by top1 - top2, Entropy by -entropy.
enum class DreamAlg { Origin, MaskgitPlus, TopkMargin, Entropy };
// LLaDA's remasking (engine/llada_sampler.h): reveal the most probable (LowConfidence) or random positions.
enum class Remasking { LowConfidence, Random };

// The spellings (CLI, HTTP JSON, generation_config.json): none|prefix|dual, bf16|fp8,
// origin|maskgit_plus|topk_margin|entropy, low_confidence|random.
std::string_view to_string(CacheMode m);
std::string_view to_string(KvDtype d);
std::string_view to_string(DreamAlg a);
std::string_view to_string(Remasking r);
// The value spelled `text`; else throws dlx::Error naming `field` and the accepted spellings, e.g.
// "cache must be none, prefix or dual (got 'all')".
CacheMode parse_cache_mode(std::string_view text, std::string_view field = "cache");
KvDtype parse_kv_dtype(std::string_view text, std::string_view field = "kv_dtype");
DreamAlg parse_dream_alg(std::string_view text, std::string_view field = "alg");
Remasking parse_remasking(std::string_view text, std::string_view field = "remasking");

// The options of the unmasking loop (engine/unmask.h) that a user sets; each policy reads the shared ones and
// its own (alg / alg_temp: Dream; remasking / cfg_scale: LLaDA).
struct SamplingOptions {
  int64_t max_new_tokens = 64;  // new tokens after the prompt (LLaDA's gen_length)
  int steps = 0;                // total diffusion steps; generate: 0 is one step per new token
  int64_t block_length = 0;     // > 0: decode the new tokens in blocks of this length, left to right; 0: one block
  DreamAlg alg = DreamAlg::Entropy;
  float alg_temp = 0;     // Dream: > 0 samples the positions to reveal by softmax(confidence / alg_temp)
  float temperature = 0;  // 0: greedy
  float top_p = 1;        // 1: off
  int64_t top_k = 0;      // 0: off
  Remasking remasking = Remasking::LowConfidence;
  float cfg_scale = 0;          // LLaDA: classifier-free guidance; 0: off
  float threshold = 0;          // parallel decoding (Fast-dLLM); 0: off
  int64_t tokens_per_step = 0;  // fixed tokens per step; 0: off
  uint64_t seed = 0;
};

struct GenerationOptions : SamplingOptions {
  // Block diffusion (SDAR, Fast-dLLM v2; engine/block_sampler.h): `steps` is per block (SDAR's denoising steps,
  // clamped to the block size; 0: at least one token per step), `threshold` 0 takes the model's default (SDAR
  // 0.85, Fast-dLLM v2 0.9), block_length must be 0 or the model's block size, and the exact block KV cache is
  // always on (`cache` is ignored; kv_dtype applies).
  int64_t sub_block = 0;  // tokens per decoding sub-block; 0: the model's (Fast-dLLM v2: 8, SDAR: the whole block)
  CacheMode cache = CacheMode::None;
  KvDtype kv_dtype = KvDtype::BF16;  // only with a cache (or block diffusion)
};

// The checkpoint's generation_config.json (Dream-style fields: max_new_tokens, steps, alg, alg_temp, temperature,
// top_p, top_k) over the built-in defaults; absent file or fields keep the defaults.
GenerationOptions generation_defaults(const std::string& model_dir);

// One user-settable GenerationOptions field. Defaults stay where they are: GenerationOptions and the
// checkpoint's generation_config.json (generation_defaults).
struct GenerationField {
  using G = GenerationOptions;
  using Member = std::variant<int64_t G::*, int G::*, float G::*, uint64_t G::*, CacheMode G::*, KvDtype G::*,
                              DreamAlg G::*, Remasking G::*>;
  const char* flags;  // CLI11 option names, e.g. "--max-new-tokens,--gen-length"; the first is the canonical one
  const char* json;   // the request field, e.g. "max_tokens" (OpenAI's name where the API has one)
  Member member;
  const char* help;
};

const std::vector<GenerationField>& generation_fields();

// Copies field `f` from `src` to `dst`.
void copy_field(const GenerationField& f, const GenerationOptions& src, GenerationOptions& dst);

// Whether the member is one of the enums above (set from a string).
template <typename T>
inline constexpr bool is_mode_enum_v = std::is_same_v<T, CacheMode> || std::is_same_v<T, KvDtype> ||
                                       std::is_same_v<T, DreamAlg> || std::is_same_v<T, Remasking>;
// Sets an enum field from its spelling (parse_* above, the error naming `field`).
template <typename E>
E parse_mode(std::string_view text, std::string_view field) {
  if constexpr (std::is_same_v<E, CacheMode>) return parse_cache_mode(text, field);
  else if constexpr (std::is_same_v<E, KvDtype>) return parse_kv_dtype(text, field);
  else if constexpr (std::is_same_v<E, DreamAlg>) return parse_dream_alg(text, field);
  else return parse_remasking(text, field);
}

}  // namespace dlx
