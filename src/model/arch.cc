#include "model/arch.h"

namespace dlx {

const ArchNames& arch_names(Arch arch) {
  static const ArchNames dream{
      "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", "model.layers.{}.",
      "input_layernorm.weight", "post_attention_layernorm.weight",
      {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
       "mlp.down_proj"},
      "", ""};  // no q/k norms
  // LLaDA (OLMo naming): ff_proj is the gated branch (silu applied), up_proj the linear one, ff_out the down projection.
  static const ArchNames llada{
      "model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight",
      "model.transformer.blocks.{}.", "attn_norm.weight", "ff_norm.weight",
      {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"}, "", ""};
  // SDAR (JetAstra/SDAR modeling_sdar.py): Qwen3 names, the Qwen2 ones plus the per-head q/k norms.
  static const ArchNames sdar = [] {
    ArchNames n = dream;
    n.q_norm = "self_attn.q_norm.weight";
    n.k_norm = "self_attn.k_norm.weight";
    return n;
  }();
  switch (arch) {
    case Arch::LLaDA: return llada;
    case Arch::SDAR: return sdar;
    case Arch::Dream:
    case Arch::FastDLLMv2: break;  // Fast-dLLM v2: Qwen2 names (its modeling.py keeps Qwen2's modules)
  }
  return dream;
}

}  // namespace dlx
