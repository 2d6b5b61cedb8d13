#include "engine/generation_options.h"

#include <array>
#include <filesystem>
#include <utility>

#include "core/error.h"
#include "core/json.h"

namespace dlx {

namespace {

template <typename E, size_t N>
using Spellings = std::array<std::pair<E, std::string_view>, N>;

constexpr Spellings<CacheMode, 3> kCacheModes{{{CacheMode::None, "none"}, {CacheMode::Prefix, "prefix"},
                                               {CacheMode::Dual, "dual"}}};
constexpr Spellings<KvDtype, 2> kKvDtypes{{{KvDtype::BF16, "bf16"}, {KvDtype::FP8, "fp8"}}};
constexpr Spellings<DreamAlg, 4> kDreamAlgs{{{DreamAlg::Origin, "origin"},
                                             {DreamAlg::MaskgitPlus, "maskgit_plus"},
                                             {DreamAlg::TopkMargin, "topk_margin"},
                                             {DreamAlg::Entropy, "entropy"}}};
constexpr Spellings<Remasking, 2> kRemaskings{{{Remasking::LowConfidence, "low_confidence"},
                                               {Remasking::Random, "random"}}};

template <typename E, size_t N>
std::string_view spell(const Spellings<E, N>& names, E value) {
  for (const auto& [v, s] : names)
    if (v == value) return s;
  fail("unknown enum value {}", int(value));
}

// "a, b or c"
template <typename E, size_t N>
std::string accepted(const Spellings<E, N>& names) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += i + 1 == N ? " or " : ", ";
    out += names[i].second;
  }
  return out;
}

template <typename E, size_t N>
E parse(const Spellings<E, N>& names, std::string_view text, std::string_view field) {
  for (const auto& [v, s] : names)
    if (s == text) return v;
  fail("{} must be {} (got '{}')", field, accepted(names), text);
}

}  // namespace

std::string_view to_string(CacheMode m) { return spell(kCacheModes, m); }
std::string_view to_string(KvDtype d) { return spell(kKvDtypes, d); }
std::string_view to_string(DreamAlg a) { return spell(kDreamAlgs, a); }
std::string_view to_string(Remasking r) { return spell(kRemaskings, r); }

CacheMode parse_cache_mode(std::string_view text, std::string_view field) { return parse(kCacheModes, text, field); }
KvDtype parse_kv_dtype(std::string_view text, std::string_view field) { return parse(kKvDtypes, text, field); }
DreamAlg parse_dream_alg(std::string_view text, std::string_view field) { return parse(kDreamAlgs, text, field); }
Remasking parse_remasking(std::string_view text, std::string_view field) { return parse(kRemaskings, text, field); }

GenerationOptions generation_defaults(const std::string& model_dir) {
  GenerationOptions o;
  const std::string path = (std::filesystem::path(model_dir) / "generation_config.json").string();
  if (!std::filesystem::exists(path)) return o;
  nlohmann::json j = read_json_file(path);
  auto num = [&](const char* k, auto& field) {
    if (j.contains(k) && j[k].is_number()) field = j[k].get<std::decay_t<decltype(field)>>();
  };
  num("max_new_tokens", o.max_new_tokens);
  num("steps", o.steps);
  num("alg_temp", o.alg_temp);
  num("temperature", o.temperature);
  num("top_p", o.top_p);
  num("top_k", o.top_k);
  if (j.contains("alg") && j["alg"].is_string()) o.alg = parse_dream_alg(j["alg"].get<std::string>(), path + ": alg");
  return o;
}

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
