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

Tensor Tensor::zeros(DType dtype, Shape shape) {
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
  std::memset(p, 0, alloc);
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return Tensor(dtype, std::move(shape), p, std::move(owner));
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
