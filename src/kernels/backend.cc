#include "kernels/backend.h"

#include "core/error.h"
#include "kernels/cpu/cpu_backend.h"

namespace dlx {

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend>();
  fail("unknown device '{}' (available: cpu)", name);
}

}  // namespace dlx
