// Typed model configuration, parsed from a checkpoint's config.json. Dream (Qwen2 field names), LLaDA (OLMo field
// names) and the block-diffusion models SDAR (Qwen3 fields) and Fast-dLLM v2 (Qwen2 fields; docs/BLOCK_DIFFUSION.md)
// all map onto ModelConfig; the architecture decides the tensor names and the generation conventions (Dream and
// Fast-dLLM v2 shift logits by one position, LLaDA and SDAR do not).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/dtype.h"
#include "core/json.h"  // read_json_file, used with the configs

namespace dlx {

enum class Arch { Dream, LLaDA, SDAR, FastDLLMv2 };
std::string_view arch_name(Arch a);

struct ModelConfig {
  Arch arch = Arch::Dream;
  std::string model_type;  // as written in config.json
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  bool qkv_bias = false;
  bool qk_norm = false;  // Qwen3 (SDAR): per-head RMSNorm of q and k (weights [head_dim]) before RoPE
  // Block diffusion (SDAR, Fast-dLLM v2): attention is block-causal, a position l attends to the keys of its own
  // block and of every earlier one (blocks [j*block_size, (j+1)*block_size) of sequence indices); 0: bidirectional.
  int64_t block_size = 0;
  int64_t sub_block_size = 0;  // Fast-dLLM v2's decoding sub-blocks (8); 0: none (the whole block)
  bool tie_word_embeddings = false;
  DType dtype = DType::BF16;  // torch_dtype; the loader uses the tensors' own dtypes
  int64_t mask_token_id = -1;
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;
  bool shift_logits() const { return arch == Arch::Dream || arch == Arch::FastDLLMv2; }
  bool block_diffusion() const { return block_size > 0; }
};

// Parses config.json text or object; `source` names the file in errors. Unknown model types are
// rejected with the list of supported ones; missing or invalid fields are named.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);
ModelConfig load_model_config(const std::string& model_dir);

}  // namespace dlx
