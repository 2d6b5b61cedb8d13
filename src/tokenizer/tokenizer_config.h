// The optional files beside tokenizer.json that transformers reads: tokenizer_config.json (special token
// strings, chat_template, add_bos_token) and special_tokens_map.json (special token strings only; used for
// those tokenizer_config.json does not name). A token may be written as a string, as {"content": "..."} or
// as null. A chat template may be a string, a list of {"name", "template"} (the "default" one is taken), or
// a chat_template.jinja file.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace dlx {

struct TokenizerConfig {
  std::string bos_token, eos_token, pad_token, mask_token, unk_token;  // "" when not given
  std::string chat_template;
  bool add_bos_token = false;
};

// Reads what exists of those files in `dir`; missing files give defaults, malformed ones an Error.
TokenizerConfig load_tokenizer_config(const std::string& dir);

}  // namespace dlx
