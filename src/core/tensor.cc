#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace dlx {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

Tensor::Tensor(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner, Device device)
    : dtype_(dtype), device_(device), shape_(std::move(shape)), data_(data), owner_(std::move(owner)) {}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

namespace {

// A new CPU tensor, zero-filled or (for callers that write every byte) left as allocated.
Tensor allocate_cpu(DType dtype, Shape shape, bool zero) {
  int64_t n = 1;
  for (int64_t d : shape) {
    check(d >= 0, "negative dimension in shape {}", shape_str(shape));
    n *= d;
  }
  size_t bytes = size_t(n) * dtype_size(dtype);
  // 64-byte alignment for vector loads; at least one byte so data() is never null.
  size_t alloc = (bytes + 63) / 64 * 64 + 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) fail("out of memory allocating a tensor of {} bytes", bytes);
  if (zero) std::memset(p, 0, alloc);
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return Tensor(dtype, std::move(shape), p, std::move(owner));
}

}  // namespace

Tensor Tensor::zeros(DType dtype, Shape shape) { return allocate_cpu(dtype, std::move(shape), true); }

Tensor Tensor::stack_rows(const std::vector<Tensor>& parts) {
  check(!parts.empty(), "stack_rows: no tensors");
  Shape shape = parts[0].shape();
  check(!shape.empty(), "stack_rows: a scalar has no rows");
  shape[0] = 0;
  for (const Tensor& t : parts) {
    Shape rest = t.shape();
    check(t.device() == Device::CPU && t.dtype() == parts[0].dtype() && !rest.empty(),
          "stack_rows: parts must be CPU tensors of one dtype ({} {} vs {})", dtype_name(t.dtype()),
          shape_str(t.shape()), dtype_name(parts[0].dtype()));
    shape[0] += rest[0];
    rest[0] = parts[0].dim(0);
    check(rest == parts[0].shape(), "stack_rows: {} and {} differ past the first dimension", shape_str(t.shape()),
          shape_str(parts[0].shape()));
  }
  Tensor out = allocate_cpu(parts[0].dtype(), std::move(shape), false);
  char* dst = out.data<char>();
  for (const Tensor& t : parts) {
    std::memcpy(dst, t.data(), t.nbytes());
    dst += t.nbytes();
  }
  return out;
}

Tensor Tensor::from_data(DType dtype, Shape shape, const void* src) {
  Tensor t = zeros(dtype, std::move(shape));
  std::memcpy(t.data(), src, t.nbytes());
  return t;
}

Tensor Tensor::reshape(Shape shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  check(t.numel() == numel(), "cannot reshape {} to {}", shape_str(shape_), shape_str(t.shape_));
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  check(rank() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice [{}, {}) out of range for {}", begin,
        end, shape_str(shape_));
  Tensor t = *this;
  int64_t row = numel() / (shape_[0] ? shape_[0] : 1);
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + size_t(begin * row) * dtype_size(dtype_);
  return t;
}

}  // namespace dlx
