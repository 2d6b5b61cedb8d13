#include "kernels/backend.h"

#include "core/error.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace dlx {

std::unique_ptr<Backend> make_backend(const std::string& name) {
  if (name == "cpu") return std::make_unique<CpuBackend>();
#ifdef DIFFULEX_HAVE_CUDA
  if (name == "cuda") return make_cuda_backend();
  fail("unknown device '{}' (available: cpu, cuda)", name);
#else
  if (name == "cuda") fail("device 'cuda' is not available: this diffulex was built without CUDA (available: cpu)");
  fail("unknown device '{}' (available: cpu)", name);
#endif
}

}  // namespace dlx
