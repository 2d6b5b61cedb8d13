// libFuzzer target: tokenizer.json loaded (no tokenizer_config.json beside it), then a fixed text encoded and the
// ids decoded back.
#include "core/error.h"
#include "fuzz_common.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = dlx::fuzz::write_scratch("tokenizer.json", dlx::fuzz::as_text(data, size));
  try {
    const dlx::Tokenizer tok = dlx::Tokenizer::load(path);
    const std::vector<int32_t> ids = tok.encode("Hello, world! 123 <|im_start|>  ünïcödé\n\t", true);
    (void)tok.decode(ids);
  } catch (const dlx::Error&) {
  }
  return 0;
}
