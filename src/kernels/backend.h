// The kernel interface. The model code calls only these ops; each backend (cpu/, cuda/)
// implements them for its own memory. Activations use the backend's act_dtype() (F32 on the CPU);
// weights arrive as stored in the checkpoint (bf16/fp16/f32 dense, or a PackedWeight for quantized kinds).
//
// Shapes (T = tokens = B*L, H = hidden, D = head dim):
//   embedding  ids I64 [T] (host) , table [V, H]            -> out [T, H]
//   rmsnorm    x [T, H], weight [H]                         -> out [T, H]   (may alias x)
//   matmul     x [M, K], w [N, K] dense, bias [N] or none   -> y [M, N]     y = x w^T + b
//   matmul_packed  same with a PackedWeight                  -> y [M, N]
//   rope       x [T, heads, D] in place, positions I64 [T] (host), rotate-half layout
//   attention  q [B, Lq, Hq, D], k/v [B, S, Hkv, D], key_mask U8 [B, S] (1 = attend) or none -> out [B, Lq, Hq, D]
//              bidirectional (no causal mask); Hq must be a multiple of Hkv (grouped-query attention)
//   attention_block_causal  the same with block diffusion's mask: query i (sequence index q_offset + i) attends
//              to the keys j < (floor((q_offset + i) / block) + 1) * block that key_mask allows (its own block and
//              every earlier one; keys are sequence indices 0..S-1)
//   silu_mul   gate [T, I], up [T, I]                       -> out [T, I]   out = silu(gate) * up
//   add        x [..] += y [..]
//   copy       dst [..] = src [..]  (same dtype and element count; views made by slice_rows)
//   silu_mul_fused  gate_up [T, 2I] (gate columns, then up)      -> out [T, I]   out = silu(gate) * up
//   matmul_packed_swiglu  x [M, K], w packed [2I, K] (gate rows, then up), no bias -> out [M, I]: matmul_packed into
//              [M, 2I], then silu_mul_fused (a backend may fuse them: the same values up to the fp32 summation order
//              of the product)
//   split_columns  x [T, N] -> outs[i] [T, n_i] (contiguous), sum n_i = N: the column blocks of x in order
//   add_rmsnorm  h [T, H] += y [T, H], then out [T, H] = rmsnorm(h, weight)   (the residual add and the next norm)
//   qkv_rope  qkv [T, Nq + 2 Nkv] (fused q/k/v GEMM output) -> q [T, Hq, D], k [T, Hkv, D] rotated as rope, v [T, Nkv]
//   gather_rows  x [T, H], rows (host list of indices in [0, T))    -> out [R, H]   out[r] = x[rows[r]]
//   sample_rows  logits [N, V] (this backend's memory), draws        -> one TokenChoice per draw (host); see
//                kernels/row_sampling.h for the row pipeline (softmax, top-k / top-p, argmax or draw, confidence)
//   kv_quantize_fp8    src [N, heads*D] act -> dst F8_E4M3 [N, heads*D], scales F32 [N, heads]   (fp8 KV cache)
//                      per (n, head): scale = max|x| / 448 (0 for an all-zero head), dst = e4m3(x * (448 / max|x|)),
//                      round to nearest even, saturating
//   kv_dequantize_fp8  src F8_E4M3 [N, heads*D], scales F32 [N, heads] -> dst act [N, heads*D] = scale * float(src)
//
// Dense linear algebra for the quantizer (src/quant/, docs/QUANTIZER.md "Where the work runs"), row-major, in this
// backend's memory unless said otherwise:
//   gram_accumulate  x [T, K] (act_dtype or F32), h F32 [K, K]     -> h += x^T x; only the upper triangle
//                    (h[i][j], j >= i) is defined afterwards, products of the inputs summed in fp32
//   gemm_f32         c[m, n] = alpha * op(a)[m, k] * op(b)[k, n] + beta * c, F32 pointers with leading
//                    dimensions lda/ldb/ldc (elements); op(a) = a^T when trans_a (a is then stored [k, m])
//   cholesky_inverse_upper  h F64 [n, n] on the host, symmetric -> in place the upper triangular U with
//                    h^{-1} = U^T U (GPTQ's Hinv), strict lower triangle zero; false (h unspecified) when h is not
//                    numerically positive definite. The factorization runs where the backend runs (fp64).
//   zero             t: every byte 0 (a fresh accumulator without a host buffer or upload)
//   symmetric_scaled upper F32 [k, k] (only its upper triangle read) -> out F32 [k, k], the whole symmetric matrix:
//                    out[i][j] = float(f * double(upper[min(i, j)][max(i, j)]))  (the error report's H from the sums)
//   dot_f64          a, b F32 with the same element count -> sum a[i] * b[i], products and sums in fp64, returned
//                    to the host (the only value that leaves the backend); blocked, so the order is fixed
//   column_abs_sum   x [T, K] (act_dtype or F32), sum (host, K doubles) -> sum[c] += |x[t][c]| over the rows in
//                    order, in fp64: the host's running sum continued exactly, chunk after chunk (AWQ's mean |x|
//                    per channel); only 2 K doubles cross
//   scale_columns    x [T, K] act, mul F32 [K] (this backend's memory) -> out [T, K] act, out = act(x[t][c] * mul[c])
//                    (an fp32 product rounded once: AWQ's stand-ins dividing their input by s)
//   fake_quant       w F32 [n, k], s F32 [k] or undefined (all ones) -> out F32 [n, k]: per row and group of
//                    grid.group_size columns, v = w[r][c] * s[c] (fp32), the group's RTN grid from min and max of v
//                    (quant/methods/rtn.h params_from_range: fp16 scales, the same zero rules), then
//                    out = scale * (clamp(round_half_even(v / scale) + zero, 0, maxq) - zero) / s[c], minus w[r][c]
//                    when minus_w (the weight error); bit for bit what the host's fake_quant_scaled computes (AWQ's
//                    candidates). Throws when a scale does not fit fp16.
//   synchronize      waits for every op enqueued so far (the phase timers' precise mode); a no-op on the CPU
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/packed_weight.h"
#include "kernels/row_sampling.h"

namespace dlx {

// The RTN grid of Backend::fake_quant (the fields of quant/methods/rtn.h QuantScheme).
struct FakeQuantGrid {
  int bits = 4;
  int64_t group_size = 128;
  bool sym = true, include_zero = true;
  int min_zero = 0;
};

// One sequence of Backend::attention_slots: its window is rows [row, row + width) of the pass's q, k, v and out
// and positions [begin, begin + width) of its sequence.
struct AttnSlotRef {
  int64_t row = 0, width = 0, begin = 0;
  // U8 with one byte per key (1 = attend; the cache's L, or `width` without a cache), on the host or in the
  // backend's memory; undefined: every key.
  Tensor key_mask;
  // [1, L, Hkv, D] each, in act_dtype() or F8_E4M3; undefined: no cache (the window is the whole sequence, begin 0,
  // and its keys are its own rows of k and v).
  Tensor k_cache, v_cache;
  Tensor k_scale, v_scale;  // F8_E4M3 caches only: F32 [1, L, Hkv]
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual DType act_dtype() const = 0;

  // The device's memory as a whole (other processes included): free and total bytes. The host backend has no
  // device memory to budget and answers {0, 0}.
  struct MemoryInfo {
    size_t free_bytes = 0, total_bytes = 0;
  };
  virtual MemoryInfo device_memory() { return {}; }
  // Which linears of a layer the model should run as one (one GEMM of the summed width): the dense gate/up and
  // q/k/v weights (held as one weight), and the packed q/k/v and gate/up linears. The host backend fuses none.
  struct Fusion {
    bool gate_up = false, qkv = false, packed = false;
  };
  virtual Fusion fusion() const { return {}; }

  // A buffer in this backend's memory (contents undefined).
  virtual Tensor empty(DType dtype, Shape shape) = 0;
  // A weight in this backend's memory: the CPU returns the (mmap'd) host tensor itself.
  virtual Tensor upload(const Tensor& host) = 0;
  // An activation copied to a host F32 tensor.
  virtual Tensor to_host_f32(const Tensor& t) = 0;
  // A host tensor (F32) copied into an activation buffer of act_dtype().
  virtual Tensor from_host_f32(const Tensor& host) = 0;

  virtual void embedding(const Tensor& ids, const Tensor& table, Tensor& out) = 0;
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) = 0;
  virtual void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) = 0;
  virtual void matmul_packed(const Tensor& x, const PackedWeight& w, const Tensor* bias, Tensor& y) = 0;
  // A packed weight in this backend's memory and preferred layout, converted once at load (PackedWeight::layout).
  // The default uploads the canonical tensors as they are.
  virtual PackedWeight upload_packed(const PackedWeight& host) {
    PackedWeight d = host;
    d.qweight = upload(host.qweight);
    d.scales = upload(host.scales);
    d.zeros = upload(host.zeros);
    if (host.perm.defined()) d.perm = upload(host.perm);
    return d;
  }
  virtual void rope(Tensor& x, const Tensor& positions, double theta) = 0;
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask, Tensor& out) = 0;
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  virtual void add(Tensor& x, const Tensor& y) = 0;
  virtual void copy(const Tensor& src, Tensor& dst) = 0;

  // ---- Ops with a generic implementation (backend.cc) that a backend may replace ----
  // Generic: add, then rmsnorm (a fused kernel must give the same h and out bit for bit).
  virtual void add_rmsnorm(Tensor& h, const Tensor& y, const Tensor& weight, float eps, Tensor& out);
  // Generic: split_columns, then rope on q and k. `positions` as for rope.
  virtual void qkv_rope(const Tensor& qkv, const Tensor& positions, double theta, Tensor& q, Tensor& k, Tensor& v);
  // Copies `blocks` equal blocks of rows: block b of src [blocks * n, C] (its rows [b n, (b + 1) n)) into rows
  // [b * stride + offset, b * stride + offset + n) of dst [R, C] (same dtype; stride >= n; the last block inside
  // dst). A batch's window of keys or values into its KV cache [B, L, ...] (stride L, offset the window's begin).
  // Generic: one copy() per block (CUDA: one kernel for all blocks).
  virtual void copy_row_blocks(const Tensor& src, int64_t blocks, Tensor& dst, int64_t stride, int64_t offset);
  // Enqueues a copy of a host tensor's bytes into `dst` (this backend's memory, same dtype and element count); the
  // host tensor may change once the call returns. Generic: dst on the host, a memcpy.
  virtual void copy_from_host(const Tensor& host, Tensor& dst);
  // Records the ops that `body` issues as one replayable graph (CUDA graphs): nothing runs during capture; the
  // replay runs them on the same buffers (any buffer the body allocates belongs to the graph from then on).
  // Null when the backend cannot capture (the generic answer; the CUDA backend with DIFFULEX_CUDA_SYNC=1). The
  // body must not synchronize or copy to or from the host; an error inside it ends the capture and is rethrown.
  class Graph {
   public:
    virtual ~Graph() = default;
    virtual void replay() = 0;
  };
  virtual std::unique_ptr<Graph> capture(const std::function<void()>& body);
  // Generic: through to_host_f32 / from_host_f32 (on the CPU these are the tensors themselves).
  virtual void silu_mul_fused(const Tensor& gate_up, Tensor& out);
  // Generic: matmul_packed into a buffer of out's dtype, then silu_mul_fused (CUDA: the wgmma W4A16 kernel's SwiGLU
  // epilogue where it runs).
  virtual void matmul_packed_swiglu(const Tensor& x, const PackedWeight& w, Tensor& out);
  virtual void split_columns(const Tensor& x, const std::vector<Tensor*>& outs);
  // Generic: one attention() per (batch row, query block) over the key prefix that block sees, on contiguous
  // views of q, k, v and out (so every backend's attention kernel serves it); block <= 0 is attention().
  virtual void attention_block_causal(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* key_mask,
                                      int64_t block, int64_t q_offset, Tensor& out);
  // Attention of a ragged continuous-batching pass (Model::forward_slots): q [T, Hq, D], k / v [T, Hkv, D] hold
  // every slot's window rows concatenated; for each slot its window's keys and values go into its own KV cache
  // (quantized for an fp8 cache) and its queries attend block-causally (block > 0, queries at sequence indices
  // begin..) or bidirectionally to its cache (without a cache: to its own window), writing its rows of out
  // [T, Hq, D]. Rows of out that belong to no slot are left as they are. Generic: one slot after the other with
  // copy / kv_quantize_fp8 and attention_block_causal (what a one-slot pass runs); check_attn_slots first.
  virtual void attention_slots(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<AttnSlotRef>& slots,
                               int64_t block, Tensor& out);
  virtual void gather_rows(const Tensor& x, const std::vector<int64_t>& rows, Tensor& out);
  // Generic: the logits go to the host and sample_rows_host runs there (the CPU backend's implementation).
  virtual std::vector<TokenChoice> sample_rows(const Tensor& logits, const RowSampling& how,
                                               const std::vector<RowDraw>& draws);
  // fp8 KV cache (model.h KvCache::fp8).
  virtual void kv_quantize_fp8(const Tensor& src, int64_t heads, Tensor& dst, Tensor& scales) = 0;
  virtual void kv_dequantize_fp8(const Tensor& src, const Tensor& scales, int64_t heads, Tensor& dst) = 0;
  // Quantizer linear algebra (see the table above).
  virtual void gram_accumulate(const Tensor& x, Tensor& h) = 0;
  virtual void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                        int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) = 0;
  virtual bool cholesky_inverse_upper(double* h, int64_t n) = 0;
  virtual void zero(Tensor& t) = 0;
  virtual void symmetric_scaled(const Tensor& upper, double f, Tensor& out) = 0;
  virtual double dot_f64(const Tensor& a, const Tensor& b) = 0;
  virtual void column_abs_sum(const Tensor& x, std::vector<double>& sum) = 0;
  virtual void scale_columns(const Tensor& x, const Tensor& mul, Tensor& out) = 0;
  virtual void fake_quant(const Tensor& w, const Tensor& s, const FakeQuantGrid& grid, bool minus_w, Tensor& out) = 0;
  virtual void synchronize() {}
  // Same inputs, same outputs from run to run: where the backend picks kernels by timing them (CUDA: cuBLASLt's
  // algorithm tuner and the W4A16 path tuner), it takes a fixed choice instead, since another kernel rounds bf16
  // results differently. The quantizer turns it on (docs/QUANTIZER.md: AWQ's searches pick other scales otherwise).
  virtual void set_reproducible(bool) {}

 protected:
  // attention_slots' generic work on slots check_attn_slots has accepted (a backend whose own version falls back to
  // it after checking calls this, not the checking attention_slots).
  void attention_each_slot(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<AttnSlotRef>& slots,
                           int64_t block, Tensor& out);
};

// The shapes an fp8 KV op needs (the same element count in src and dst, whole rows per scale, whole heads per row
// of scales); `who` names the backend and op in the error, e.g. "cuda kv_quantize_fp8".
void check_kv_fp8_shapes(const char* who, const Tensor& src, const Tensor& dst, const Tensor& scales, int64_t heads);

// The arguments of Backend::copy_row_blocks (see there); returns the rows per block. Throws Error naming `op`.
int64_t check_row_blocks(const char* op, const Tensor& src, int64_t blocks, const Tensor& dst, int64_t stride,
                         int64_t offset);

// The arguments of Backend::attention_slots: q / out [T, Hq, D] alike, k / v [T, Hkv, D] with Hq a multiple of Hkv;
// per slot a window of rows inside [0, T) overlapping no other slot's, begin + width inside its cache, caches of
// [1, L, Hkv, D] (with F32 [1, L, Hkv] scales when fp8) that share no memory with another slot's, a U8 key mask of
// one byte per key. Throws Error naming `who`, the slot and the field.
void check_attn_slots(const char* who, const Tensor& q, const Tensor& k, const Tensor& v,
                      const std::vector<AttnSlotRef>& slots, const Tensor& out);

// "cpu" (or "cuda" when built with CUDA). Throws Error listing the available backends otherwise.
std::unique_ptr<Backend> make_backend(const std::string& name);

}  // namespace dlx
