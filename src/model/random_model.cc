#include "model/random_model.h"

#include <filesystem>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/random_init.h"

namespace dlx {

using json = nlohmann::json;

json random_preset_config(const std::string& preset) {
  json dream = {{"model_type", "Dream"},        {"architectures", {"DreamModel"}}, {"hidden_size", 3584},
                {"intermediate_size", 18944},   {"num_hidden_layers", 28},         {"num_attention_heads", 28},
                {"num_key_value_heads", 4},     {"vocab_size", 152064},            {"rope_theta", 1000000.0},
                {"rms_norm_eps", 1e-6},         {"tie_word_embeddings", false},    {"mask_token_id", 151666},
                {"bos_token_id", 151643},       {"eos_token_id", 151643},          {"pad_token_id", 151643},
                {"max_position_embeddings", 131072}, {"torch_dtype", "bfloat16"}};
  json llada = {{"model_type", "llada"},   {"architectures", {"LLaDAModelLM"}}, {"d_model", 4096},
                {"n_heads", 32},           {"n_kv_heads", 32},                  {"n_layers", 32},
                {"mlp_hidden_size", 12288}, {"vocab_size", 126464},             {"embedding_size", 126464},
                {"rope_theta", 500000.0},  {"rms_norm_eps", 1e-5},              {"include_bias", false},
                {"weight_tying", false},   {"mask_token_id", 126336},           {"eos_token_id", 126081},
                {"pad_token_id", 126081},  {"max_sequence_length", 4096},       {"torch_dtype", "bfloat16"}};
  // SDAR-8B-Chat (JetAstra/SDAR training/model/SDAR-8B-Chat/config.json) and Fast_dLLM_v2_7B (its config.json;
  // mask_token_id is modeling.py's default, written out here).
  json sdar = {{"model_type", "sdar"},          {"architectures", {"SDARForCausalLM"}}, {"hidden_size", 4096},
               {"intermediate_size", 12288},    {"num_hidden_layers", 36},              {"num_attention_heads", 32},
               {"num_key_value_heads", 8},      {"head_dim", 128},                      {"vocab_size", 151936},
               {"rope_theta", 1000000.0},       {"rms_norm_eps", 1e-6},                 {"tie_word_embeddings", false},
               {"attention_bias", false},       {"block_size", 4},                      {"mask_token_id", 151669},
               {"bos_token_id", 151643},        {"eos_token_id", 151643},               {"pad_token_id", 151643},
               {"max_position_embeddings", 32768}, {"torch_dtype", "bfloat16"}};
  json fast = dream;
  fast.update({{"model_type", "Fast_dLLM_Qwen"}, {"architectures", {"Fast_dLLM_QwenForCausalLM"}}, {"bd_size", 32},
               {"mask_token_id", 151665}, {"eos_token_id", 151645}, {"pad_token_id", 151645},
               {"max_position_embeddings", 32768}});
  if (preset == "sdar-8b") return sdar;
  if (preset == "fast-dllm-v2-7b") return fast;
  if (preset == "sdar-tiny") {
    sdar.update({{"hidden_size", 64}, {"intermediate_size", 160}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                 {"num_key_value_heads", 2}, {"head_dim", 16}, {"vocab_size", 320}, {"mask_token_id", 319},
                 {"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 2}});
    return sdar;
  }
  if (preset == "dream-7b") return dream;
  if (preset == "llada-8b") return llada;
  if (preset == "dream-tiny") {
    dream.update({{"hidden_size", 64}, {"intermediate_size", 160}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                  {"num_key_value_heads", 2}, {"vocab_size", 320}, {"mask_token_id", 319}, {"bos_token_id", 1},
                  {"eos_token_id", 2}, {"pad_token_id", 2}});
    return dream;
  }
  if (preset == "llada-tiny") {
    llada.update({{"d_model", 64}, {"n_heads", 4}, {"n_kv_heads", 4}, {"n_layers", 2}, {"mlp_hidden_size", 160},
                  {"vocab_size", 320}, {"embedding_size", 320}, {"mask_token_id", 319}, {"eos_token_id", 2},
                  {"pad_token_id", 2}});
    return llada;
  }
  fail("unknown random model preset '{}' (available: dream-7b, llada-8b, sdar-8b, fast-dllm-v2-7b, dream-tiny, llada-tiny, sdar-tiny)", preset);
}

void write_random_checkpoint(const std::string& dir, json config, uint64_t seed, int64_t num_layers) {
  if (num_layers > 0) config[config.contains("n_layers") ? "n_layers" : "num_hidden_layers"] = num_layers;
  const ModelConfig c = parse_model_config(config, "random model config");
  const ArchNames& names = arch_names(c.arch);
  // bf16 weights from random_host_weight (random_init.h): a counter-based generator, filled in parallel, one seed
  // per tensor.
  uint64_t tensor_seed = seed * 1000003 + 17;
  auto make = [&](Shape shape, float mean, float std) {
    return random_host_weight(std::move(shape), ++tensor_seed, mean, std);
  };
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const float ws = 0.02f;
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.emplace_back(names.embed, make({c.vocab_size, H}, 0, ws));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    std::string p = fmt::format(fmt::runtime(names.layer_prefix), i);
    tensors.emplace_back(p + names.attn_norm, make({H}, 1.0f, 0.05f));
    tensors.emplace_back(p + names.ffn_norm, make({H}, 1.0f, 0.05f));
    if (c.qk_norm) {
      tensors.emplace_back(p + names.q_norm, make({D}, 1.0f, 0.05f));
      tensors.emplace_back(p + names.k_norm, make({D}, 1.0f, 0.05f));
    }
    Shape shapes[7] = {{c.num_heads * D, H}, {c.num_kv_heads * D, H}, {c.num_kv_heads * D, H}, {H, c.num_heads * D},
                       {I, H},               {I, H},                  {H, I}};
    for (LinearRole r : kLinearRoles) {
      std::string lp = p + names.linear[int(r)];
      tensors.emplace_back(lp + ".weight", make(shapes[int(r)], 0, ws));
      if (c.qkv_bias && (r == LinearRole::Q || r == LinearRole::K || r == LinearRole::V))
        tensors.emplace_back(lp + ".bias", make({shapes[int(r)][0]}, 0, ws));
    }
  }
  tensors.emplace_back(names.final_norm, make({H}, 1.0f, 0.05f));
  if (!c.tie_word_embeddings) tensors.emplace_back(names.lm_head, make({c.vocab_size, H}, 0, ws));
  std::filesystem::create_directories(dir);
  write_safetensors((std::filesystem::path(dir) / "model.safetensors").string(), tensors);
  write_file_atomic((std::filesystem::path(dir) / "config.json").string(), config.dump(2) + "\n");
}

}  // namespace dlx
