// libFuzzer target: an AWQ run's metadata (quantize --awq-scales-from) parsed into per-layer scale exponents.
#include "core/error.h"
#include "core/json.h"
#include "fuzz_common.h"
#include "quant/quantizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool fold_vo : {true, false}) {
    try {
      const nlohmann::json j = dlx::parse_json(dlx::fuzz::as_text(data, size), "quantization_metadata_awq.json");
      (void)dlx::parse_awq_ratios(j, "quantization_metadata_awq.json", fold_vo);
    } catch (const dlx::Error&) {
    }
  }
  return 0;
}
