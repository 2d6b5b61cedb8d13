// Per-architecture tensor names. The transformer is the same for Dream, LLaDA, SDAR and Fast-dLLM v2; only the
// names differ (and SDAR's q/k norms, present only where q_norm / k_norm are named).
#pragma once
#include <string>

#include "model/config.h"

namespace dlx {

enum class LinearRole { Q, K, V, O, Gate, Up, Down };
constexpr LinearRole kLinearRoles[] = {LinearRole::Q,    LinearRole::K,  LinearRole::V,   LinearRole::O,
                                       LinearRole::Gate, LinearRole::Up, LinearRole::Down};
inline bool is_attention_role(LinearRole r) { return r == LinearRole::Q || r == LinearRole::K || r == LinearRole::V || r == LinearRole::O; }

struct ArchNames {
  std::string embed, final_norm, lm_head;
  std::string layer_prefix;  // fmt pattern with the layer index, e.g. "model.layers.{}."
  std::string attn_norm, ffn_norm;  // relative to the layer prefix, full tensor names
  std::string linear[7];      // relative module prefixes, indexed by LinearRole
  std::string q_norm, k_norm;  // relative full tensor names of the per-head q/k RMSNorm weights; empty: none
};

const ArchNames& arch_names(Arch arch);

}  // namespace dlx
