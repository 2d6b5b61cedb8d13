#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_check.h"

#include "core/error.h"

namespace dlx::cuda {

void cuda_fail(const char* op, const char* error_name, const char* error_text) {
  fail("cuda {}: {} ({})", op, error_name, error_text);
}

}  // namespace dlx::cuda
#endif  // DIFFULEX_HAVE_CUDA
