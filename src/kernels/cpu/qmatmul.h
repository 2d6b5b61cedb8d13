// CPU low-bit matmul on a PackedWeight (kernels/packed_weight.h): y[M, N] = x[M, K] · W^T (+ bias), with
// W[n, k] = scale * q - scaled_zero per group, unpacked in registers; the weight stays packed in memory.
#pragma once
#include "core/tensor.h"
#include "kernels/packed_weight.h"

namespace dlx {

void cpu_qmatmul(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y);

}  // namespace dlx
