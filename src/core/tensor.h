// Tensor: a contiguous, row-major block of elements of one dtype with a shape, on one device.
// Storage is shared and type-erased: an owned heap buffer, a view into an mmap'd safetensors file (the
// weights), or device memory owned by a backend. Copying a Tensor copies the handle, not the data.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace dlx {

enum class Device : uint8_t { CPU, CUDA };

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"

class Tensor {
 public:
  Tensor() = default;
  // A view of memory kept alive by `owner`.
  Tensor(DType dtype, Shape shape, void* data, std::shared_ptr<void> owner, Device device = Device::CPU);

  // A new zero-filled CPU tensor.
  static Tensor zeros(DType dtype, Shape shape);
  // A CPU tensor holding a copy of `n` elements of `src`.
  static Tensor from_data(DType dtype, Shape shape, const void* src);
  // A new CPU tensor with the parts' rows one after another (CPU tensors of one dtype and the same trailing dims).
  static Tensor stack_rows(const std::vector<Tensor>& parts);

  bool defined() const { return data_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int rank() const { return int(shape_.size()); }
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

  void* data() const { return data_; }
  template <typename T>
  T* data() const { return static_cast<T*>(data_); }

  // Same storage, new shape with the same element count.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) along the first dimension, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;

 private:
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  Shape shape_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

}  // namespace dlx
