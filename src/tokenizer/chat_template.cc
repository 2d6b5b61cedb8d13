#include "tokenizer/chat_template.h"

#include <new>

#include "core/error.h"
#include "tokenizer/jinja/template.h"

namespace dlx {

std::string render_chat_template_values(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                                        bool add_generation_prompt, const jinja::ValueMap& extra_vars) {
  using jinja::Value;
  jinja::ValueList msgs;
  for (const ChatMessage& m : messages) {
    jinja::ValueMap fields;
    fields.set("role", Value(m.role));
    fields.set("content", Value(m.content));
    msgs.emplace_back(std::move(fields));
  }
  jinja::ValueMap vars;
  vars.set("messages", Value(std::move(msgs)));
  vars.set("tools", Value::none());
  vars.set("documents", Value::none());
  vars.set("add_generation_prompt", Value(add_generation_prompt));
  for (const auto& [k, v] : extra_vars) vars.set(k, v);
  try {
    const jinja::Template t(tmpl, {.trim_blocks = true, .lstrip_blocks = true, .keep_trailing_newline = false});
    return t.render(vars);
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Error("chat template: out of memory while rendering");
  } catch (const std::exception& e) {
    // The interpreter reports its errors as dlx::Error; anything else is a bug, but still must not crash.
    throw Error(std::string("chat template: internal error: ") + e.what());
  }
}

std::string render_chat_template(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, const std::map<std::string, std::string>& extra_vars) {
  jinja::ValueMap vars;
  for (const auto& [k, v] : extra_vars) vars.set(k, jinja::Value(v));
  return render_chat_template_values(tmpl, messages, add_generation_prompt, vars);
}

}  // namespace dlx
