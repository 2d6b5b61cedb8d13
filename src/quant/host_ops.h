// Bulk host-side tensor operations of the quantizer, split over the thread pool (core/thread_pool.h). A layer of
// a 7B model has ~233M weights, so a plain loop over them (a dtype conversion, a copy, even the memset behind
// Tensor::zeros) costs about a second on one core; these run them on every core, writing each output element
// once (first touch happens on the thread that fills the part, not in a serial memset).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/tensor.h"
#include "kernels/backend.h"

namespace dlx {

// A new CPU tensor whose contents are undefined (64-byte aligned, like Tensor::zeros): for outputs the caller
// writes completely. Large ones are backed by transparent huge pages where the kernel allows them: a fresh
// buffer is faulted in when first written, and with 4 KB pages that is 250K page faults per GB, which cost more
// than the work that fills it (on a 2-core VM converting a Dream-7B layer's weights to F32 took 2.8 s with 4 KB
// pages and 0.25 s with huge pages).
Tensor host_uninit(DType dtype, Shape shape);

// be.empty(dtype, shape) for an output the caller's ops write completely: on a CPU backend host_uninit (its
// empty() zero-fills on one thread), elsewhere be.empty.
Tensor backend_uninit(Backend& be, DType dtype, Shape shape);

// Asks for transparent huge pages over the whole 2 MB pages inside [p, p + bytes) of a buffer that has not been
// written yet (e.g. a std::vector after reserve()). A hint: without THP nothing changes.
void advise_huge_pages(void* p, size_t bytes);

// A private CPU copy of a CPU tensor, copied in parallel.
Tensor host_copy(const Tensor& t);

// A CPU float tensor (F32, F16, BF16, F8_E4M3) as a new F32 tensor of the same shape; the values are those of
// load_as_f32 (core/dtype.h).
Tensor host_to_f32(const Tensor& t);

// A CPU tensor viewing `data` without owning it (the caller keeps `data` alive): lets a host buffer go to a
// backend call that takes a Tensor without copying it first.
Tensor host_view(DType dtype, Shape shape, const void* data);

}  // namespace dlx
