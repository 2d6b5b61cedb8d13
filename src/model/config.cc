#include "model/config.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/json.h"

namespace dlx {

using json = nlohmann::json;

std::string_view arch_name(Arch a) {
  switch (a) {
    case Arch::Dream: return "Dream";
    case Arch::LLaDA: return "LLaDA";
    case Arch::SDAR: return "SDAR";
    case Arch::FastDLLMv2: return "Fast-dLLM v2";
  }
  return "?";
}

namespace {

// Field readers that name the file and field in every error.
struct Fields {
  const json& j;
  const std::string& src;
  bool has(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  int64_t integer(const char* k) const {
    if (!has(k)) fail("{}: missing field '{}'", src, k);
    if (!j[k].is_number_integer()) fail("{}: field '{}' must be an integer", src, k);
    return j[k].get<int64_t>();
  }
  int64_t integer_or(const char* k, int64_t def) const { return has(k) ? integer(k) : def; }
  int64_t positive(const char* k) const {
    int64_t v = integer(k);
    if (v <= 0) fail("{}: field '{}' must be positive, got {}", src, k, v);
    return v;
  }
  double number_or(const char* k, double def) const {
    if (!has(k)) return def;
    if (!j[k].is_number()) fail("{}: field '{}' must be a number", src, k);
    return j[k].get<double>();
  }
  // A number in (lo, hi], finite.
  double number_in(const char* k, double def, double lo, double hi) const {
    const double v = number_or(k, def);
    if (!(v > lo && v <= hi)) fail("{}: field '{}' must be in ({:g}, {:g}], got {:g}", src, k, lo, hi, v);
    return v;
  }
  bool boolean_or(const char* k, bool def) const {
    if (!has(k)) return def;
    if (!j[k].is_boolean()) fail("{}: field '{}' must be true or false", src, k);
    return j[k].get<bool>();
  }
  // eos_token_id may be a list in some configs; the first entry is used.
  int64_t token_id_or(const char* k, int64_t def) const {
    if (!has(k)) return def;
    if (j[k].is_array() && !j[k].empty() && j[k][0].is_number_integer()) return j[k][0].get<int64_t>();
    return integer(k);
  }
};

DType parse_torch_dtype(const Fields& f) {
  if (!f.has("torch_dtype")) return DType::BF16;
  std::string s = f.j["torch_dtype"].is_string() ? f.j["torch_dtype"].get<std::string>() : "";
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16") return DType::F16;
  if (s == "float32") return DType::F32;
  fail("{}: field 'torch_dtype' is '{}' (supported: bfloat16, float16, float32)", f.src, s);
}

// The Qwen2 / Qwen3 field names (Dream, Fast-dLLM v2, SDAR).
void parse_qwen(const Fields& f, ModelConfig& c) {
  c.hidden_size = f.positive("hidden_size");
  c.intermediate_size = f.positive("intermediate_size");
  c.num_layers = f.positive("num_hidden_layers");
  c.num_heads = f.positive("num_attention_heads");
  c.num_kv_heads = f.has("num_key_value_heads") ? f.positive("num_key_value_heads") : c.num_heads;
  c.head_dim = f.has("head_dim") ? f.positive("head_dim") : c.hidden_size / c.num_heads;
  c.vocab_size = f.positive("vocab_size");
  c.max_position_embeddings = f.has("max_position_embeddings") ? f.positive("max_position_embeddings") : 32768;
  c.rope_theta = f.number_in("rope_theta", 10000.0, 0.0, 1e12);
  c.rms_norm_eps = f.number_in("rms_norm_eps", 1e-6, 0.0, 1.0);
  c.tie_word_embeddings = f.boolean_or("tie_word_embeddings", false);
  c.mask_token_id = f.token_id_or("mask_token_id", -1);
  c.bos_token_id = f.token_id_or("bos_token_id", -1);
  c.eos_token_id = f.token_id_or("eos_token_id", -1);
  c.pad_token_id = f.token_id_or("pad_token_id", c.eos_token_id);
}

void parse_dream(const Fields& f, ModelConfig& c) {
  c.arch = Arch::Dream;
  parse_qwen(f, c);
  c.qkv_bias = true;  // Qwen2 always has q/k/v biases
}

// SDAR (JetAstra/SDAR training/model/SDAR-8B-Chat/config.json, modeling_sdar.py): Qwen3 layout, block_size
// (4 in the released configs) and mask_token_id (151669, "<|MASK|>") in config.json.
void parse_sdar(const Fields& f, ModelConfig& c) {
  c.arch = Arch::SDAR;
  parse_qwen(f, c);
  c.qk_norm = true;
  // attention_bias would put biases on q/k/v AND o_proj; the released SDAR models have none.
  if (f.boolean_or("attention_bias", false))
    fail("{}: field 'attention_bias' is true; SDAR checkpoints with attention biases are not supported", f.src);
  c.block_size = f.integer_or("block_size", 4);
  if (c.block_size <= 0) fail("{}: field 'block_size' must be positive, got {}", f.src, c.block_size);
  if (c.mask_token_id < 0) fail("{}: missing field 'mask_token_id' (SDAR's is 151669)", f.src);
}

// Fast-dLLM v2 (the Fast_dLLM_v2_7B directory: config.json, modeling.py): Qwen2.5 layout with q/k/v biases, the
// block size in bd_size (32). Its config.json carries no mask_token_id: modeling.py's generate() defaults to
// 151665 ("|<MASK>|" in added_tokens.json), used here when the vocabulary holds it. Decoding sub-blocks:
// generate()'s small_block_size = 8 (config field small_block_size, when present, overrides it).
void parse_fast_dllm_v2(const Fields& f, ModelConfig& c) {
  c.arch = Arch::FastDLLMv2;
  parse_qwen(f, c);
  c.qkv_bias = true;
  c.block_size = f.integer_or("bd_size", 32);
  if (c.block_size <= 0) fail("{}: field 'bd_size' must be positive, got {}", f.src, c.block_size);
  c.sub_block_size = f.integer_or("small_block_size", std::min<int64_t>(8, c.block_size));
  if (c.sub_block_size <= 0 || c.block_size % c.sub_block_size != 0)
    fail("{}: field 'small_block_size' ({}) must be a positive divisor of bd_size ({})", f.src, c.sub_block_size,
         c.block_size);
  if (c.mask_token_id < 0) {
    if (c.vocab_size <= 151665) fail("{}: missing field 'mask_token_id' (Fast-dLLM v2's default 151665 is outside the vocabulary of {})", f.src, c.vocab_size);
    c.mask_token_id = 151665;
  }
}

void parse_llada(const Fields& f, ModelConfig& c) {
  c.arch = Arch::LLaDA;
  c.hidden_size = f.positive("d_model");
  c.num_layers = f.positive("n_layers");
  c.num_heads = f.positive("n_heads");
  c.num_kv_heads = f.has("n_kv_heads") ? f.positive("n_kv_heads") : c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  // OLMo: mlp_hidden_size is the fused gate+up width when set; LLaDA's checkpoints store it as the per-branch
  // width (12288 = ff_proj rows). mlp_ratio * d_model is the fallback.
  c.intermediate_size = f.has("mlp_hidden_size")
                            ? f.positive("mlp_hidden_size")
                            : int64_t(f.number_in("mlp_ratio", 4.0, 0.0, 64.0) * double(c.hidden_size));
  c.vocab_size = f.has("embedding_size") ? f.positive("embedding_size") : f.positive("vocab_size");
  c.max_position_embeddings = f.has("max_sequence_length") ? f.positive("max_sequence_length") : 4096;
  c.rope_theta = f.number_in("rope_theta", 10000.0, 0.0, 1e12);
  c.rms_norm_eps = f.number_in("rms_norm_eps", 1e-5, 0.0, 1.0);
  c.qkv_bias = f.boolean_or("include_bias", false) || f.boolean_or("include_qkv_bias", false);
  c.tie_word_embeddings = f.boolean_or("weight_tying", false);
  c.mask_token_id = f.token_id_or("mask_token_id", 126336);
  c.bos_token_id = f.token_id_or("bos_token_id", -1);
  c.eos_token_id = f.token_id_or("eos_token_id", -1);
  c.pad_token_id = f.token_id_or("pad_token_id", -1);
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: not a JSON object", source);
  Fields f{j, source};
  ModelConfig c;
  if (!f.has("model_type") || !j["model_type"].is_string())
    fail("{}: missing field 'model_type' (supported: \"Dream\", \"llada\", \"sdar\", \"Fast_dLLM_Qwen\")", source);
  c.model_type = j["model_type"].get<std::string>();
  if (c.model_type == "Dream" || c.model_type == "dream") {
    parse_dream(f, c);
  } else if (c.model_type == "llada" || c.model_type == "LLaDA") {
    parse_llada(f, c);
  } else if (c.model_type == "sdar") {
    parse_sdar(f, c);
  } else if (c.model_type == "Fast_dLLM_Qwen") {
    parse_fast_dllm_v2(f, c);
  } else {
    fail("{}: unsupported model_type '{}' (supported: \"Dream\" (Dream-v0 7B, Qwen2 layout), \"llada\" (LLaDA-8B), "
         "\"sdar\" (SDAR, Qwen3 layout), \"Fast_dLLM_Qwen\" (Fast-dLLM v2, Qwen2.5 layout))",
         source, c.model_type);
  }
  c.dtype = parse_torch_dtype(f);
  // Sizes far beyond any model (the largest have hidden sizes near 2^14 and vocabularies near 2^18): products of
  // them stay far inside int64, and a hostile file cannot ask for exabytes.
  const struct {
    const char* what;
    int64_t value, max;
  } sizes[] = {{"hidden size", c.hidden_size, 1 << 20},           {"intermediate size", c.intermediate_size, 1 << 22},
               {"number of layers", c.num_layers, 1 << 12},      {"number of heads", c.num_heads, 1 << 14},
               {"number of key/value heads", c.num_kv_heads, 1 << 14}, {"head dimension", c.head_dim, 1 << 14},
               {"vocabulary size", c.vocab_size, 1 << 24},       {"context length", c.max_position_embeddings, 1 << 24}};
  for (const auto& sz : sizes)
    if (sz.value <= 0 || sz.value > sz.max) fail("{}: {} {} is outside [1, {}]", source, sz.what, sz.value, sz.max);
  if (c.hidden_size % c.num_heads != 0 && !f.has("head_dim"))
    fail("{}: hidden size {} is not divisible by the number of heads {}", source, c.hidden_size, c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    fail("{}: number of heads {} is not a multiple of the number of key/value heads {}", source, c.num_heads,
         c.num_kv_heads);
  if (c.head_dim % 2 != 0) fail("{}: head dimension {} must be even for RoPE", source, c.head_dim);
  if (c.mask_token_id >= c.vocab_size) fail("{}: mask_token_id {} is outside the vocabulary ({})", source, c.mask_token_id, c.vocab_size);
  for (const auto& [name, id] : {std::pair{"pad_token_id", c.pad_token_id}, std::pair{"mask_token_id", c.mask_token_id}})
    if (id < -1 || id >= c.vocab_size)
      fail("{}: field '{}' is {}, outside the vocabulary [0, {}) (or -1 for none)", source, name, id, c.vocab_size);
  return c;
}

ModelConfig load_model_config(const std::string& model_dir) {
  std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  if (!std::filesystem::exists(path)) fail("{}: not found (is '{}' a model directory?)", path, model_dir);
  return parse_model_config(read_json_file(path), path);
}

}  // namespace dlx
