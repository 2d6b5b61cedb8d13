// The CUDA backend: shape/dtype checks on the host, then the kernels of launch.h or cuBLASLt (gemm.h) on one
// stream. See cuda_backend.h for the memory rules and docs/CUDA.md for how it is built and tested.
#ifdef DIFFULEX_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "core/error.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/thread_pool.h"
#include "kernels/cuda/allocator.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/layer_fusion.h"
#include "kernels/cuda/linalg.h"
#include "kernels/cuda/sample_rows.h"
#include "kernels/cuda/tuner_key.h"

namespace dlx {

namespace {

using cuda::bf16_t;
using cuda::check_cuda;
using cuda::Elt;

const char* device_name(Device d) { return d == Device::CUDA ? "the GPU" : "the host"; }

// Fails unless t is a `dtype` tensor on the GPU.
void need(const Tensor& t, DType dtype, const char* op, const char* what) {
  check(t.defined(), "cuda {}: {} is missing", op, what);
  check(t.device() == Device::CUDA && t.dtype() == dtype, "cuda {}: {} must be a {} tensor on the GPU, got {} on {}",
        op, what, dtype_name(dtype), dtype_name(t.dtype()), device_name(t.device()));
}

// A float weight on the GPU read elementwise by a kernel.
Elt float_weight(const Tensor& t, const char* op, const char* what) {
  check(t.defined() && t.device() == Device::CUDA, "cuda {}: {} must be on the GPU (uploaded)", op, what);
  switch (t.dtype()) {
    case DType::BF16: return Elt::BF16;
    case DType::F16: return Elt::F16;
    case DType::F32: return Elt::F32;
    default: fail("cuda {}: {} has dtype {}, expected BF16, F16 or F32", op, what, dtype_name(t.dtype()));
  }
}

void same_numel(const Tensor& a, const Tensor& b, const char* op) {
  check(a.numel() == b.numel(), "cuda {}: shapes {} and {} differ in size", op, shape_str(a.shape()),
        shape_str(b.shape()));
}

// An environment switch: unset or empty gives `fallback`, "0" off, anything else on.
bool env_flag(const char* name, bool fallback = false) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return std::strcmp(v, "0") != 0;
}

// cuda_set_w4a16_swiglu (cuda_backend.h): the wgmma kernel's SwiGLU epilogue; on unless DIFFULEX_W4A16_SWIGLU=0.
bool& w4a16_swiglu_flag() {
  static bool on = env_flag("DIFFULEX_W4A16_SWIGLU", true);
  return on;
}
// cuda_set_w4a16_tune_splits (cuda_backend.h): the tuner also times split-K counts; on unless
// DIFFULEX_W4A16_TUNE_SPLITS=0.
bool& w4a16_tune_splits_flag() {
  static bool on = env_flag("DIFFULEX_W4A16_TUNE_SPLITS", true);
  return on;
}

// A small host input (token ids, positions, key mask) mirrored on the device. The copy is redone only when the
// bytes change; it is enqueued on the backend's stream, so kernels queued earlier still read the old contents.
class HostMirror {
 public:
  const void* get(const void* host, size_t bytes, cuda::DeviceAllocator& alloc, cudaStream_t stream, const char* op) {
    if (dev_ && bytes == last_.size() && std::memcmp(host, last_.data(), bytes) == 0) return dev_.get();
    if (!dev_ || bytes > capacity_) {
      dev_ = alloc.activation(bytes, op);
      capacity_ = cuda::DeviceAllocator::round_size(bytes);
    }
    last_.assign(static_cast<const unsigned char*>(host), static_cast<const unsigned char*>(host) + bytes);
    // From pageable memory the copy is staged before the call returns, so `host` may change afterwards.
    check_cuda(cudaMemcpyAsync(dev_.get(), host, bytes, cudaMemcpyHostToDevice, stream), op);
    return dev_.get();
  }

 private:
  std::vector<unsigned char> last_;
  std::shared_ptr<void> dev_;
  size_t capacity_ = 0;
};

// An instantiated graph and the activation pool its buffers live in (released after the graph).
class CudaGraph final : public Backend::Graph {
 public:
  CudaGraph(cudaGraphExec_t exec, cudaStream_t stream, std::shared_ptr<cuda::GraphPool> pool)
      : exec_(exec), stream_(stream), pool_(std::move(pool)) {}
  ~CudaGraph() override { (void)cudaGraphExecDestroy(exec_); }
  void replay() override { check_cuda(cudaGraphLaunch(exec_, stream_), "graph replay"); }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
  std::shared_ptr<cuda::GraphPool> pool_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    check_cuda(cudaSetDevice(0), "device selection");
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, 0), "device query");
    name_ = fmt::format("cuda ({}, sm_{}{})", prop.name, prop.major, prop.minor);
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream creation");
    alloc_ = std::make_shared<cuda::DeviceAllocator>();
    gemm_ = std::make_unique<cuda::Gemm>(stream_, *alloc_);
    linalg_ = std::make_unique<cuda::DenseLinalg>(stream_, *alloc_);
    sync_each_op_ = env_flag("DIFFULEX_CUDA_SYNC");
  }

  ~CudaBackend() override {
    (void)cudaStreamSynchronize(stream_);
    inv_freq_.clear();
    gemm_.reset();
    linalg_.reset();
    (void)cudaStreamDestroy(stream_);
  }

  Device device() const override { return Device::CUDA; }
  std::string name() const override { return name_; }
  DType act_dtype() const override { return DType::BF16; }

  MemoryInfo device_memory() override {
    size_t free_b = 0, total_b = 0;
    check_cuda(cudaMemGetInfo(&free_b, &total_b), "memory query");
    return {free_b, total_b};
  }

  Fusion fusion() const override {
    // Every fusion is on unless its variable is "0".
    auto on = [](const char* var) {
      const char* v = std::getenv(var);
      return !(v && std::strcmp(v, "0") == 0);
    };
    Fusion f;
    // The dense bf16 gate and up weights of a layer become one weight (one GEMM of twice the width fills the SMs
    // better at diffusion's M of a few hundred tokens); DIFFULEX_FUSE_GATE_UP=0 keeps them apart.
    f.gate_up = on("DIFFULEX_FUSE_GATE_UP");
    // Likewise q, k and v (one GEMM of width Nq + 2 Nkv; DIFFULEX_FUSE_QKV=0 keeps them apart): on the H100 the
    // GEMM gets faster (Dream-7B B=1: 1.27 -> 0.71 ms), and one kernel (qkv_rope) splits its output and applies
    // RoPE in place of the two separate rotations (docs/PERFORMANCE.md).
    f.qkv = on("DIFFULEX_FUSE_QKV");
    // Packed q/k/v and gate/up linears run as one packed matmul each; DIFFULEX_FUSE_PACKED=0 keeps them apart.
    f.packed = on("DIFFULEX_FUSE_PACKED");
    return f;
  }
  cudaStream_t stream() const { return stream_; }
  cuda::DeviceAllocator& allocator() { return *alloc_; }
  cuda::Gemm& gemm() { return *gemm_; }

  Tensor empty(DType dtype, Shape shape) override {
    int64_t n = 1;
    for (int64_t d : shape) {
      check(d >= 0, "cuda empty: negative dimension in shape {}", shape_str(shape));
      n *= d;
    }
    auto block = alloc_->activation(size_t(n) * dtype_size(dtype), "empty");
    void* p = block.get();
    return Tensor(dtype, std::move(shape), p, std::move(block), Device::CUDA);
  }

  Tensor upload(const Tensor& host) override {
    if (host.device() == Device::CUDA) return host;
    // fp16 weights become bf16: the GEMMs and kernels take bf16 (same range as f32, 8 mantissa bits).
    const DType dt = host.dtype() == DType::F16 ? DType::BF16 : host.dtype();
    auto block = alloc_->weight(host.nbytes(), "upload");
    // On the backend's stream, waited for before returning. A plain cudaMemcpy runs on the legacy default stream,
    // which the backend's non-blocking stream does not wait for, and from pageable memory it may return once the
    // bytes are staged, before they land: a kernel queued next on stream_ could read the block first (two GPU
    // quantizer runs of one model wrote different bytes, once in five on an H100: docs/QUANTIZER.md, "Reproducible
    // runs").
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(stream_, &capturing), "upload");
    check(capturing == cudaStreamCaptureStatusNone,
          "cuda upload: {} bytes during a CUDA graph capture (uploads belong before the capture: the eager pass)",
          host.nbytes());
    auto copy = [&](const void* src) {
      check_cuda(cudaMemcpyAsync(block.get(), src, host.nbytes(), cudaMemcpyHostToDevice, stream_), "upload");
      check_cuda(cudaStreamSynchronize(stream_), "upload");
    };
    if (dt != host.dtype()) {
      std::vector<uint16_t> tmp(size_t(host.numel()));
      const uint16_t* src = host.data<uint16_t>();
      parallel_for(host.numel(), 1 << 16, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) tmp[size_t(i)] = f32_to_bf16(f16_to_f32(src[i]));
      });
      copy(tmp.data());
    } else {
      copy(host.data());
    }
    void* p = block.get();
    return Tensor(dt, host.shape(), p, std::move(block), Device::CUDA);
  }

  // Device tensors come back through page-locked memory: bf16 is widened on the GPU and the f32 result is copied
  // straight into a pinned block that becomes the returned tensor's storage (no host conversion pass, no page
  // faults on a fresh buffer, full PCIe speed for the logits).
  Tensor to_host_f32(const Tensor& t) override {
    check(is_float(t.dtype()), "cuda to_host_f32: tensor has dtype {}, expected a float", dtype_name(t.dtype()));
    const int64_t n = t.numel();
    if (t.device() == Device::CPU) {
      if (t.dtype() == DType::F32) return t;
      Tensor out = Tensor::zeros(DType::F32, t.shape());
      float* o = out.data<float>();
      parallel_for(n, 1 << 16, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) o[i] = load_as_f32(t.data(), t.dtype(), size_t(i));
      });
      return out;
    }
    check(t.dtype() == DType::F32 || t.dtype() == DType::BF16, "cuda to_host_f32: device tensor has dtype {}",
          dtype_name(t.dtype()));
    auto block = alloc_->pinned(size_t(n) * 4, "to_host_f32");
    const void* src = t.data();
    Tensor wide;
    if (t.dtype() == DType::BF16) {
      wide = empty(DType::F32, {n});
      cuda::launch_bf16_to_f32(t.data<bf16_t>(), wide.data<float>(), n, stream_);
      src = wide.data();
    }
    check_cuda(cudaMemcpyAsync(block.get(), src, size_t(n) * 4, cudaMemcpyDeviceToHost, stream_), "to_host_f32");
    check_cuda(cudaStreamSynchronize(stream_), "to_host_f32");
    void* p = block.get();
    return Tensor(DType::F32, t.shape(), p, std::move(block), Device::CPU);
  }

  Tensor from_host_f32(const Tensor& host) override {
    check(host.device() == Device::CPU && is_float(host.dtype()), "cuda from_host_f32: expected a float host tensor");
    std::vector<uint16_t> tmp(size_t(host.numel()));
    parallel_for(host.numel(), 1 << 16, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) tmp[size_t(i)] = f32_to_bf16(load_as_f32(host.data(), host.dtype(), size_t(i)));
    });
    Tensor out = empty(DType::BF16, host.shape());
    check_cuda(cudaMemcpyAsync(out.data(), tmp.data(), out.nbytes(), cudaMemcpyHostToDevice, stream_),
               "from_host_f32");
    after("from_host_f32");
    return out;
  }

  void embedding(const Tensor& ids, const Tensor& table, Tensor& out) override {
    check(ids.dtype() == DType::I64, "cuda embedding: ids must be I64, got {}", dtype_name(ids.dtype()));
    check(table.defined() && is_float(table.dtype()), "cuda embedding: the table must be a float tensor");
    check(table.rank() == 2, "cuda embedding: table must be [vocab, hidden], got {}", shape_str(table.shape()));
    const int64_t T = ids.numel(), V = table.dim(0), H = table.dim(1);
    need(out, DType::BF16, "embedding", "the output");
    check(out.numel() == T * H, "cuda embedding: output {} should hold [{}, {}]", shape_str(out.shape()), T, H);
    if (table.device() == Device::CPU) {
      // A table kept in host memory (--embed-on-host): gather the T rows as bf16 on the host, copy them up.
      check(ids.device() == Device::CPU, "cuda embedding: a host table needs host ids");
      const int64_t* id = ids.data<int64_t>();
      for (int64_t t = 0; t < T; ++t)
        check(id[t] >= 0 && id[t] < V, "token id {} is outside the vocabulary [0, {})", id[t], V);
      std::vector<uint16_t> rows(size_t(T * H));
      parallel_for(T, 1, [&](int64_t a, int64_t b) {
        for (int64_t t = a; t < b; ++t) {
          uint16_t* dst = rows.data() + t * H;
          if (table.dtype() == DType::BF16) {
            std::memcpy(dst, table.data<uint16_t>() + id[t] * H, size_t(H) * 2);
          } else {
            for (int64_t h = 0; h < H; ++h)
              dst[h] = f32_to_bf16(load_as_f32(table.data(), table.dtype(), size_t(id[t] * H + h)));
          }
        }
      });
      // From pageable memory the copy is staged before the call returns.
      check_cuda(cudaMemcpyAsync(out.data(), rows.data(), rows.size() * 2, cudaMemcpyHostToDevice, stream_),
                 "embedding (host table)");
      after("embedding");
      return;
    }
    const Elt tt = float_weight(table, "embedding", "the table");
    const int64_t* dev_ids = ids.data<int64_t>();
    if (ids.device() == Device::CPU) {
      const int64_t* id = ids.data<int64_t>();
      for (int64_t t = 0; t < T; ++t)
        check(id[t] >= 0 && id[t] < V, "token id {} is outside the vocabulary [0, {})", id[t], V);
      dev_ids = static_cast<const int64_t*>(ids_.get(id, size_t(T) * 8, *alloc_, stream_, "embedding (ids)"));
    }
    cuda::launch_embedding(dev_ids, table.data(), tt, T, H, out.data<bf16_t>(), stream_);
    after("embedding");
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) override {
    need(x, DType::BF16, "rmsnorm", "the input");
    need(out, DType::BF16, "rmsnorm", "the output");
    same_numel(x, out, "rmsnorm");
    const int64_t H = x.dim(-1), T = x.numel() / std::max<int64_t>(H, 1);
    const Elt wt = float_weight(weight, "rmsnorm", "the weight");
    check(weight.numel() == H, "cuda rmsnorm: weight has {} elements for rows of {}", weight.numel(), H);
    cuda::launch_rmsnorm(x.data<bf16_t>(), weight.data(), wt, T, H, eps, out.data<bf16_t>(), stream_);
    after("rmsnorm");
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    need(x, DType::BF16, "matmul", "the input");
    need(y, DType::BF16, "matmul", "the output");
    check(w.device() == Device::CUDA, "cuda matmul: the weight must be uploaded to the GPU");
    check(x.rank() == 2 && w.rank() == 2 && w.dim(1) == x.dim(1), "cuda matmul: weight {} does not match input {}",
          shape_str(w.shape()), shape_str(x.shape()));
    const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
    check(y.rank() == 2 && y.dim(0) == M && y.dim(1) == N, "cuda matmul: output {} should be [{}, {}]",
          shape_str(y.shape()), M, N);
    Elt bt = Elt::BF16;
    if (bias) {
      bt = float_weight(*bias, "matmul", "the bias");
      check(bias->numel() == N, "cuda matmul: bias has {} elements for {} outputs", bias->numel(), N);
    }
    if (w.dtype() == DType::BF16) {
      const bool fused_bias = bias && bt == Elt::BF16;
      gemm_->bf16(x.data(), w.data(), fused_bias ? bias->data() : nullptr, y.data(), M, N, K);
      if (bias && !fused_bias) cuda::launch_add_bias(y.data<bf16_t>(), bias->data(), bt, M, N, stream_);
    } else if (w.dtype() == DType::F32) {
      // Dense f32 weights (--dequant-cache): widen x, multiply in fp32, round once at the end.
      Tensor xf = empty(DType::F32, {M, K}), yf = empty(DType::F32, {M, N});
      cuda::launch_bf16_to_f32(x.data<bf16_t>(), xf.data<float>(), M * K, stream_);
      gemm_->f32(xf.data<float>(), w.data<float>(), yf.data<float>(), M, N, K);
      cuda::launch_f32_bias_to_bf16(yf.data<float>(), bias ? bias->data() : nullptr, bt, M, N, y.data<bf16_t>(),
                                    stream_);
    } else {
      fail("cuda matmul: weight has dtype {}, expected BF16 or F32", dtype_name(w.dtype()));
    }
    after("matmul");
  }

  void matmul_packed(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y) override {
    need(x, DType::BF16, "matmul_packed", "the input");
    need(y, DType::BF16, "matmul_packed", "the output");
    if (w.layout == kW4A16TileLayout) {
      matmul_w4a16(x, w, bias, y);
      after("matmul_packed");
      return;
    }
    check(w.layout == kCanonicalLayout, "cuda matmul_packed: the weight is in an unknown layout ({})", w.layout);
    const int64_t M = x.rank() == 2 ? x.dim(0) : 0, K = w.k, N = w.n, gs = w.group_size;
    check(x.rank() == 2 && x.dim(1) == K, "cuda matmul_packed: input {} does not match the weight's {} input features",
          shape_str(x.shape()), K);
    check(y.rank() == 2 && y.dim(0) == M && y.dim(1) == N, "cuda matmul_packed: output {} should be [{}, {}]",
          shape_str(y.shape()), M, N);
    check(w.bits > 0 && w.bits <= 16 && 32 % w.bits == 0 && gs > 0 && K % gs == 0 && K % (32 / w.bits) == 0,
          "cuda matmul_packed: packed weight with {} bits, K {} and group size {} is not valid", w.bits, K, gs);
    need(w.qweight, DType::I32, "matmul_packed", "qweight");
    need(w.scales, DType::F32, "matmul_packed", "scales");
    need(w.zeros, DType::F32, "matmul_packed", "zeros");
    check(w.qweight.numel() == N * w.words_per_row() && w.scales.numel() == N * w.groups() &&
              w.zeros.numel() == N * w.groups(),
          "cuda matmul_packed: packed tensors do not match [{}, {}] with group size {}", N, K, gs);
    if (w.perm.defined()) {
      need(w.perm, DType::I32, "matmul_packed", "perm");
      check(w.perm.numel() == K, "cuda matmul_packed: perm has {} entries for K = {}", w.perm.numel(), K);
    }
    cuda::QGemmArgs a{};
    a.x = x.data<bf16_t>();
    a.M = M, a.K = K, a.N = N;
    a.qweight = static_cast<const uint32_t*>(w.qweight.data());
    a.bits = w.bits;
    a.scales = w.scales.data<float>();
    a.zeros = w.zeros.data<float>();
    a.group_size = gs;
    a.perm = w.perm.defined() ? w.perm.data<int32_t>() : nullptr;
    if (bias) {
      a.bias_type = float_weight(*bias, "matmul_packed", "the bias");
      check(bias->numel() == N, "cuda matmul_packed: bias has {} elements for {} outputs", bias->numel(), N);
      a.bias = bias->data();
    }
    a.y = y.data<bf16_t>();
    cuda::launch_qgemm(a, stream_);
    after("matmul_packed");
  }

  // The fused [gate; up] W4A16 GEMM with SwiGLU in the wgmma kernel's epilogue when the path for this shape and M
  // is a wgmma one (the tuner times the plain product; the epilogue only drops the [M, 2I] round trip and the
  // silu_mul kernel); otherwise the product and silu_mul_fused.
  void matmul_packed_swiglu(const Tensor& x, const PackedWeight& w, Tensor& out) override {
    if (w.layout != kW4A16TileLayout || !w4a16_swiglu_flag()) return Backend::matmul_packed_swiglu(x, w, out);
    need(x, DType::BF16, "matmul_packed_swiglu", "the input");
    need(out, DType::BF16, "matmul_packed_swiglu", "the output");
    const int64_t M = x.rank() == 2 ? x.dim(0) : 0;
    check(w.n % 2 == 0 && out.rank() == 2 && out.dim(0) == M && out.dim(1) == w.n / 2,
          "cuda matmul_packed_swiglu: output {} should be [{}, {}] for a weight of {} rows (gate, then up)",
          shape_str(out.shape()), M, w.n / 2, w.n);
    Tensor y;  // the plain product, made only where the epilogue does not run (or the tuner times the paths)
    if (M > 0 && w.n > 0 && !matmul_w4a16(x, w, nullptr, y, &out)) silu_mul_fused(y, out);
    after("matmul_packed_swiglu");
  }

  void copy(const Tensor& src, Tensor& dst) override {
    check(src.dtype() == dst.dtype() && src.numel() == dst.numel(), "cuda copy: {} {} into {} {}",
          dtype_name(src.dtype()), shape_str(src.shape()), dtype_name(dst.dtype()), shape_str(dst.shape()));
    check_cuda(cudaMemcpyAsync(dst.data(), src.data(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_), "copy");
  }

  void copy_row_blocks(const Tensor& src, int64_t blocks, Tensor& dst, int64_t stride, int64_t offset) override {
    const int64_t n = check_row_blocks("cuda copy_row_blocks", src, blocks, dst, stride, offset);
    need(src, src.dtype(), "copy_row_blocks", "src");
    need(dst, dst.dtype(), "copy_row_blocks", "dst");
    const int64_t row_bytes = src.dim(1) * int64_t(dtype_size(src.dtype()));
    cuda::launch_copy_row_blocks(src.data(), dst.data(), blocks, n, row_bytes, stride, offset, stream_);
    after("copy_row_blocks");
  }

  void rope(Tensor& x, const Tensor& positions, double theta) override {
    need(x, DType::BF16, "rope", "the input");
    check(x.rank() >= 2, "cuda rope: input {} needs [.., heads, head_dim]", shape_str(x.shape()));
    const int64_t D = x.dim(-1), heads = x.dim(-2), T = x.numel() / std::max<int64_t>(D * heads, 1);
    check(D % 2 == 0 && D <= 256, "cuda rope: head dim {} is odd or past 256", D);
    check(positions.dtype() == DType::I64 && positions.numel() == T, "cuda rope: {} positions for {} tokens",
          positions.numel(), T);
    cuda::launch_rope(x.data<bf16_t>(), T, heads, D, device_positions(positions), inv_freq(theta, D), stream_);
    after("rope");
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, Tensor& out) override {
    attend(q, k, v, key_mask, 0, 0, out);
  }

  // Native: one launch, the kernel applies each row's block end (launch.h); no per-block views or host masks.
  void attention_block_causal(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask,
                              int64_t block, int64_t q_offset, Tensor& out) override {
    check(q.rank() == 4 && k.rank() == 4 && q_offset >= 0 && q_offset + q.dim(1) <= k.dim(1),
          "cuda attention_block_causal: queries {} from sequence index {} do not lie inside the keys {}",
          shape_str(q.shape()), q_offset, shape_str(k.shape()));
    attend(q, k, v, key_mask, block, q_offset, out);
  }

  void attend(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, int64_t block,
              int64_t q_offset, Tensor& out) {
    need(q, DType::BF16, "attention", "q");
    need(k, DType::BF16, "attention", "k");
    need(v, DType::BF16, "attention", "v");
    need(out, DType::BF16, "attention", "the output");
    check(q.rank() == 4 && k.rank() == 4 && k.shape() == v.shape() && out.shape() == q.shape() &&
              k.dim(0) == q.dim(0) && k.dim(3) == q.dim(3),
          "cuda attention: q {}, k {}, v {}, out {} do not fit [B, L, heads, D]", shape_str(q.shape()),
          shape_str(k.shape()), shape_str(v.shape()), shape_str(out.shape()));
    const int64_t B = q.dim(0), Lq = q.dim(1), Hq = q.dim(2), D = q.dim(3), S = k.dim(1), Hkv = k.dim(2);
    check(Hkv > 0 && Hq % Hkv == 0, "attention: {} query heads is not a multiple of {} key/value heads", Hq, Hkv);
    check(cuda::attention_supports_head_dim(D), "cuda attention: head dim {} is not supported (multiples of 8 up to 256)",
          D);
    for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &k, &v, &out})
      check(cuda::aligned16(t->data()), "cuda attention: tensors must be 16-byte aligned");
    const uint8_t* mask = nullptr;
    if (key_mask) {
      check(key_mask->dtype() == DType::U8 && key_mask->numel() == B * S, "cuda attention: key mask must be U8 [{}, {}]",
            B, S);
      mask = key_mask->data<uint8_t>();
      if (key_mask->device() == Device::CPU)
        mask = static_cast<const uint8_t*>(mask_.get(mask, size_t(B * S), *alloc_, stream_, "attention (mask)"));
    }
    const int splits = cuda::attention_kv_splits(B, Lq, S, Hq, D, block, q_offset);
    std::shared_ptr<void> part;  // split-KV's partial rows (stream-ordered: free for reuse once the merge is queued)
    if (splits > 1) part = alloc_->activation(cuda::attention_split_kv_bytes(B, Lq, Hq, D, splits), "attention (split-KV)");
    cuda::launch_attention(q.data<bf16_t>(), k.data<bf16_t>(), v.data<bf16_t>(), mask, out.data<bf16_t>(), B, Lq, S,
                           Hq, Hkv, D, block, q_offset, splits, static_cast<float*>(part.get()), stream_);
    after("attention");
  }

  // A ragged pass's attention. Native path: the slots' descriptors and host key masks go up in one copy, one
  // kernel writes every cached slot's window into its cache, one flash-attention launch serves every slot
  // (flash_attention.cu, SLOTS). It is OFF unless DIFFULEX_SLOT_ATTENTION=1 until it has run on a GPU
  // (CudaOps.AttentionSlotsEqualOneCallPerSlot, docs/CUDA.md); the generic per-slot path runs otherwise, and always
  // for head dims past 128 (the WMMA kernel has no slot form), fp8 caches (dequantized per slot) and during a graph
  // capture (the descriptor copy reads pageable host memory, which a captured graph may not).
  void attention_slots(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<AttnSlotRef>& slots,
                       int64_t block, Tensor& out) override {
    check_attn_slots("cuda attention_slots", q, k, v, slots, out);
    if (!native_slot_attention(q, slots)) return attention_each_slot(q, k, v, slots, block, out);
    need(q, DType::BF16, "attention_slots", "q");
    need(k, DType::BF16, "attention_slots", "k");
    need(v, DType::BF16, "attention_slots", "v");
    need(out, DType::BF16, "attention_slots", "the output");
    const int64_t Hq = q.dim(1), D = q.dim(2), Hkv = k.dim(1), row = Hkv * D;
    for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &k, &v, &out})
      check(cuda::aligned16(t->data()), "cuda attention_slots: q, k, v and out must be 16-byte aligned");
    const size_t n = slots.size(), desc_bytes = n * sizeof(cuda::AttnSlotDesc);
    size_t mask_bytes = 0;
    for (const AttnSlotRef& s : slots)
      if (s.key_mask.defined() && s.key_mask.device() == Device::CPU) mask_bytes += s.key_mask.nbytes();
    // One buffer: the descriptors, then the host key masks (their device addresses go into the descriptors).
    Tensor dev = empty(DType::U8, {int64_t(desc_bytes + mask_bytes)});
    std::vector<unsigned char> host(desc_bytes + mask_bytes);
    size_t at = desc_bytes;
    int64_t max_width = 0;
    bool cached = false;
    for (size_t i = 0; i < n; ++i) {
      const AttnSlotRef& s = slots[i];
      cuda::AttnSlotDesc d{};
      d.row = s.row, d.width = s.width, d.q_offset = s.begin;
      d.cached = s.k_cache.defined() ? 1 : 0;
      if (d.cached) {
        need(s.k_cache, DType::BF16, "attention_slots", "k_cache");
        need(s.v_cache, DType::BF16, "attention_slots", "v_cache");
        check(cuda::aligned16(s.k_cache.data()) && cuda::aligned16(s.v_cache.data()),
              "cuda attention_slots: slot {}: k_cache and v_cache must be 16-byte aligned", i);
        d.k = s.k_cache.data<bf16_t>(), d.v = s.v_cache.data<bf16_t>(), d.keys = s.k_cache.dim(1);
      } else {  // its own window rows of the pass's k and v
        d.k = k.data<bf16_t>() + s.row * row, d.v = v.data<bf16_t>() + s.row * row, d.keys = s.width;
      }
      if (s.key_mask.defined() && s.key_mask.device() == Device::CPU) {
        std::memcpy(host.data() + at, s.key_mask.data(), s.key_mask.nbytes());
        d.mask = dev.data<uint8_t>() + at;
        at += s.key_mask.nbytes();
      } else if (s.key_mask.defined()) {
        d.mask = s.key_mask.data<uint8_t>();
      }
      std::memcpy(host.data() + i * sizeof(d), &d, sizeof(d));
      max_width = std::max(max_width, s.width);
      cached = cached || d.cached;
    }
    // From pageable memory the copy is staged before the call returns, so `host` may go; the kernels below are
    // ordered after it on the stream, and `dev` returns to the allocator only for ops enqueued later.
    check_cuda(cudaMemcpyAsync(dev.data(), host.data(), host.size(), cudaMemcpyHostToDevice, stream_),
               "attention_slots (descriptors)");
    const auto* table = reinterpret_cast<const cuda::AttnSlotDesc*>(dev.data());
    if (cached) cuda::launch_kv_write_slots(table, int(n), k.data<bf16_t>(), v.data<bf16_t>(), row, max_width, stream_);
    cuda::launch_attention_slots(q.data<bf16_t>(), table, int(n), out.data<bf16_t>(), max_width, Hq, Hkv, D, block,
                                 stream_);
    after("attention_slots");
  }

  void add_rmsnorm(Tensor& h, const Tensor& y, const Tensor& weight, float eps, Tensor& out) override {
    need(h, DType::BF16, "add_rmsnorm", "h");
    need(y, DType::BF16, "add_rmsnorm", "y");
    need(out, DType::BF16, "add_rmsnorm", "the output");
    same_numel(h, y, "add_rmsnorm");
    same_numel(h, out, "add_rmsnorm");
    check(out.data() != h.data() && out.data() != y.data(), "cuda add_rmsnorm: the output must not alias h or y");
    const int64_t H = h.dim(-1), T = h.numel() / std::max<int64_t>(H, 1);
    const Elt wt = float_weight(weight, "add_rmsnorm", "the weight");
    check(weight.numel() == H, "cuda add_rmsnorm: weight has {} elements for rows of {}", weight.numel(), H);
    cuda::launch_add_rmsnorm(h.data<bf16_t>(), y.data<bf16_t>(), weight.data(), wt, T, H, eps, out.data<bf16_t>(),
                             stream_);
    after("add_rmsnorm");
  }

  void qkv_rope(const Tensor& qkv, const Tensor& positions, double theta, Tensor& q, Tensor& k, Tensor& v) override {
    need(qkv, DType::BF16, "qkv_rope", "the input");
    need(q, DType::BF16, "qkv_rope", "q");
    need(k, DType::BF16, "qkv_rope", "k");
    need(v, DType::BF16, "qkv_rope", "v");
    check(q.rank() == 3 && k.rank() == 3 && q.dim(2) == k.dim(2) && q.dim(0) == k.dim(0),
          "cuda qkv_rope: q {} and k {} must be [T, heads, D]", shape_str(q.shape()), shape_str(k.shape()));
    const int64_t T = q.dim(0), Hq = q.dim(1), Hkv = k.dim(1), D = q.dim(2);
    check(D % 2 == 0 && D <= 256, "cuda qkv_rope: head dim {} is odd or past 256", D);
    check(qkv.rank() == 2 && qkv.dim(0) == T && qkv.dim(1) == (Hq + 2 * Hkv) * D && v.numel() == T * Hkv * D,
          "cuda qkv_rope: input {} and v {} do not fit q {} and k {}", shape_str(qkv.shape()), shape_str(v.shape()),
          shape_str(q.shape()), shape_str(k.shape()));
    check(positions.dtype() == DType::I64 && positions.numel() == T, "cuda qkv_rope: {} positions for {} tokens",
          positions.numel(), T);
    cuda::launch_qkv_rope(qkv.data<bf16_t>(), T, Hq, Hkv, D, device_positions(positions), inv_freq(theta, D), q.data<bf16_t>(),
                          k.data<bf16_t>(), v.data<bf16_t>(), stream_);
    after("qkv_rope");
  }

  void copy_from_host(const Tensor& host, Tensor& dst) override {
    check(host.device() == Device::CPU && dst.device() == Device::CUDA && host.dtype() == dst.dtype() &&
              host.numel() == dst.numel(),
          "cuda copy_from_host: {} {} on {} into {} {} on {}", dtype_name(host.dtype()), shape_str(host.shape()),
          device_name(host.device()), dtype_name(dst.dtype()), shape_str(dst.shape()), device_name(dst.device()));
    // From pageable memory the copy is staged before the call returns, so `host` may change afterwards.
    check_cuda(cudaMemcpyAsync(dst.data(), host.data(), host.nbytes(), cudaMemcpyHostToDevice, stream_),
               "copy_from_host");
    after("copy_from_host");
  }

  // Stream capture in relaxed mode (the caching allocator may still cudaMalloc a new block); every activation block
  // the body takes comes from a pool of the graph's own (cuda::GraphPool), so no later eager op is handed memory
  // that a replay writes. Any error ends the capture and is rethrown.
  std::unique_ptr<Graph> capture(const std::function<void()>& body) override {
    if (sync_each_op_) return nullptr;  // a synchronization per op cannot be captured
    cudaGraph_t graph = nullptr;
    check_cuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "graph capture");
    std::shared_ptr<cuda::GraphPool> pool;
    try {
      pool = alloc_->begin_graph_pool();
      body();
    } catch (...) {
      (void)cudaStreamEndCapture(stream_, &graph);
      if (graph) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      if (pool) alloc_->end_graph_pool();
      throw;
    }
    alloc_->end_graph_pool();
    const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
    if (end != cudaSuccess) {
      if (graph) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      check_cuda(end, "graph capture");
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    check_cuda(inst, "graph instantiate");
    return std::make_unique<CudaGraph>(exec, stream_, std::move(pool));
  }

  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override {
    need(gate, DType::BF16, "silu_mul", "gate");
    need(up, DType::BF16, "silu_mul", "up");
    need(out, DType::BF16, "silu_mul", "the output");
    same_numel(gate, up, "silu_mul");
    same_numel(gate, out, "silu_mul");
    cuda::launch_silu_mul(gate.data<bf16_t>(), up.data<bf16_t>(), out.data<bf16_t>(), gate.numel(), stream_);
    after("silu_mul");
  }

  void kv_quantize_fp8(const Tensor& src, int64_t heads, Tensor& dst, Tensor& scales) override {
    need(src, DType::BF16, "kv_quantize_fp8", "the input");
    need(dst, DType::F8_E4M3, "kv_quantize_fp8", "the output");
    need(scales, DType::F32, "kv_quantize_fp8", "the scales");
    check_kv_fp8_shapes("cuda kv_quantize_fp8", src, dst, scales, heads);
    cuda::launch_kv_quantize_fp8(src.data<bf16_t>(), scales.numel(), src.numel() / scales.numel(), dst.data<uint8_t>(),
                                 scales.data<float>(), stream_);
    after("kv_quantize_fp8");
  }

  void kv_dequantize_fp8(const Tensor& src, const Tensor& scales, int64_t heads, Tensor& dst) override {
    need(src, DType::F8_E4M3, "kv_dequantize_fp8", "the input");
    need(scales, DType::F32, "kv_dequantize_fp8", "the scales");
    need(dst, DType::BF16, "kv_dequantize_fp8", "the output");
    check_kv_fp8_shapes("cuda kv_dequantize_fp8", src, dst, scales, heads);
    cuda::launch_kv_dequantize_fp8(src.data<uint8_t>(), scales.data<float>(), scales.numel(),
                                   src.numel() / scales.numel(), dst.data<bf16_t>(), stream_);
    after("kv_dequantize_fp8");
  }

  // --- Quantizer linear algebra (linalg.h) ---------------------------------------------------------------------
  void gram_accumulate(const Tensor& x, Tensor& h) override {
    check(x.defined() && x.device() == Device::CUDA && (x.dtype() == DType::BF16 || x.dtype() == DType::F32),
          "cuda gram_accumulate: x must be a BF16 or F32 tensor on the GPU");
    need(h, DType::F32, "gram_accumulate", "h");
    const int64_t k = x.dim(-1);
    check(h.numel() == k * k, "cuda gram_accumulate: h {} should be [{}, {}]", shape_str(h.shape()), k, k);
    linalg_->gram(x.data(), x.dtype() == DType::BF16, k == 0 ? 0 : x.numel() / k, k, h.data<float>());
    after("gram_accumulate");
  }

  void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                const float* b, int64_t ldb, float beta, float* c, int64_t ldc) override {
    linalg_->gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    after("gemm_f32");
  }

  bool cholesky_inverse_upper(double* h, int64_t n) override { return linalg_->hinv_upper(h, n); }

  void zero(Tensor& t) override {
    check(t.defined() && t.device() == Device::CUDA, "cuda zero: the tensor must be on the GPU");
    check_cuda(cudaMemsetAsync(t.data(), 0, t.nbytes(), stream_), "zero");
    after("zero");
  }

  void symmetric_scaled(const Tensor& upper, double f, Tensor& out) override {
    need(upper, DType::F32, "symmetric_scaled", "the sums");
    need(out, DType::F32, "symmetric_scaled", "the output");
    const int64_t k = upper.rank() == 2 ? upper.dim(0) : -1;
    check(k >= 0 && upper.dim(1) == k && out.numel() == k * k,
          "cuda symmetric_scaled: sums {} and output {} should both be [k, k]", shape_str(upper.shape()),
          shape_str(out.shape()));
    check(k < (int64_t(1) << 21), "cuda symmetric_scaled: k = {} is too large for the tile grid", k);
    cuda::launch_symmetric_scaled(upper.data<float>(), k, f, out.data<float>(), stream_);
    after("symmetric_scaled");
  }

  double dot_f64(const Tensor& a, const Tensor& b) override {
    need(a, DType::F32, "dot_f64", "a");
    need(b, DType::F32, "dot_f64", "b");
    same_numel(a, b, "dot_f64");
    auto part = alloc_->activation(size_t(cuda::dot_f64_partials() + 1) * sizeof(double), "dot_f64");
    double* p = static_cast<double*>(part.get());
    cuda::launch_dot_f64(a.data<float>(), b.data<float>(), a.numel(), p, p + cuda::dot_f64_partials(), stream_);
    double r = 0;
    check_cuda(cudaMemcpyAsync(&r, p + cuda::dot_f64_partials(), sizeof(double), cudaMemcpyDeviceToHost, stream_),
               "dot_f64");
    check_cuda(cudaStreamSynchronize(stream_), "dot_f64");
    return r;
  }

  void column_abs_sum(const Tensor& x, std::vector<double>& sum) override {
    check(x.defined() && x.device() == Device::CUDA && (x.dtype() == DType::BF16 || x.dtype() == DType::F32) &&
              x.rank() >= 1,
          "cuda column_abs_sum: x must be a BF16 or F32 tensor on the GPU");
    const int64_t k = x.dim(-1);
    check(int64_t(sum.size()) == k, "cuda column_abs_sum: {} sums for {} channels", sum.size(), k);
    if (k == 0) return;
    // The running sums go up, continue over these rows in fp64 and come back (2 K doubles, one wait).
    const size_t bytes = size_t(k) * sizeof(double);
    auto acc = alloc_->activation(bytes, "column_abs_sum");
    check_cuda(cudaMemcpyAsync(acc.get(), sum.data(), bytes, cudaMemcpyHostToDevice, stream_), "column_abs_sum");
    cuda::launch_column_abs_sum(x.data(), x.dtype() == DType::BF16, x.numel() / k, k, static_cast<double*>(acc.get()),
                                stream_);
    check_cuda(cudaMemcpyAsync(sum.data(), acc.get(), bytes, cudaMemcpyDeviceToHost, stream_), "column_abs_sum");
    check_cuda(cudaStreamSynchronize(stream_), "column_abs_sum");
  }

  void scale_columns(const Tensor& x, const Tensor& mul, Tensor& out) override {
    need(x, DType::BF16, "scale_columns", "x");
    need(mul, DType::F32, "scale_columns", "the factors");
    need(out, DType::BF16, "scale_columns", "the output");
    const int64_t k = mul.numel();
    check(x.rank() >= 1 && x.dim(-1) == k && out.numel() == x.numel(),
          "cuda scale_columns: x {}, factors {} and output {} should be [T, K], [K] and [T, K]", shape_str(x.shape()),
          shape_str(mul.shape()), shape_str(out.shape()));
    cuda::launch_scale_columns(x.data<bf16_t>(), mul.data<float>(), k == 0 ? 0 : x.numel() / k, k,
                               out.data<bf16_t>(), stream_);
    after("scale_columns");
  }

  void fake_quant(const Tensor& w, const Tensor& s, const FakeQuantGrid& g, bool minus_w, Tensor& out) override {
    need(w, DType::F32, "fake_quant", "the weight");
    need(out, DType::F32, "fake_quant", "the output");
    check(w.rank() == 2, "cuda fake_quant: the weight must be [n, k], got {}", shape_str(w.shape()));
    const int64_t n = w.dim(0), k = w.dim(1), gs = g.group_size;
    check(gs > 0 && k % gs == 0, "cuda fake_quant: group size {} does not divide in_features {}", gs, k);
    if (s.defined()) need(s, DType::F32, "fake_quant", "the scales");
    check(!s.defined() || s.numel() == k, "cuda fake_quant: {} scales for in_features {}", s.numel(), k);
    check(out.numel() == n * k, "cuda fake_quant: output {} should be [{}, {}]", shape_str(out.shape()), n, k);
    check(n * (k / gs) < (int64_t(1) << 31), "cuda fake_quant: {} x {} groups exceed the grid", n, k / gs);
    auto flag = alloc_->activation(sizeof(int), "fake_quant");
    check_cuda(cudaMemsetAsync(flag.get(), 0, sizeof(int), stream_), "fake_quant");
    cuda::launch_fake_quant(w.data<float>(), s.defined() ? s.data<float>() : nullptr, n, k, g.bits, gs, g.sym,
                            g.include_zero, g.min_zero, minus_w, out.data<float>(), static_cast<int*>(flag.get()),
                            stream_);
    int bad = 0;
    check_cuda(cudaMemcpyAsync(&bad, flag.get(), sizeof(int), cudaMemcpyDeviceToHost, stream_), "fake_quant");
    check_cuda(cudaStreamSynchronize(stream_), "fake_quant");
    check(bad == 0, "cuda fake_quant: a quantization scale does not fit in fp16 (weights too large)");
  }

  void synchronize() override { check_cuda(cudaStreamSynchronize(stream_), "synchronize"); }
  void set_reproducible(bool on) override {
    gemm_->set_tune(!on);
    reproducible_ = on;
  }

  void add(Tensor& x, const Tensor& y) override {
    need(x, DType::BF16, "add", "x");
    need(y, DType::BF16, "add", "y");
    same_numel(x, y, "add");
    cuda::launch_add(x.data<bf16_t>(), y.data<bf16_t>(), x.numel(), stream_);
    after("add");
  }

  // --- W4A16 tensor-core path (w4a16_mma.cu) ----------------------------------------------------------------------
  // upload_packed converts 4-bit weights once into the tile layout; anything that layout cannot hold (other bit
  // widths, group sizes that are not multiples of 16, non-integer zero points) stays canonical and runs qgemm.cu.
  PackedWeight upload_packed(const PackedWeight& host) override {
    if (host.layout == kCanonicalLayout && host.qweight.defined() && host.qweight.device() == Device::CPU &&
        host.qweight.dtype() == DType::I32 && host.scales.dtype() == DType::F32 && host.zeros.defined() &&
        host.zeros.dtype() == DType::F32 && cuda::w4a16_supported(host.bits, host.k, host.group_size) &&
        host.qweight.numel() == host.n * host.words_per_row() && host.scales.numel() == host.n * host.groups() &&
        host.zeros.numel() == host.n * host.groups()) {
      const cuda::W4A16Dims d = cuda::w4a16_dims(host.n, host.k, host.group_size);
      Tensor tiles = Tensor::zeros(DType::I32, {d.tile_words()});
      Tensor sz = Tensor::zeros(DType::I32, {d.groups, d.np});
      if (cuda::w4a16_repack(static_cast<const uint32_t*>(host.qweight.data()), host.scales.data<float>(),
                             host.zeros.data<float>(), host.n, host.k, host.group_size,
                             static_cast<uint32_t*>(tiles.data()), static_cast<uint32_t*>(sz.data()))) {
        PackedWeight out = host;
        out.layout = kW4A16TileLayout;
        out.qweight = upload(tiles);
        out.scales = upload(sz);
        out.zeros = Tensor();
        if (host.perm.defined()) out.perm = upload(host.perm);
        return out;
      }
    }
    return Backend::upload_packed(host);
  }

  // "auto" (time the candidate paths once per shape and M bucket), "mma" (w4a16_mma.cu), "wgmma" (w4a16_wgmma.cu,
  // compute capability 9.0 only; "wgmma_narrow", "wgmma_tall", "wgmma_deep" and "wgmma_fit" its other tile variants,
  // launch.h W4A16Variant)
  // or "dequant" (bf16 scratch + cuBLASLt). DIFFULEX_W4A16_PATH sets the initial mode.
  void set_w4a16_path(const std::string& mode) {
    const bool wgmma = cuda::w4a16_wgmma_variant_of(mode.c_str()) >= 0;
    check(mode == "auto" || mode == "mma" || wgmma || mode == "dequant",
          "cuda: unknown W4A16 path '{}' (auto, mma, wgmma, wgmma_narrow, wgmma_tall, wgmma_deep, wgmma_fit, dequant)",
          mode);
    check(!wgmma || cuda::w4a16_wgmma_available(),
          "cuda: the wgmma W4A16 path needs a compute capability 9.0 GPU (H100/H200) and a build with sm_90a");
    w4a16_mode_ = mode;
  }
  // Split-K of the W4A16 kernels: 0 (default) the planners' choice, > 0 that many splits (a measurement knob:
  // `bench --w4a16-kernels --w4a16-splits`).
  void set_w4a16_splits(int splits) {
    check(splits >= 0, "cuda: W4A16 split count {} is negative", splits);
    w4a16_splits_ = splits;
  }
  // What "auto" chose for this shape and M (an empty path before the first call in that M bucket).
  W4A16Choice w4a16_choice(int64_t N, int64_t K, int64_t group_size, int64_t M) const {
    const int64_t bucket = cuda::tuner_m_bucket(M);
    auto it = w4a16_choice_.find(std::make_tuple(N, K, group_size, bucket));
    W4A16Choice c{N, K, group_size, bucket, "", 0};
    if (it != w4a16_choice_.end()) c.path = it->second.path, c.splits = it->second.splits;
    return c;
  }
  int w4a16_last_wgmma_splits() const { return last_wgmma_splits_; }
  std::vector<W4A16Choice> w4a16_choices() const {
    std::vector<W4A16Choice> out;
    for (const auto& [key, pick] : w4a16_choice_)
      out.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), std::get<3>(key), pick.path, pick.splits});
    return out;
  }

 private:
  // y = x · Wᵀ (+ bias); with swiglu (no bias), the SwiGLU of y into *swiglu instead where the chosen path is a wgmma
  // one (true returned). With swiglu, y comes undefined and is made here where the plain product is needed (the
  // tuner's timing, a path without the epilogue).
  bool matmul_w4a16(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y, Tensor* swiglu = nullptr) {
    const int64_t M = x.rank() == 2 ? x.dim(0) : 0, K = w.k, N = w.n, gs = w.group_size;
    check(x.rank() == 2 && x.dim(1) == K, "cuda matmul_packed: input {} does not match the weight's {} input features",
          shape_str(x.shape()), K);
    if (!swiglu)
      check(y.rank() == 2 && y.dim(0) == M && y.dim(1) == N, "cuda matmul_packed: output {} should be [{}, {}]",
            shape_str(y.shape()), M, N);
    check(cuda::w4a16_supported(w.bits, K, gs), "cuda matmul_packed: W4A16 tiles with {} bits, K {}, group size {}",
          w.bits, K, gs);
    const cuda::W4A16Dims d = cuda::w4a16_dims(N, K, gs);
    need(w.qweight, DType::I32, "matmul_packed", "qweight (W4A16 tiles)");
    need(w.scales, DType::I32, "matmul_packed", "scales (W4A16 scale/zero words)");
    check(w.qweight.numel() == d.tile_words() && w.scales.numel() == d.sz_words(),
          "cuda matmul_packed: W4A16 tiles hold {} and {} words, expected {} and {} for [{}, {}]", w.qweight.numel(),
          w.scales.numel(), d.tile_words(), d.sz_words(), N, K);
    Elt bt = Elt::BF16;
    if (bias) {
      bt = float_weight(*bias, "matmul_packed", "the bias");
      check(bias->numel() == N, "cuda matmul_packed: bias has {} elements for {} outputs", bias->numel(), N);
    }
    if (M == 0 || N == 0) return false;
    auto plain_y = [&] {
      if (!y.defined()) y = empty(DType::BF16, {M, N});
    };
    const bf16_t* xp = x.data<bf16_t>();
    Tensor xperm;
    if (w.perm.defined()) {
      need(w.perm, DType::I32, "matmul_packed", "perm");
      check(w.perm.numel() == K, "cuda matmul_packed: perm has {} entries for K = {}", w.perm.numel(), K);
      xperm = empty(DType::BF16, {M, K});
      cuda::launch_w4a16_permute(xp, w.perm.data<int32_t>(), M, K, xperm.data<bf16_t>(), stream_);
      xp = xperm.data<bf16_t>();
    }
    check(cuda::aligned16(xp), "cuda matmul_packed: the input must be 16-byte aligned");
    const auto* tiles = static_cast<const uint32_t*>(w.qweight.data());
    const auto* sz = static_cast<const uint32_t*>(w.scales.data());
    const void* bp = bias ? bias->data() : nullptr;
    auto run_mma = [&] {
      const cuda::W4A16Args p = cuda::w4a16_plan(M, N, K, gs, w4a16_splits_);
      Tensor partial;
      if (p.splits > 1) partial = empty(DType::F32, {int64_t(cuda::w4a16_partial_floats(p))});
      cuda::launch_w4a16(p, xp, tiles, sz, gs, bp, bt, y.data<bf16_t>(),
                         partial.defined() ? partial.data<float>() : nullptr, stream_);
    };
    // Into y, or with SwiGLU into swiglu_out; with set_w4a16_splits's count if one is set, else `splits` k-splits
    // (0: the planner's count).
    auto run_wgmma = [&](int variant, bf16_t* swiglu_out = nullptr, int splits = 0) {
      const cuda::W4A16Args p = cuda::w4a16_wgmma_plan(M, N, K, gs, w4a16_splits_ ? w4a16_splits_ : splits, variant);
      last_wgmma_splits_ = p.splits;
      Tensor partial;
      if (p.splits > 1) partial = empty(DType::F32, {int64_t(cuda::w4a16_partial_floats(p))});
      float* pp = partial.defined() ? partial.data<float>() : nullptr;
      if (swiglu_out) cuda::launch_w4a16_wgmma_swiglu(p, xp, tiles, sz, gs, swiglu_out, pp, stream_);
      else cuda::launch_w4a16_wgmma(p, xp, tiles, sz, gs, bp, bt, y.data<bf16_t>(), pp, stream_);
    };
    auto run_dequant = [&] {
      Tensor wd = empty(DType::BF16, {N, K});  // transient: back to the activation pool after the call
      cuda::launch_w4a16_dequant(tiles, sz, N, K, gs, wd.data<bf16_t>(), stream_);
      const bool fused_bias = bias && bt == Elt::BF16;
      gemm_->bf16(xp, wd.data(), fused_bias ? bp : nullptr, y.data(), M, N, K);
      if (bias && !fused_bias) cuda::launch_add_bias(y.data<bf16_t>(), bp, bt, M, N, stream_);
    };
    std::string path = w4a16_mode_;
    int tuned_splits = 0;  // the tuner's split-K count for a wgmma path (0: the planner's)
    if (path == "auto" && reproducible_) path = "mma";  // set_reproducible: no timed choice
    if (path == "auto") {
      // Timed once per (shape, group, M bucket: tuner_key.h), as the cuBLASLt tuner does (gemm.cc): the tensor-core
      // kernels always, the wgmma kernel where the GPU runs it, dequantize + cuBLASLt above 64 rows (a key, so that
      // every M of the key has the same candidates).
      const auto key = std::make_tuple(N, K, gs, cuda::tuner_m_bucket(M));
      auto it = w4a16_choice_.find(key);
      if (it == w4a16_choice_.end()) {
        plain_y();
        std::string best = "mma";
        double t_best = time_ms(run_mma);
        auto consider = [&](const char* name, auto&& fn) {
          const double t = time_ms(fn);
          if (t < t_best) t_best = t, best = name;
        };
        auto wide = [&] { run_wgmma(cuda::kW4A16Wide); };
        if (cuda::w4a16_wgmma_available() && wgmma_agrees(y, run_mma, wide)) {
          consider("wgmma", wide);
          for (const char* name : {"wgmma_narrow", "wgmma_tall", "wgmma_deep", "wgmma_fit"}) {
            const int v = cuda::w4a16_wgmma_variant_of(name);
            auto other = [&] { run_wgmma(v); };
            if (cuda::w4a16_wgmma_has_variant(v, M) && wgmma_agrees(y, run_mma, other)) consider(name, other);
          }
        }
        if (std::get<3>(key) > 64) consider("dequant", run_dequant);
        W4A16Pick pick{best, 0};
        // The split-K count of the chosen wgmma tile up to 64 rows, where the tiles are fewer than the GPU's blocks
        // and the planner's model (w4a16_tiles.cuh w4a16_pick_splits) decides how far K is split: that model
        // charges a block the bandwidth of one of 264, so it splits much, and each split adds its share of the
        // reduction's fixed cost (partials written, a counter, the last split's reads). Timed like the paths; kept
        // only where faster than the planner's count, and checked like a path. Splits of at least 3 k steps, as
        // the planner's; a count is the one its plan runs (a request rounds to whole k steps a split: 6 of 20 steps
        // are 5 splits of 4), each timed once.
        const int bv = cuda::w4a16_wgmma_variant_of(best.c_str());
        if (w4a16_tune_splits_flag() && w4a16_splits_ == 0 && bv >= 0 && std::get<3>(key) <= 64) {
          std::set<int> tried{cuda::w4a16_wgmma_plan(M, N, K, gs, 0, bv).splits};
          for (int want : {1, 2, 3, 4, 6, 8, 12}) {
            const int sp = cuda::w4a16_wgmma_plan(M, N, K, gs, want, bv).splits;
            if ((want > 1 && want > d.kt / 3) || !tried.insert(sp).second) continue;
            const double t = time_ms([&] { run_wgmma(bv, nullptr, sp); });
            if (t < t_best) t_best = t, pick.splits = sp;
          }
          if (pick.splits && !wgmma_agrees(y, run_mma, [&] { run_wgmma(bv, nullptr, pick.splits); }))
            pick = {"mma", 0};
        }
        it = w4a16_choice_.emplace(key, pick).first;
      }
      path = it->second.path;
      tuned_splits = it->second.splits;
    }
    const int variant = cuda::w4a16_wgmma_variant_of(path.c_str());
    if (swiglu && !bias && variant >= 0 && cuda::w4a16_wgmma_swiglu_supported(N, swiglu->data())) {
      run_wgmma(variant, swiglu->data<bf16_t>(), tuned_splits);
      return true;
    }
    plain_y();
    if (path == "dequant") run_dequant();
    else if (variant >= 0) run_wgmma(variant, nullptr, tuned_splits);
    else run_mma();
    return false;
  }

  // A self-check before "auto" may pick the wgmma kernel: its output for this call must match the mma.sync kernel's
  // to bf16 rounding (relative L2 error < 1e-2; both dequantize identically and accumulate in fp32). A mismatch means
  // a GPU or driver where the Hopper kernel does not do what it was tested to do: it is turned off for the process,
  // with a warning, instead of giving wrong results silently.
  template <class A, class B>
  bool wgmma_agrees(Tensor& y, A&& run_a, B&& run_b) {
    if (wgmma_disabled_) return false;
    run_a();
    Tensor ref = to_host_f32(y);
    run_b();
    Tensor got = to_host_f32(y);
    double num = 0, den = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      const double r = ref.data<float>()[i], g = got.data<float>()[i];
      num += (g - r) * (g - r);
      den += r * r;
    }
    const bool ok = std::isfinite(num) && num <= 1e-4 * std::max(den, 1e-30);
    if (!ok) {
      wgmma_disabled_ = true;
      log_warn("cuda: the wgmma W4A16 kernel disagrees with the mma.sync kernel on [{} x {}] (relative L2 error {:.3g}); "
               "using the other paths",
               y.dim(0), y.dim(1), std::sqrt(num / std::max(den, 1e-30)));
    }
    return ok;
  }

  // Device time of one run of fn inside a CUDA graph (four runs captured back to back, median of five replays):
  // the kernels are compared as a graph-captured decode step runs them, without the host launch time that eager
  // timing adds to kernels shorter than their launch. One eager run first: the dequantize path's cuBLASLt call
  // chooses its algorithm by timing, which cannot happen inside a capture.
  template <class F>
  double time_ms(F&& fn) {
    fn();
    bool graphed = true;
    const double ms = cuda_graph_time_ms(*this, [&](int) { fn(); }, 4, 5, &graphed);
    if (!graphed && !sync_each_op_ && !warned_eager_timing_) {
      warned_eager_timing_ = true;
      log_warn("cuda: a W4A16 path could not be timed inside a CUDA graph; the path choices mix graph and eager "
               "times (host launch time included) from here on");
    }
    return ms;
  }
  bool warned_eager_timing_ = false;

  std::string w4a16_mode_ = [] {
    const char* v = std::getenv("DIFFULEX_W4A16_PATH");
    return std::string(v && *v ? v : "auto");
  }();
  bool wgmma_disabled_ = false;
  int last_wgmma_splits_ = 0;  // the split count of the last wgmma launch (w4a16_last_wgmma_splits)
  bool reproducible_ = false;  // set_reproducible
  int w4a16_splits_ = 0;
  // (N, K, group, M bucket) -> the path auto chose, and for a wgmma path its split-K count (0: the planner's)
  struct W4A16Pick {
    std::string path;
    int splits = 0;
  };
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, W4A16Pick> w4a16_choice_;
  // --- end of the W4A16 path --------------------------------------------------------------------------------------

  // ---- SwiGLU of the fused gate/up GEMM, rows for the LM head and the samplers (sample_rows.cu) ----
  void silu_mul_fused(const Tensor& gate_up, Tensor& out) override {
    need(gate_up, DType::BF16, "silu_mul_fused", "the input");
    need(out, DType::BF16, "silu_mul_fused", "the output");
    check(gate_up.rank() == 2 && gate_up.dim(1) % 2 == 0, "cuda silu_mul_fused: input must be [T, 2I], got {}",
          shape_str(gate_up.shape()));
    const int64_t T = gate_up.dim(0), I = gate_up.dim(1) / 2;
    check(out.numel() == T * I, "cuda silu_mul_fused: output {} should hold [{}, {}]", shape_str(out.shape()), T, I);
    cuda::launch_silu_mul_fused(gate_up.data<bf16_t>(), T, I, out.data<bf16_t>(), stream_);
    after("silu_mul_fused");
  }

  // The column blocks of the fused q/k/v GEMM's output as contiguous tensors: one copy kernel each (a pitched
  // cudaMemcpy2DAsync took 0.34 ms per Dream-7B forward at B=1, eating the fusion's gain).
  void split_columns(const Tensor& x, const std::vector<Tensor*>& outs) override {
    need(x, DType::BF16, "split_columns", "the input");
    check(x.rank() == 2, "cuda split_columns: input must be [T, N], got {}", shape_str(x.shape()));
    const int64_t T = x.dim(0), N = x.dim(1);
    int64_t total = 0;
    for (const Tensor* o : outs) {
      check(o != nullptr, "cuda split_columns: null output");
      need(*o, DType::BF16, "split_columns", "an output");
      check(T > 0 && o->numel() % T == 0, "cuda split_columns: output {} does not fit {} rows", shape_str(o->shape()), T);
      total += o->numel() / T;
    }
    check(total == N, "cuda split_columns: outputs take {} columns of {}", total, N);
    int64_t col = 0;
    for (Tensor* o : outs) {
      const int64_t n = o->numel() / T;
      cuda::launch_split_columns(x.data<bf16_t>(), T, N, col, n, o->data<bf16_t>(), stream_);
      col += n;
    }
    after("split_columns");
  }

  void gather_rows(const Tensor& x, const std::vector<int64_t>& rows, Tensor& out) override {
    need(x, DType::BF16, "gather_rows", "the input");
    need(out, DType::BF16, "gather_rows", "the output");
    check(x.rank() == 2, "cuda gather_rows: input must be [T, H], got {}", shape_str(x.shape()));
    const int64_t T = x.dim(0), H = x.dim(1), R = int64_t(rows.size());
    check(out.rank() == 2 && out.dim(0) == R && out.dim(1) == H, "cuda gather_rows: output {} should be [{}, {}]",
          shape_str(out.shape()), R, H);
    for (int64_t r : rows) check(r >= 0 && r < T, "cuda gather_rows: row {} is outside [0, {})", r, T);
    if (R == 0) return;
    const void* dev = rows_.get(rows.data(), size_t(R) * 8, *alloc_, stream_, "gather_rows (rows)");
    cuda::launch_gather_rows(x.data<bf16_t>(), static_cast<const int64_t*>(dev), R, H, out.data<bf16_t>(), stream_);
    after("gather_rows");
  }

  // The Gumbel rule with temperature > 0 draws one uniform per vocabulary entry from a sequential host stream
  // (Rng); it runs through the generic host path. Everything else runs on the GPU.
  std::vector<TokenChoice> sample_rows(const Tensor& logits, const RowSampling& how,
                                       const std::vector<RowDraw>& draws) override {
    check(logits.defined() && logits.rank() == 2 && logits.dim(1) >= 1,
          "cuda sample_rows: logits must be [N, V], got {}", shape_str(logits.shape()));
    check_row_sampling(how, draws, logits.dim(0), "cuda sample_rows");
    const bool gumbel = how.rule == RowSampling::Rule::Gumbel;
    if ((gumbel && how.temperature > 0) || logits.device() != Device::CUDA) return Backend::sample_rows(logits, how, draws);
    need(logits, DType::BF16, "sample_rows", "the logits");
    const int64_t V = logits.dim(1), n = int64_t(draws.size());
    check(n < (int64_t(1) << 31), "cuda sample_rows: {} draws is too many for one launch", n);
    std::vector<TokenChoice> out(draws.size());
    if (n == 0) return out;
    std::vector<cuda::SampleDraw> hd(draws.size());
    for (size_t i = 0; i < draws.size(); ++i) hd[i] = {draws[i].row, draws[i].uncond_row, draws[i].u};
    Tensor dd = empty(DType::U8, {int64_t(hd.size() * sizeof(cuda::SampleDraw))});
    check_cuda(cudaMemcpyAsync(dd.data(), hd.data(), dd.nbytes(), cudaMemcpyHostToDevice, stream_),
               "sample_rows (draws)");
    Tensor sup;
    if (!how.suppress.empty()) {
      sup = empty(DType::I64, {int64_t(how.suppress.size())});
      check_cuda(cudaMemcpyAsync(sup.data(), how.suppress.data(), sup.nbytes(), cudaMemcpyHostToDevice, stream_),
                 "sample_rows (suppress)");
    }
    Tensor scratch = empty(DType::F32, {n, V});
    Tensor res = empty(DType::U8, {n * int64_t(sizeof(cuda::SampleResult))});
    cuda::SampleRowsArgs a{};
    a.logits = logits.data<bf16_t>();
    a.V = V;
    a.draws = static_cast<const cuda::SampleDraw*>(dd.data());
    a.n = int(n);
    a.gumbel = gumbel;
    a.temperature = how.temperature;
    a.top_p = how.top_p;
    a.top_k = how.top_k;
    a.confidence = int(how.confidence);
    a.cfg_scale = how.cfg_scale;
    a.suppress = sup.defined() ? sup.data<int64_t>() : nullptr;
    a.n_suppress = int(how.suppress.size());
    a.scratch = scratch.data<float>();
    a.out = static_cast<cuda::SampleResult*>(res.data());
    const int64_t partial_bytes = cuda::sample_rows_partial_bytes(a);
    Tensor partials = partial_bytes > 0 ? empty(DType::U8, {partial_bytes}) : Tensor();
    a.partials = partials.defined() ? partials.data() : nullptr;
    cuda::launch_sample_rows(a, stream_);
    std::vector<cuda::SampleResult> hr(draws.size());
    check_cuda(cudaMemcpyAsync(hr.data(), res.data(), res.nbytes(), cudaMemcpyDeviceToHost, stream_), "sample_rows");
    check_cuda(cudaStreamSynchronize(stream_), "sample_rows");
    for (size_t i = 0; i < hr.size(); ++i) {
      check(hr[i].token >= 0, "cuda sample_rows: draw {} (logits row {}) has no finite logit, or a NaN or infinite one", i,
            draws[i].row);
      out[i] = TokenChoice{hr[i].token, hr[i].prob, hr[i].confidence};
    }
    return out;
  }

 private:
  // Whether attention_slots takes the native path (see there): DIFFULEX_SLOT_ATTENTION=1 (read on every call, so a
  // test may switch it), bf16 activations, head dims the fa2 kernel has, no fp8 cache, no capture in progress.
  bool native_slot_attention(const Tensor& q, const std::vector<AttnSlotRef>& slots) {
    const char* flag = std::getenv("DIFFULEX_SLOT_ATTENTION");
    if (!flag || std::strcmp(flag, "1") != 0) return false;
    if (slots.empty() || slots.size() > 65535 || q.dtype() != DType::BF16 || !cuda::flash_attention_supports(q.dim(2)))
      return false;
    for (const AttnSlotRef& s : slots)
      if (s.k_cache.defined() && s.k_cache.dtype() != DType::BF16) return false;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(stream_, &capture), "attention_slots (capture status)");
    return capture == cudaStreamCaptureStatusNone;
  }

  // With DIFFULEX_CUDA_SYNC=1, wait after every op so that a kernel fault is reported by the op that caused it.
  void after(const char* op) {
    if (sync_each_op_) check_cuda(cudaStreamSynchronize(stream_), op);
  }

  // RoPE's positions on the device: a device tensor as it is (a captured layer stack's input buffer), a host one
  // through the positions mirror (uploaded when its content changes: once per forward, not per layer).
  const int64_t* device_positions(const Tensor& positions) {
    if (positions.device() == Device::CUDA) return positions.data<int64_t>();
    return static_cast<const int64_t*>(
        positions_.get(positions.data(), size_t(positions.numel()) * 8, *alloc_, stream_, "rope (positions)"));
  }

  // inv_freq[i] = 1 / theta^(2i/D) in float32, as the CPU reference computes it; cached per (theta, D).
  const float* inv_freq(double theta, int64_t D) {
    auto key = std::make_pair(theta, D);
    auto it = inv_freq_.find(key);
    if (it == inv_freq_.end()) {
      Tensor host = Tensor::zeros(DType::F32, {D / 2});
      for (int64_t i = 0; i < D / 2; ++i)
        host.data<float>()[i] = float(1.0 / std::pow(theta, double(2 * i) / double(D)));
      it = inv_freq_.emplace(key, upload(host)).first;
    }
    return it->second.data<float>();
  }

  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<cuda::DeviceAllocator> alloc_;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::unique_ptr<cuda::DenseLinalg> linalg_;
  HostMirror ids_, positions_, mask_;
  HostMirror rows_;  // gather_rows
  std::map<std::pair<double, int64_t>, Tensor> inv_freq_;
  bool sync_each_op_ = false;
};

CudaBackend& as_cuda(Backend& be) {
  auto* c = dynamic_cast<CudaBackend*>(&be);
  check(c != nullptr, "backend '{}' is not the CUDA backend", be.name());
  return *c;
}

}  // namespace

void cuda_set_w4a16_path(Backend& be, const std::string& mode) { as_cuda(be).set_w4a16_path(mode); }
void cuda_set_w4a16_splits(Backend& be, int splits) { as_cuda(be).set_w4a16_splits(splits); }
int cuda_w4a16_wgmma_planned_splits(int64_t M, int64_t N, int64_t K, int64_t group_size) {
  return cuda::w4a16_wgmma_plan(M, N, K, group_size).splits;
}
void cuda_set_w4a16_tma_weights(bool on) { cuda::w4a16_wgmma_set_tma_weights(on); }
void cuda_set_w4a16_swiglu(bool on) { w4a16_swiglu_flag() = on; }
bool cuda_w4a16_swiglu() { return w4a16_swiglu_flag(); }
void cuda_set_attention_split_kv(int mode) { cuda::set_attention_split_kv(mode); }
int cuda_attention_split_kv_mode() { return cuda::attention_split_kv_mode(); }
int cuda_attention_kv_splits(int64_t B, int64_t Lq, int64_t S, int64_t Hq, int64_t D, int64_t block, int64_t q_offset) {
  return cuda::attention_kv_splits(B, Lq, S, Hq, D, block, q_offset);
}
bool cuda_w4a16_tma_weights() { return cuda::w4a16_wgmma_tma_weights(); }
std::string cuda_w4a16_choice(const Backend& be, int64_t N, int64_t K, int64_t group_size, int64_t M) {
  return as_cuda(const_cast<Backend&>(be)).w4a16_choice(N, K, group_size, M).path;
}
int cuda_w4a16_choice_splits(const Backend& be, int64_t N, int64_t K, int64_t group_size, int64_t M) {
  return as_cuda(const_cast<Backend&>(be)).w4a16_choice(N, K, group_size, M).splits;
}
int cuda_w4a16_last_wgmma_splits(const Backend& be) {
  return as_cuda(const_cast<Backend&>(be)).w4a16_last_wgmma_splits();
}
void cuda_set_w4a16_tune_splits(bool on) { w4a16_tune_splits_flag() = on; }
bool cuda_w4a16_tune_splits() { return w4a16_tune_splits_flag(); }
std::vector<W4A16Choice> cuda_w4a16_choices(const Backend& be) {
  return as_cuda(const_cast<Backend&>(be)).w4a16_choices();
}
bool cuda_w4a16_wgmma_available() { return cuda::w4a16_wgmma_available(); }

bool cuda_available(std::string* why) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = fmt::format("no usable CUDA device ({})", cudaGetErrorString(e));
    (void)cudaGetLastError();
    return false;
  }
  if (n == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    (void)cudaGetLastError();
    if (why) *why = "cannot query CUDA device 0";
    return false;
  }
  if (prop.major < 9) {
    if (why)
      *why = fmt::format("device 0 ({}) is sm_{}{}; this build targets sm_90 (Hopper) and later", prop.name,
                         prop.major, prop.minor);
    return false;
  }
  return true;
}

std::unique_ptr<Backend> make_cuda_backend() {
  std::string why;
  check(cuda_available(&why), "cuda: {}", why);
  return std::make_unique<CudaBackend>();
}

CudaMemoryStats cuda_memory_stats(Backend& be) {
  CudaBackend& c = as_cuda(be);
  const cuda::AllocatorStats s = c.allocator().stats();
  CudaMemoryStats m;
  m.weight_bytes = s.weight_bytes;
  m.activation_bytes = s.active_bytes;
  m.activation_peak_bytes = s.peak_active_bytes;
  m.activation_cached_bytes = s.cached_bytes;
  size_t free_b = 0, total_b = 0;
  check_cuda(cudaMemGetInfo(&free_b, &total_b), "memory query");
  m.device_used_bytes = total_b - free_b;
  m.device_total_bytes = total_b;
  return m;
}

void cuda_reset_peak(Backend& be) { as_cuda(be).allocator().reset_peak(); }

void cuda_synchronize(Backend& be) { check_cuda(cudaStreamSynchronize(as_cuda(be).stream()), "synchronize"); }

struct CudaEventTimer::Impl {
  cudaStream_t stream;
  std::vector<cudaEvent_t> events;
  size_t used = 0;
};

CudaEventTimer::CudaEventTimer(Backend& be) : impl_(std::make_unique<Impl>()) { impl_->stream = as_cuda(be).stream(); }

CudaEventTimer::~CudaEventTimer() {
  for (cudaEvent_t e : impl_->events) (void)cudaEventDestroy(e);
}

void CudaEventTimer::mark() {
  if (impl_->used == impl_->events.size()) {
    cudaEvent_t e;
    check_cuda(cudaEventCreate(&e), "timer event");
    impl_->events.push_back(e);
  }
  check_cuda(cudaEventRecord(impl_->events[impl_->used++], impl_->stream), "timer event");
}

std::vector<double> CudaEventTimer::intervals_ms() {
  std::vector<double> out;
  if (impl_->used < 2) return out;
  check_cuda(cudaEventSynchronize(impl_->events[impl_->used - 1]), "timer");
  for (size_t i = 0; i + 1 < impl_->used; ++i) {
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, impl_->events[i], impl_->events[i + 1]), "timer");
    out.push_back(ms);
  }
  return out;
}

void CudaEventTimer::clear() { impl_->used = 0; }

double cuda_graph_time_ms(Backend& be, const std::function<void(int)>& call, int calls, int reps, bool* graphed) {
  check(calls > 0 && reps > 0, "cuda graph timing: {} calls and {} replays", calls, reps);
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  check_cuda(cudaStreamIsCapturing(as_cuda(be).stream(), &capturing), "graph timing");
  check(capturing == cudaStreamCaptureStatusNone, "cuda graph timing: the stream is being captured already");
  std::unique_ptr<Backend::Graph> graph;
  try {
    graph = be.capture([&] {
      for (int i = 0; i < calls; ++i) call(i);
    });
  } catch (const Error& e) {
    log_info("cuda graph timing: the calls could not be captured ({}); timing them eagerly", e.what());
  }
  if (graphed) *graphed = graph != nullptr;
  CudaEventTimer timer(be);
  std::vector<double> ms;
  if (graph) {
    graph->replay();  // warm-up
    timer.mark();
    for (int r = 0; r < reps; ++r) {
      graph->replay();
      timer.mark();
    }
    for (double t : timer.intervals_ms()) ms.push_back(t / calls);
  } else {
    call(0);  // warm-up
    timer.mark();
    for (int r = 0; r < reps; ++r)
      for (int i = 0; i < calls; ++i) {
        call(i);
        timer.mark();
      }
    ms = timer.intervals_ms();
  }
  return median(std::move(ms));
}

double cuda_measure_copy_gbps(Backend& be, size_t bytes, int reps) {
  CudaBackend& c = as_cuda(be);
  Tensor a = cuda_random_tensor(be, DType::F32, {int64_t(bytes / 4)}, 7, 0.0f, 1.0f);
  Tensor b = cuda_random_tensor(be, DType::F32, {int64_t(bytes / 4)}, 8, 0.0f, 1.0f);
  CudaEventTimer timer(be);
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {
    timer.clear();
    timer.mark();
    check_cuda(cudaMemcpyAsync(b.data(), a.data(), a.nbytes(), cudaMemcpyDeviceToDevice, c.stream()), "copy ceiling");
    timer.mark();
    if (r > 0) ms.push_back(timer.intervals_ms()[0]);  // r = 0 is the warm-up
  }
  return 2.0 * double(a.nbytes()) / (median(ms) * 1e-3) / 1e9;
}

double cuda_measure_bf16_tflops(Backend& be, int64_t n, int reps) {
  CudaBackend& c = as_cuda(be);
  Tensor x = cuda_random_tensor(be, DType::BF16, {n, n}, 11, 0.0f, 1.0f);
  Tensor w = cuda_random_tensor(be, DType::BF16, {n, n}, 12, 0.0f, 1.0f);
  Tensor y = be.empty(DType::BF16, {n, n});
  CudaEventTimer timer(be);
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {
    timer.clear();
    timer.mark();
    c.gemm().bf16(x.data(), w.data(), nullptr, y.data(), n, n, n);
    timer.mark();
    if (r > 0) ms.push_back(timer.intervals_ms()[0]);
  }
  return 2.0 * double(n) * double(n) * double(n) / (median(ms) * 1e-3) / 1e12;
}

Tensor cuda_random_tensor(Backend& be, DType dtype, Shape shape, uint64_t seed, float mean, float std) {
  CudaBackend& c = as_cuda(be);
  check(dtype == DType::BF16 || dtype == DType::F32, "cuda random tensor: dtype {} is not BF16 or F32",
        dtype_name(dtype));
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  auto block = c.allocator().weight(size_t(n) * dtype_size(dtype), "random weights");
  cuda::launch_fill_random(block.get(), dtype == DType::BF16 ? Elt::BF16 : Elt::F32, n, seed, mean, std, c.stream());
  void* p = block.get();
  return Tensor(dtype, std::move(shape), p, std::move(block), Device::CUDA);
}

}  // namespace dlx
#endif  // DIFFULEX_HAVE_CUDA
