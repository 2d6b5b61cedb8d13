// The CUDA backend (built when DIFFULEX_HAVE_CUDA is defined; see docs/CUDA.md).
//
// Memory: weights are uploaded once as stored (bf16 and f32 as is, fp16 converted to bf16 because the GEMMs
// take bf16; packed low-bit tensors as is) and activations are bf16 buffers from a caching allocator. Every op is
// enqueued on the backend's one stream; only the host copies (to_host_f32) wait for it. The small host inputs of
// the interface (token ids, positions, the key mask) are copied to the device by the op that needs them and kept
// there while they stay the same, so the per-layer rope and attention calls of one forward copy them once.
//
// This header needs no CUDA headers: the tests, the bench and make_backend use it in any build, and call these
// functions only when DIFFULEX_HAVE_CUDA is defined.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace dlx {

// Whether a CUDA device can be used; when not, `why` says what is missing (no device, no driver, ...).
bool cuda_available(std::string* why = nullptr);

// The backend on device 0 (CUDA_VISIBLE_DEVICES chooses). Throws Error when no device is usable.
std::unique_ptr<Backend> make_cuda_backend();

struct CudaMemoryStats {
  size_t weight_bytes = 0;            // uploaded weights (and the GEMM workspace)
  size_t activation_bytes = 0;        // activation buffers in use now
  size_t activation_peak_bytes = 0;   // most ever in use at once
  size_t activation_cached_bytes = 0; // freed buffers kept for reuse
  size_t device_used_bytes = 0;       // whole device, from cudaMemGetInfo (other processes included)
  size_t device_total_bytes = 0;
};
// `be` must be a CUDA backend.
CudaMemoryStats cuda_memory_stats(Backend& be);
// The W4A16 matmul path: "auto" (default; DIFFULEX_W4A16_PATH overrides), "mma" (the mma.sync kernel,
// src/kernels/cuda/w4a16_mma.cu), "wgmma" (the Hopper kernel, w4a16_wgmma.cu), "wgmma_narrow" (its 128-feature
// blocks for M > 32; the same as "wgmma" below), "wgmma_tall" (its 256-token x 128-feature tiles, at any M),
// "wgmma_deep" (its 8-32-token tiles with about twice the stages, M <= 32; the same as "wgmma" above), "wgmma_fit"
// (136-176-token tiles that M fills nearly whole, M > 256; the same as "wgmma" below) or
// "dequant" (transient bf16 weight + cuBLASLt).
void cuda_set_w4a16_path(Backend& be, const std::string& mode);
// Split-K of the W4A16 kernels: 0 (default) the planners' choice, > 0 that many (at most one per k step of 64);
// a measurement knob. And the split count the wgmma planner chooses for its widest tile at [M] x [N, K].
void cuda_set_w4a16_splits(Backend& be, int splits);
int cuda_w4a16_wgmma_planned_splits(int64_t M, int64_t N, int64_t K, int64_t group_size);
// The path "auto" chose for a W4A16 weight [N, K] at M rows (one of the above; "" before its first call), and the
// split-K count it chose for a wgmma path (0: the planner's; see cuda_set_w4a16_tune_splits).
std::string cuda_w4a16_choice(const Backend& be, int64_t N, int64_t K, int64_t group_size, int64_t M);
int cuda_w4a16_choice_splits(const Backend& be, int64_t N, int64_t K, int64_t group_size, int64_t M);
// The split-K count the backend's last wgmma W4A16 launch ran with (1: unsplit; 0 before any), for the tests.
int cuda_w4a16_last_wgmma_splits(const Backend& be);
// Every choice "auto" made so far: weight [N, K], group size, M bucket (the tuner's key, src/kernels/cuda/tuner_key.h),
// path, split-K count (0: the planner's).
struct W4A16Choice {
  int64_t N, K, group_size, m_bucket;
  std::string path;
  int splits = 0;
};
// Whether "auto" also times split-K counts of the chosen wgmma tile up to 64 rows (1, 2, 3, 4, 6, 8, 12 beside the
// planner's; process-wide): default on (a Dream-7B B = 1 decode step 3.70 -> 3.56 ms on the H100, docs/PERFORMANCE.md
// session 17); DIFFULEX_W4A16_TUNE_SPLITS=0 turns it off.
void cuda_set_w4a16_tune_splits(bool on);
bool cuda_w4a16_tune_splits();
std::vector<W4A16Choice> cuda_w4a16_choices(const Backend& be);
// Whether this GPU and build run the Hopper wgmma W4A16 kernel (src/kernels/cuda/w4a16_wgmma.cu).
bool cuda_w4a16_wgmma_available();
// Whether that kernel loads weights and scale words by tensor copies instead of plain bulk copies (process-wide;
// default off, DIFFULEX_W4A16_TMA_WEIGHTS=1 turns it on; src/kernels/cuda/launch.h says why).
void cuda_set_w4a16_tma_weights(bool on);
bool cuda_w4a16_tma_weights();
// Whether the fused [gate; up] W4A16 GEMM runs SwiGLU in the wgmma kernel's epilogue (Backend::matmul_packed_swiglu;
// process-wide): default on (a Dream-7B B = 32 decode step 23.9 -> 22.9 ms on the H100, docs/PERFORMANCE.md session
// 17; tests/kernels/cuda/w4a16_test.cc `W4A16.Swiglu*`); DIFFULEX_W4A16_SWIGLU=0 turns it off: the product and
// silu_mul_fused then run as two ops.
void cuda_set_w4a16_swiglu(bool on);
bool cuda_w4a16_swiglu();
// Split-KV attention for short query windows (src/kernels/cuda/launch.h; process-wide): -1 the rule, 0 or 1 never
// (default; DIFFULEX_ATTENTION_SPLIT_KV=1 turns the rule on), n >= 2 that many splits wherever there are two key
// tiles. And the split count attention takes at a shape (1: unsplit).
void cuda_set_attention_split_kv(int mode);
int cuda_attention_split_kv_mode();
int cuda_attention_kv_splits(int64_t B, int64_t Lq, int64_t S, int64_t Hq, int64_t D, int64_t block, int64_t q_offset);
// Starts a new activation peak measurement (the peak becomes what is in use now).
void cuda_reset_peak(Backend& be);
// Waits for every op enqueued so far.
void cuda_synchronize(Backend& be);

// Times a sequence of ops on the backend's stream with device events: mark() before, between and after the ops,
// then intervals_ms() waits and returns the time between consecutive marks.
class CudaEventTimer {
 public:
  explicit CudaEventTimer(Backend& be);
  ~CudaEventTimer();
  void mark();
  std::vector<double> intervals_ms();
  void clear();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The device time of one call(i) as it runs inside a CUDA graph: call(0) .. call(calls - 1) are captured back to
// back into one graph (Backend::capture) that is replayed `reps` times after a warm-up replay; the result is the
// median replay time divided by `calls`. The host's launch time is not counted, as in a graph-captured decode step;
// calls timed eagerly one by one between events count it whenever a kernel is shorter than its launch. Where the
// calls cannot be captured (DIFFULEX_CUDA_SYNC=1, a call that synchronizes) they are timed eagerly instead, each
// between two events (median of calls x reps), and *graphed, if given, is set to false. Lazy per-shape choices
// (the GEMM and W4A16 tuners) must have been made by an eager call before, since they synchronize. Must not be
// called while the backend's stream is being captured.
double cuda_graph_time_ms(Backend& be, const std::function<void(int)>& call, int calls, int reps,
                          bool* graphed = nullptr);
// Measured ceilings of the device, for the bench: a device-to-device copy of `bytes` (GB/s counting bytes read
// plus written) and an n x n x n bf16 GEMM through the backend's cuBLASLt path on random data (TFLOP/s). Each is
// the median of `reps` timed runs after a warm-up.
double cuda_measure_copy_gbps(Backend& be, size_t bytes, int reps);
double cuda_measure_bf16_tflops(Backend& be, int64_t n, int reps);

// A device tensor of `dtype` (BF16 or F32) filled with approximately normal(mean, std) values from a counter-based
// hash of (seed, index): random weights at real model sizes without a host copy.
Tensor cuda_random_tensor(Backend& be, DType dtype, Shape shape, uint64_t seed, float mean, float std);

}  // namespace dlx
