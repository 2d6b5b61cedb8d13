#include "quant/host_ops.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/thread_pool.h"

namespace dlx {

namespace {

// Elements per parallel chunk: large enough that the pool's overhead vanishes, small enough to spread a 50 MB
// tensor over 16 threads.
constexpr int64_t kGrain = 1 << 18;

constexpr size_t kHugePage = size_t(2) << 20;  // x86-64 and arm64 (4 KB base pages) transparent huge pages
constexpr size_t kHugeMin = size_t(8) << 20;   // smaller buffers: the heap (faults are few, memory is reused)

}  // namespace

Tensor backend_uninit(Backend& be, DType dtype, Shape shape) {
  return be.device() == Device::CPU ? host_uninit(dtype, std::move(shape)) : be.empty(dtype, std::move(shape));
}

Tensor host_uninit(DType dtype, Shape shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    check(d >= 0, "negative dimension in shape {}", shape_str(shape));
    n *= d;
  }
  const size_t bytes = size_t(n) * dtype_size(dtype);
  if (bytes >= kHugeMin) {
    // Large buffers come straight from the kernel, marked for transparent huge pages (host_ops.h says why). The
    // length is a whole number of huge pages (recent kernels then align the mapping to one; elsewhere the partial
    // huge pages at its ends stay small). Without THP, or with it off, the advice changes nothing.
    const size_t len = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* m = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("out of memory allocating a tensor of {} bytes: {}", bytes, std::strerror(errno));
    ::madvise(m, len, MADV_HUGEPAGE);
    std::shared_ptr<void> owner(m, [len](void* q) { ::munmap(q, len); });
    return Tensor(dtype, std::move(shape), m, std::move(owner));
  }
  // As Tensor::zeros: a whole number of 64-byte lines, at least one, so data() is never null.
  const size_t alloc = (bytes + 63) / 64 * 64 + 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) fail("out of memory allocating a tensor of {} bytes", bytes);
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return Tensor(dtype, std::move(shape), p, std::move(owner));
}

void advise_huge_pages(void* p, size_t bytes) {
  if (bytes < kHugeMin) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) / kHugePage * kHugePage;
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) / kHugePage * kHugePage;
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);
}

Tensor host_copy(const Tensor& t) {
  check(t.device() == Device::CPU, "host_copy: the tensor is not in host memory");
  Tensor out = host_uninit(t.dtype(), t.shape());
  const char* src = static_cast<const char*>(t.data());
  char* dst = out.data<char>();
  const int64_t bytes = int64_t(t.nbytes());
  parallel_for(bytes, kGrain * 4, [&](int64_t b0, int64_t b1) { std::memcpy(dst + b0, src + b0, size_t(b1 - b0)); });
  return out;
}

Tensor host_to_f32(const Tensor& t) {
  check(t.device() == Device::CPU, "host_to_f32: the tensor is not in host memory");
  check(is_float(t.dtype()), "host_to_f32: dtype {} is not a float type", dtype_name(t.dtype()));
  if (t.dtype() == DType::F32) return host_copy(t);
  Tensor out = host_uninit(DType::F32, t.shape());
  float* o = out.data<float>();
  const void* src = t.data();
  const DType dt = t.dtype();
  parallel_for(t.numel(), kGrain, [&](int64_t i0, int64_t i1) {
    // One loop per dtype (load_as_f32's cases) so that the conversion is not behind a switch per element.
    switch (dt) {
      case DType::BF16: {
        const uint16_t* p = static_cast<const uint16_t*>(src);
        for (int64_t i = i0; i < i1; ++i) o[i] = bf16_to_f32(p[i]);
        break;
      }
      case DType::F16: {
        const uint16_t* p = static_cast<const uint16_t*>(src);
        for (int64_t i = i0; i < i1; ++i) o[i] = f16_to_f32(p[i]);
        break;
      }
      default:
        for (int64_t i = i0; i < i1; ++i) o[i] = load_as_f32(src, dt, size_t(i));
        break;
    }
  });
  return out;
}

Tensor host_view(DType dtype, Shape shape, const void* data) {
  return Tensor(dtype, std::move(shape), const_cast<void*>(data), nullptr);
}

}  // namespace dlx
