// A fixed pool of worker threads and parallel_for over an index range. One global pool sized to the
// machine (DIFFULEX_THREADS overrides); kernels split their outer loop into contiguous chunks.
#pragma once
#include <cstdint>
#include <functional>

namespace dlx {

int num_threads();
void set_num_threads(int n);  // takes effect for later parallel_for calls

// Calls fn(begin, end) on disjoint chunks covering [0, n), in parallel; returns when all are done.
// Chunks hold at least `grain` indices. Nested calls run serially in the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace dlx
