// --kv-budget of `generate` and `serve`.
#include <string>

#include "cli/commands.h"
#include "core/byte_size.h"
#include "kernels/backend.h"
#include "model/model.h"

namespace dlx::cli {

size_t kv_budget_bytes(Model& model, const std::string& text) {
  if (text.empty() || text == "auto") {
    // auto: 70% of the device memory still free after loading the weights (the rest for activations); the host
    // backend has no device memory to budget (0: no limit).
    return size_t(double(model.backend().device_memory().free_bytes) * 0.7);
  }
  return size_t(parse_byte_size(text, "--kv-budget"));
}

}  // namespace dlx::cli
