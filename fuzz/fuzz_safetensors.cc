// libFuzzer target: a safetensors file (8-byte header length, JSON header, data), opened and every tensor read.
#include "core/error.h"
#include "fuzz_common.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = dlx::fuzz::write_scratch("model.safetensors", dlx::fuzz::as_text(data, size));
  try {
    dlx::SafetensorsFile f(path);
    for (const auto& [name, info] : f.tensors()) {
      const dlx::Tensor t = f.get(name);
      volatile uint8_t sink = 0;
      if (t.nbytes() > 0) sink = static_cast<const uint8_t*>(t.data())[t.nbytes() - 1];  // in bounds
      (void)sink;
    }
  } catch (const dlx::Error&) {
  }
  return 0;
}
