// Launchers of the fused kernels of a transformer layer (norm.cu, rope.cu), declared apart from launch.h so that
// the other kernels do not depend on them. Same conventions as launch.h (raw bf16 device pointers, one stream).
#pragma once
#include "kernels/cuda/launch.h"

namespace dlx::cuda {

// h = bf16(h + y), then out = rmsnorm(h) as launch_rmsnorm (bit for bit launch_add + launch_rmsnorm); out must not
// alias h or y.
void launch_add_rmsnorm(bf16_t* h, const bf16_t* y, const void* w, Elt w_type, int64_t T, int64_t H, float eps,
                        bf16_t* out, cudaStream_t stream);

// The fused q/k/v GEMM output qkv [T, Hq*D + 2*Hkv*D] into q [T, Hq, D] and k [T, Hkv, D], rotated as launch_rope
// does (same angles), and v [T, Hkv*D] (contiguous outputs, none aliasing qkv).
void launch_qkv_rope(const bf16_t* qkv, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, const int64_t* positions,
                     const float* inv_freq, bf16_t* q, bf16_t* k, bf16_t* v, cudaStream_t stream);

}  // namespace dlx::cuda
