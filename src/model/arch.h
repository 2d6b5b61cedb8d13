// Per-architecture tensor names. The transformer is the same for Dream and LLaDA; only the names differ.
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
};

const ArchNames& arch_names(Arch arch);

}  // namespace dlx
