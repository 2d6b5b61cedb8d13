// PackedWeight: the one in-memory layout every quantized linear kind (GPTQ, AWQ, ...) is converted into at
// load time, so that each backend has a single low-bit matmul kernel to write.
//
//   qweight  I32 [N, K*bits/32]   row n holds W[n, k] for k ascending; word j of row n packs the
//                                  32/bits values k = j*(32/bits) + i at bits [bits*i, bits*i + bits)
//                                  (low bits = lower k); values are unsigned 0 .. 2^bits-1
//   scales   F32 [N, G]           per output row and group
//   zeros    F32 [N, G]           scale * zero point, pre-multiplied:  W[n, k] = s*q - zs  (g = k / group_size)
//   perm     I32 [K] or undefined act-order: the kernel's column j is the checkpoint's input column perm[j],
//                                  i.e. the kernel computes y = x[:, perm] · Wp^T; rows were reordered at load
//                                  so that groups are contiguous in k
//
// K must be a multiple of 32/bits and of group_size; group_size == K means one group (GPTQ's -1).
//
// Backend layouts: Backend::upload_packed may convert the weight once at load into its own kernel layout and mark it
// with `layout` (kCanonicalLayout = the tensors above). Only the backend that made such a weight reads it.
//   kW4A16TileLayout (CUDA, 4 bits; src/kernels/cuda/w4a16_mma.cu):  qweight I32 tiles in mma fragment order,
//                  scales I32 [G, N rounded up to 16] (bf16 scale | bf16 128+zero point << 16), zeros undefined,
//                  perm as above.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace dlx {

constexpr int kCanonicalLayout = 0;
constexpr int kW4A16TileLayout = 1;

struct PackedWeight {
  int bits = 4;
  int64_t n = 0, k = 0;
  int64_t group_size = 0;
  Tensor qweight, scales, zeros, perm;
  int layout = 0;  // kCanonicalLayout or a backend's layout (above)

  int64_t groups() const { return group_size ? k / group_size : 0; }
  int64_t words_per_row() const { return k * bits / 32; }
  size_t nbytes() const {
    return qweight.nbytes() + scales.nbytes() + (zeros.defined() ? zeros.nbytes() : 0) +
           (perm.defined() ? perm.nbytes() : 0);
  }
};

}  // namespace dlx
