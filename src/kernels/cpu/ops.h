// CPU implementations of the element-wise, normalisation, rotary and attention ops (F32 activations).
// Semantics and shapes are those of Backend (kernels/backend.h).
#pragma once
#include "core/tensor.h"

namespace dlx::cpu {

void embedding(const Tensor& ids, const Tensor& table, Tensor& out);
void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);
void rope(Tensor& x, const Tensor& positions, double theta);
void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, Tensor& out);
void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out);
void add(Tensor& x, const Tensor& y);

}  // namespace dlx::cpu
