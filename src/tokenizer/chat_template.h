// Chat-template rendering: runs a checkpoint's own `chat_template` (the Jinja string in tokenizer_config.json)
// the way transformers' apply_chat_template(..., tokenize=False) does: a Jinja environment with trim_blocks and
// lstrip_blocks, and the variables messages (list of {role, content}), add_generation_prompt, tools=None,
// documents=None, plus the caller's extra variables (bos_token, eos_token, ...), which may override those.
// The interpreter (src/tokenizer/jinja_*) supports the Jinja subset that real chat templates use (Qwen2/2.5/3,
// Dream, LLaDA, Llama-3 style); anything else is reported, never guessed.
//
// Errors (syntax errors, unsupported constructs, raise_exception(msg) in the template, misuse of undefined
// values) throw dlx::Error with a one-line message naming the construct and its line/column; the caller can
// then fall back to the plain prompt.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace dlx {

struct ChatMessage {
  std::string role, content;
};

std::string render_chat_template(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, const std::map<std::string, std::string>& extra_vars);

// The same with typed extra variables, e.g. enable_thinking=false for Qwen3's template.
std::string render_chat_template_values(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                                        bool add_generation_prompt, const jinja::ValueMap& extra_vars);

}  // namespace dlx
