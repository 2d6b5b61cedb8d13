// Device memory for the CUDA backend.
//  - Activations come from a caching allocator: a freed block goes to a free list keyed by its rounded size and
//    is handed out again to the next request of that size class, so repeated forwards of the same shape do no
//    cudaMalloc/cudaFree (both synchronize the device). All work runs on the backend's one stream, so a block
//    released while queued kernels still use it is only reused by work queued after them.
//  - Weights are exact-size cudaMalloc blocks held for the model's life.
//  - Page-locked host blocks (for device-to-host copies at full PCIe speed) are cached the same way, up to
//    kPinnedCacheBytes; the tensors that to_host_f32 returns live in them.
// On an out-of-memory error the cache is emptied and the allocation retried once.
//  - Graph capture (CUDA graphs): between begin_graph_pool and end_graph_pool every activation block comes from
//    and, when freed, returns to a GraphPool of the graph's own, also after the capture: a replay writes the blocks
//    its kernels were captured with, so no eager op may ever be handed one of them while the graph lives. Blocks
//    freed during the capture are reused by later ops of the same capture (stream order, as eagerly). When the
//    pool is dropped (the graph and every tensor in its blocks gone) its blocks join the shared free lists.
#pragma once
#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace dlx::cuda {

struct AllocatorStats {
  size_t weight_bytes = 0;      // live weight blocks
  size_t active_bytes = 0;      // activation blocks handed out (rounded sizes)
  size_t cached_bytes = 0;      // activation blocks in the free lists
  size_t peak_active_bytes = 0;
  size_t device_mallocs = 0;    // cudaMalloc calls made for activations
  size_t pinned_bytes = 0;      // page-locked host blocks handed out
  size_t pinned_cached_bytes = 0;
};

constexpr size_t kPinnedCacheBytes = size_t(2) << 30;

class DeviceAllocator;

class GraphPool {
 public:
  explicit GraphPool(std::shared_ptr<DeviceAllocator> owner) : owner_(std::move(owner)) {}
  ~GraphPool();
  GraphPool(const GraphPool&) = delete;
  GraphPool& operator=(const GraphPool&) = delete;

 private:
  friend class DeviceAllocator;
  std::shared_ptr<DeviceAllocator> owner_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // guarded by the owner's mutex
  std::vector<std::pair<void*, size_t>> blocks_;          // every block the pool took (rounded sizes)
};

class DeviceAllocator : public std::enable_shared_from_this<DeviceAllocator> {
 public:
  DeviceAllocator() = default;
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // An activation block of at least `bytes`; the shared_ptr returns it to the cache when the last user drops it.
  std::shared_ptr<void> activation(size_t bytes, const char* op);
  // A weight block of exactly `bytes`, freed when the last user drops it.
  std::shared_ptr<void> weight(size_t bytes, const char* op);
  // A page-locked host block of at least `bytes`, returned to its cache when the last user drops it.
  std::shared_ptr<void> pinned(size_t bytes, const char* op);
  // Activation blocks come from a new pool until end_graph_pool (see above); one pool at a time.
  std::shared_ptr<GraphPool> begin_graph_pool();
  void end_graph_pool();
  // Frees every cached (unused) activation block (not those of graph pools).
  void empty_cache();
  AllocatorStats stats() const;
  void reset_peak();

  static size_t round_size(size_t bytes);

 private:
  void* device_malloc(size_t bytes, const char* op);
  void release_activation(void* p, size_t rounded);
  void release_to_pool(GraphPool& pool, void* p, size_t rounded);
  friend class GraphPool;
  void release_weight(void* p, size_t bytes);
  void release_pinned(void* p, size_t rounded);

  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::unordered_map<size_t, std::vector<void*>> pinned_free_;
  AllocatorStats stats_;
  std::shared_ptr<GraphPool> graph_pool_;  // set during a capture
};

}  // namespace dlx::cuda
