#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/allocator.h"

#include <cuda_runtime_api.h>

#include "core/error.h"
#include "kernels/cuda/cuda_check.h"

namespace dlx::cuda {

DeviceAllocator::~DeviceAllocator() {
  empty_cache();
  for (auto& [size, blocks] : pinned_free_)
    for (void* p : blocks) (void)cudaFreeHost(p);
}

// 512-byte granules up to 1 MiB, then 2 MiB granules: few size classes for the activations of one model, and
// every block 256-byte aligned (cuBLASLt and the 16-byte vector loads rely on it).
size_t DeviceAllocator::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  const size_t g = bytes <= (size_t(1) << 20) ? 512 : (size_t(2) << 20);
  return (bytes + g - 1) / g * g;
}

void* DeviceAllocator::device_malloc(size_t bytes, const char* op) {
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear it, free the cache and try once more
    empty_cache();
    e = cudaMalloc(&p, bytes);
  }
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    fail("cuda {}: out of device memory allocating {} bytes ({} of {} bytes free)", op, bytes, free_b, total_b);
  }
  check_cuda(e, op);
  return p;
}

std::shared_ptr<void> DeviceAllocator::activation(size_t bytes, const char* op) {
  const size_t rounded = round_size(bytes);
  void* p = nullptr;
  std::shared_ptr<GraphPool> pool;
  auto take = [&](std::unordered_map<size_t, std::vector<void*>>& lists) {
    auto it = lists.find(rounded);
    if (it == lists.end() || it->second.empty()) return false;
    p = it->second.back();
    it->second.pop_back();
    stats_.cached_bytes -= rounded;
    return true;
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    pool = graph_pool_;
    // A capture takes its pool's free blocks first; a block from the shared lists becomes the pool's.
    if (!(pool && take(pool->free_)) && take(free_) && pool) pool->blocks_.emplace_back(p, rounded);
  }
  if (!p) {
    p = device_malloc(rounded, op);
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.device_mallocs;
    if (pool) pool->blocks_.emplace_back(p, rounded);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.active_bytes += rounded;
    if (stats_.active_bytes > stats_.peak_active_bytes) stats_.peak_active_bytes = stats_.active_bytes;
  }
  auto self = shared_from_this();
  if (pool)
    return std::shared_ptr<void>(p, [self, pool, rounded](void* q) { self->release_to_pool(*pool, q, rounded); });
  return std::shared_ptr<void>(p, [self, rounded](void* q) { self->release_activation(q, rounded); });
}

std::shared_ptr<GraphPool> DeviceAllocator::begin_graph_pool() {
  auto pool = std::make_shared<GraphPool>(shared_from_this());
  std::lock_guard<std::mutex> lock(mu_);
  check(!graph_pool_, "cuda: a graph capture is already in progress");
  graph_pool_ = pool;
  return pool;
}

void DeviceAllocator::end_graph_pool() {
  std::lock_guard<std::mutex> lock(mu_);
  graph_pool_.reset();
}

void DeviceAllocator::release_to_pool(GraphPool& pool, void* p, size_t rounded) {
  std::lock_guard<std::mutex> lock(mu_);
  pool.free_[rounded].push_back(p);
  stats_.active_bytes -= rounded;
  stats_.cached_bytes += rounded;
}

// Every block of the pool is free by now (each handed-out block's deleter holds the pool): they join the shared
// free lists (already counted as cached).
GraphPool::~GraphPool() {
  std::lock_guard<std::mutex> lock(owner_->mu_);
  for (const auto& [p, size] : blocks_) owner_->free_[size].push_back(p);
}

std::shared_ptr<void> DeviceAllocator::weight(size_t bytes, const char* op) {
  if (bytes == 0) bytes = 1;
  void* p = device_malloc(bytes, op);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.weight_bytes += bytes;
  }
  auto self = shared_from_this();
  return std::shared_ptr<void>(p, [self, bytes](void* q) { self->release_weight(q, bytes); });
}

std::shared_ptr<void> DeviceAllocator::pinned(size_t bytes, const char* op) {
  const size_t rounded = round_size(bytes);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pinned_free_.find(rounded);
    if (it != pinned_free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.pinned_cached_bytes -= rounded;
    }
  }
  if (!p) check_cuda(cudaMallocHost(&p, rounded), op);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.pinned_bytes += rounded;
  }
  auto self = shared_from_this();
  return std::shared_ptr<void>(p, [self, rounded](void* q) { self->release_pinned(q, rounded); });
}

void DeviceAllocator::release_pinned(void* p, size_t rounded) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.pinned_bytes -= rounded;
  if (stats_.pinned_cached_bytes + rounded > kPinnedCacheBytes) {
    (void)cudaFreeHost(p);
    return;
  }
  pinned_free_[rounded].push_back(p);
  stats_.pinned_cached_bytes += rounded;
}

void DeviceAllocator::release_activation(void* p, size_t rounded) {
  std::lock_guard<std::mutex> lock(mu_);
  free_[rounded].push_back(p);
  stats_.active_bytes -= rounded;
  stats_.cached_bytes += rounded;
}

void DeviceAllocator::release_weight(void* p, size_t bytes) {
  (void)cudaFree(p);  // never throws from a deleter; a failing free is reported by the next checked call
  std::lock_guard<std::mutex> lock(mu_);
  stats_.weight_bytes -= bytes;
}

void DeviceAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) (void)cudaFree(p);
    stats_.cached_bytes -= size * blocks.size();
    blocks.clear();
  }
  free_.clear();
}

void DeviceAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_active_bytes = stats_.active_bytes;
}

AllocatorStats DeviceAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace dlx::cuda
#endif  // DIFFULEX_HAVE_CUDA
