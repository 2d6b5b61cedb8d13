// libFuzzer target: a chat template rendered over a short conversation, as the CLI and the server render one.
#include "core/error.h"
#include "fuzz_common.h"
#include "tokenizer/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<dlx::ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "What is 2+2?"}, {"assistant", "4"}, {"user", "And 3+3?"}};
  try {
    (void)dlx::render_chat_template(std::string(dlx::fuzz::as_text(data, size)), messages, true,
                                    {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
  } catch (const dlx::Error& e) {
    // render_chat_template turns any other exception into "internal error" / "out of memory": findings too.
    const std::string_view msg = e.what();
    if (msg.starts_with("chat template: internal error") || msg.starts_with("chat template: out of memory"))
      __builtin_trap();
  }
  return 0;
}
