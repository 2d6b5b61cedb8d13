// libFuzzer target: config.json text parsed into a ModelConfig.
#include "core/error.h"
#include "core/json.h"
#include "fuzz_common.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const nlohmann::json j = dlx::parse_json(dlx::fuzz::as_text(data, size), "config.json");
    (void)dlx::parse_model_config(j, "config.json");
  } catch (const dlx::Error&) {
  }
  return 0;
}
