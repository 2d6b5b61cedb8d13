// Checking CUDA calls: every runtime call and kernel launch goes through check_cuda / check_launch with the name
// of the op it belongs to, so a failure reads "cuda attention: cudaErrorInvalidValue (invalid argument)".
// Kernels run asynchronously: an error inside a kernel surfaces at the next check on the stream. Setting
// DIFFULEX_CUDA_SYNC=1 makes the backend synchronize after every op so the error names the op that caused it.
#pragma once
#include <cuda_runtime_api.h>

namespace dlx::cuda {

[[noreturn]] void cuda_fail(const char* op, const char* error_name, const char* error_text);

inline void check_cuda(cudaError_t e, const char* op) {
  if (e != cudaSuccess) cuda_fail(op, cudaGetErrorName(e), cudaGetErrorString(e));
}

// After a kernel launch: catches bad launch configurations (and earlier sticky errors).
inline void check_launch(const char* op) { check_cuda(cudaGetLastError(), op); }

}  // namespace dlx::cuda
