// Host-side entry points of the CUDA kernels (the *.cu files). Plain C++: the backend (cuda_backend.cc) checks
// shapes and dtypes and passes raw device pointers here; each launcher enqueues its kernel(s) on `stream` and
// checks the launch, throwing dlx::Error that names the op (see cuda_check.h).
//
// Activations are bf16 (passed as uint16_t* so that this header needs no CUDA type headers). Weights that a
// kernel reads elementwise (embedding table, norm weight, bias) come in any float dtype listed by Elt.
#pragma once
#include <cstdint>
#include <cstring>

#include <cuda_runtime_api.h>

namespace dlx::cuda {

using bf16_t = uint16_t;  // raw bf16 bits in device memory

enum class Elt : int { BF16 = 0, F16 = 1, F32 = 2 };

// The kernels move 16 bytes per access where every pointer allows it.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// out[t, :] = table[ids[t], :]   (ids device I64 [T], already range-checked on the host)
void launch_embedding(const int64_t* ids, const void* table, Elt table_type, int64_t T, int64_t H, bf16_t* out,
                      cudaStream_t stream);

// out[t, :] = w * x[t, :] / sqrt(mean(x[t, :]^2) + eps)   (fp32 math; out may alias x)
void launch_rmsnorm(const bf16_t* x, const void* w, Elt w_type, int64_t T, int64_t H, float eps, bf16_t* out,
                    cudaStream_t stream);

// Rotate-half RoPE in place on x [T, heads, D] (D <= 256): pair i of token t turns by the angle
// float(positions[t]) * inv_freq[i] (cos and sin taken in double), positions and inv_freq on the device.
void launch_rope(bf16_t* x, int64_t T, int64_t heads, int64_t D, const int64_t* positions, const float* inv_freq,
                 cudaStream_t stream);

// Grouped-query attention, flash style. mask: device U8 [B, S] or null. block > 0 makes it block-causal (block
// diffusion, Backend::attention_block_causal): query i sits at sequence index q_offset + i and sees the keys before
// the end of its block, min(S, ((q_offset + i) / block + 1) * block); key tiles past the last row's end are never
// read. block <= 0: bidirectional (every key). Head dims that are multiples
// of 8 up to 128 run the register-resident mma.sync kernel (flash_attention.cu), up to 256 the WMMA kernel with
// shared-memory accumulators (attention.cu), each padded to its next instantiated width with zero columns.
// attention_supports_head_dim is false for any other D.
// Split-KV (flash_attention.cu; splits > 1, head dims up to 128 only): the key tiles of each query tile are divided
// among `splits` blocks, each writing its unnormalized rows with their running max and sum to `part`
// (attention_split_kv_bytes), and a second launch merges them into out. For short query windows over many keys (a
// B = 1 decoding step: 28 heads x one query tile are 28 blocks on 132 SMs). attention_kv_splits says how many for a
// shape: 1 (unsplit) unless DIFFULEX_ATTENTION_SPLIT_KV (or set_attention_split_kv) asks for it: "1" the rule in
// flash_attention.cu (only where the unsplit grid leaves SMs idle), n >= 2 that many wherever there are two key tiles.
bool attention_supports_head_dim(int64_t D);
void launch_attention(const bf16_t* q, const bf16_t* k, const bf16_t* v, const uint8_t* mask, bf16_t* out, int64_t B,
                      int64_t Lq, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t block, int64_t q_offset,
                      int splits, float* part, cudaStream_t stream);
bool flash_attention_supports(int64_t D);
void launch_flash_attention(const bf16_t* q, const bf16_t* k, const bf16_t* v, const uint8_t* mask, bf16_t* out,
                            int64_t B, int64_t Lq, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t block,
                            int64_t q_offset, int splits, float* part, cudaStream_t stream);
int attention_kv_splits(int64_t B, int64_t Lq, int64_t S, int64_t Hq, int64_t D, int64_t block, int64_t q_offset);
size_t attention_split_kv_bytes(int64_t B, int64_t Lq, int64_t Hq, int64_t D, int splits);
// -1: the rule; 0 (default) or 1: never; n >= 2: n splits (process-wide; a test and measurement knob).
void set_attention_split_kv(int mode);
int attention_split_kv_mode();

// A ragged pass's attention (Backend::attention_slots) in two launches (flash_attention.cu), each slot described by
// one AttnSlotDesc in device memory: its queries are rows [row, row + width) of q / out [T, Hq, D]; its keys and
// values are `keys` rows [keys, Hkv, D] at k / v (its cache, or its own window rows of the pass's k / v), its key
// mask `mask` [keys] or null, its first query at sequence index q_offset (block-causal).
struct AttnSlotDesc {
  int64_t row, width, keys, q_offset;
  bf16_t* k;
  bf16_t* v;
  const uint8_t* mask;
  int64_t cached;  // 1: k / v are the slot's cache, written by launch_kv_write_slots; 0: its window rows
};
// For every cached slot: rows [row, row + width) of k / v [T, row_elems] into rows [q_offset, q_offset + width) of
// its cache. max_width: the widest slot. Pointers 16-byte aligned, row_elems a multiple of 8.
void launch_kv_write_slots(const AttnSlotDesc* slots, int n, const bf16_t* k, const bf16_t* v, int64_t row_elems,
                           int64_t max_width, cudaStream_t stream);
// One flash-attention launch over all n slots (head dims flash_attention_supports): the D <= 128 kernel with the
// slot as blockIdx.z; query tiles past a slot's width exit at once.
void launch_attention_slots(const bf16_t* q, const AttnSlotDesc* slots, int n, bf16_t* out, int64_t max_width,
                            int64_t Hq, int64_t Hkv, int64_t D, int64_t block, cudaStream_t stream);

// out = silu(gate) * up over n elements (out may alias gate or up).
void launch_silu_mul(const bf16_t* gate, const bf16_t* up, bf16_t* out, int64_t n, cudaStream_t stream);
// out[t, i] = silu(gu[t, i]) * gu[t, I + i]   (gu bf16 [T, 2I]: the fused gate/up GEMM's output)
void launch_silu_mul_fused(const bf16_t* gu, int64_t T, int64_t I, bf16_t* out, cudaStream_t stream);
// out[t, :] = x[t, col : col + n]   (x bf16 [T, N]; out contiguous [T, n])
void launch_split_columns(const bf16_t* x, int64_t T, int64_t N, int64_t col, int64_t n, bf16_t* out,
                          cudaStream_t stream);
// x += y over n elements.
void launch_add(bf16_t* x, const bf16_t* y, int64_t n, cudaStream_t stream);
// y[m, n] += bias[n]   (y bf16 [M, N])
void launch_add_bias(bf16_t* y, const void* bias, Elt bias_type, int64_t M, int64_t N, cudaStream_t stream);
// y[m, n] = bf16(acc[m, n] + bias[n])   (acc F32 [M, N]; bias may be null)
void launch_f32_bias_to_bf16(const float* acc, const void* bias, Elt bias_type, int64_t M, int64_t N, bf16_t* y,
                             cudaStream_t stream);
void launch_bf16_to_f32(const bf16_t* in, float* out, int64_t n, cudaStream_t stream);
// Backend::copy_row_blocks in one launch: block b (rows [b rows, (b + 1) rows) of src, row_bytes each, contiguous)
// to rows [b stride_rows + offset_rows, ..) of dst; 16 bytes a thread where rows and pointers allow.
void launch_copy_row_blocks(const void* src, void* dst, int64_t blocks, int64_t rows, int64_t row_bytes,
                            int64_t stride_rows, int64_t offset_rows, cudaStream_t stream);

// The quantizer's device ops (quant_ops.cu; backend.h has their definitions).
// out F32 [k, k] = float(f * double(upper[min(i, j)][max(i, j)])); k / 32 must fit a grid dimension (k < 2^21).
void launch_symmetric_scaled(const float* upper, int64_t k, double f, float* out, cudaStream_t stream);
// *out (device) = sum a[i] * b[i] in fp64: dot_f64_partials() block sums into `partials` (device), then one block.
int dot_f64_partials();
void launch_dot_f64(const float* a, const float* b, int64_t n, double* partials, double* out, cudaStream_t stream);
// out[t][c] = bf16(x[t][c] * mul[c]) (fp32 product, rounded to nearest even), x and out bf16 [t, k].
void launch_scale_columns(const bf16_t* x, const float* mul, int64_t t, int64_t k, bf16_t* out, cudaStream_t stream);
// Backend::fake_quant: one block per (row, group); *bad (device int, zeroed by the caller) set to 1 where a scale
// does not fit fp16. s may be null (all ones).
void launch_fake_quant(const float* w, const float* s, int64_t n, int64_t k, int bits, int64_t group_size, bool sym,
                       bool include_zero, int min_zero, bool minus_w, float* out, int* bad, cudaStream_t stream);
// sum[c] (device fp64) += |x[r][c]| over the t rows in order, x bf16 or F32 [t, k].
void launch_column_abs_sum(const void* x, bool x_bf16, int64_t t, int64_t k, double* sum, cudaStream_t stream);


// dst[i] = mean + std * z_i with z_i approximately standard normal (sum of four uniforms from a hash of (seed, i));
// dst is BF16 or F32. Random weights for the bench and test inputs.
void launch_fill_random(void* dst, Elt type, int64_t n, uint64_t seed, float mean, float std, cudaStream_t stream);

// Low-bit linear on a PackedWeight (kernels/packed_weight.h): y[M, N] = x[M, K] (columns permuted by perm when
// perm != null) · W^T (+ bias), W[n, k] = scales[n, g] * q[n, k] - zeros[n, g], g = k / group_size. fp32
// accumulation; the codes are unpacked in registers (see qgemm.cu).
struct QGemmArgs {
  const bf16_t* x;
  int64_t M, K, N;
  const uint32_t* qweight;  // [N, K*bits/32]
  int bits;
  const float* scales;  // [N, G]
  const float* zeros;   // [N, G]
  int64_t group_size;
  const int32_t* perm;  // [K] or null
  const void* bias;     // [N] or null
  Elt bias_type;
  bf16_t* y;
};
void launch_qgemm(const QGemmArgs& a, cudaStream_t stream);

// --- W4A16 on tensor cores (w4a16_mma.cu; the layout is described there) ------------------------------------------
// Whether the tile layout can hold a 4-bit weight of this K and group size (the zero points are checked by
// w4a16_repack).
bool w4a16_supported(int bits, int64_t K, int64_t group_size);
struct W4A16Dims {
  int64_t np = 0;      // N rounded up to 16
  int64_t kt = 0;      // K / 64 rounded up
  int64_t groups = 0;  // K / group_size
  int64_t tile_words() const { return np / 16 * kt * 128; }
  int64_t sz_words() const { return groups * np; }
};
W4A16Dims w4a16_dims(int64_t N, int64_t K, int64_t group_size);
// Host repack of the canonical PackedWeight tensors (qweight [N, K/8], scales / zeros [N, G]) into tiles
// [tile_words()] and sz [sz_words()]. False (and nothing usable written) when a zero point is not an integer in
// [-128, 127] (zeros / scales), or a zero scale has a nonzero zero term.
bool w4a16_repack(const uint32_t* qweight, const float* scales, const float* zeros, int64_t N, int64_t K,
                  int64_t group_size, uint32_t* tiles, uint32_t* sz);
// Tile configuration and split-K for one call (force_splits > 0 overrides the split count).
struct W4A16Args {
  int64_t M = 0, N = 0, K = 0;
  int mt = 1, nu = 1;  // row tile 16*mt, column tile 128*nu
  int splits = 1, kt_per_split = 0;
  int minb = 2;       // resident blocks per SM the configuration is built for
  bool fold = false;  // scales and zero points applied per group in fp32 (group size a multiple of 128, M <= 32)
  int wg_nt = 0;      // wgmma kernel (w4a16_wgmma.cu): tokens a tile (8, 16, 32, 64, 128, 136, 144, 176, 256)
  int wg_variant = 0;  // wgmma kernel: a W4A16Variant
  int64_t dp_tiles = 0;  // wgmma kernel: the first tiles, whole waves of the persistent grid, run unsplit
  int64_t partial_floats = 0;  // fp32 partial sums split-K needs (w4a16_partial_floats)
};
W4A16Args w4a16_plan(int64_t M, int64_t N, int64_t K, int64_t group_size, int force_splits = 0);
// Floats of fp32 partial sums the call needs (0 without split-K).
size_t w4a16_partial_floats(const W4A16Args& p);
// y[M, N] = x[M, K] · W^T (+ bias); x's columns already in the kernel's order (see launch_w4a16_permute).
void launch_w4a16(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles, const uint32_t* sz, int64_t group_size,
                  const void* bias, Elt bias_type, bf16_t* y, float* partial, cudaStream_t stream);
// The multiprocessors of the current device (read once).
int cuda_sm_count();
// y = bf16(sum over splits of partial[s, M, N] + bias), in a fixed order (deterministic).
void launch_w4a16_splitk_reduce(const float* partial, int splits, int64_t M, int64_t N, const void* bias,
                                Elt bias_type, bf16_t* y, cudaStream_t stream);
// The Hopper kernel on the same tiles (w4a16_wgmma.cu, sm_90a): available only on compute capability 9.0 devices
// of a build that has it; its plan (token tile, split-K) and launch. Same contract as launch_w4a16.
bool w4a16_wgmma_available();
// The wgmma kernel's tile variants (the backend times each one a shape and M bucket has):
// - kWide: the token tile from M (8 ... 128 tokens) and the widest feature block (128 features up to 32 tokens,
//   256 from 64 on): each x tile serves the most weights;
// - kNarrow (M > 32): 128-feature blocks at 64 and 128 tokens, twice the tiles for the narrow shapes at mid M;
// - kTall (M > 128 in "auto"; any M when forced): 256 tokens x 128 features, one m64n256k16 wgmma a k16 slice and
//   warpgroup, half the dequantization per multiply-add of the 128-token tiles, for the tensor-bound large M;
// - kDeep (M <= 32): the 8-32-token tiles of kWide with about twice the stages in flight (9-14 instead of 6-8);
// - kFit (M > 256): kTall's 128-feature tile with 136, 144 or 176 tokens (tuner_key.h fit_token_tile), so that M splits
//   into nearly full token tiles (264 rows: 2 x 144, not 3 x 128 or 2 x 256).
enum W4A16Variant { kW4A16Wide = 0, kW4A16Narrow = 1, kW4A16Tall = 2, kW4A16Deep = 3, kW4A16Fit = 4 };
// The variant a W4A16 path name forces (DIFFULEX_W4A16_PATH, cuda_set_w4a16_path: "wgmma", "wgmma_narrow",
// "wgmma_tall", "wgmma_deep", "wgmma_fit"); -1 for a path that is not the wgmma kernel's.
inline int w4a16_wgmma_variant_of(const char* path) {
  const char* names[] = {"wgmma", "wgmma_narrow", "wgmma_tall", "wgmma_deep", "wgmma_fit"};
  for (int v = 0; v < 5; ++v)
    if (std::strcmp(path, names[v]) == 0) return v;
  return -1;
}
bool w4a16_wgmma_has_variant(int variant, int64_t M);
// How the wgmma kernel's producer loads a stage's weight units and scale words: false (default) by plain bulk
// copies (cp.async.bulk), true by tensor copies through tensor maps (cp.async.bulk.tensor, as the activations
// already are). Same bytes in the same places; the tensor copies are the form compute-sanitizer's racecheck orders
// by the stage's mbarrier (it reports the plain bulk copies as hazards: docs/PERFORMANCE.md). The default comes
// from DIFFULEX_W4A16_TMA_WEIGHTS=1; off until the tensor-copy form has run on a GPU.
void w4a16_wgmma_set_tma_weights(bool on);
bool w4a16_wgmma_tma_weights();
W4A16Args w4a16_wgmma_plan(int64_t M, int64_t N, int64_t K, int64_t group_size, int force_splits = 0,
                           int variant = kW4A16Wide);
void launch_w4a16_wgmma(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles, const uint32_t* sz,
                        int64_t group_size, const void* bias, Elt bias_type, bf16_t* y, float* partial,
                        cudaStream_t stream);
// The same product over a fused [gate; up] weight (N = 2I rows: gate, then up) with SwiGLU in the epilogue: out[M, I]
// = silu(y[:, :I]) * y[:, I:] as launch_w4a16_wgmma into y and launch_silu_mul_fused compute it, without y. p is the
// plan for N; no bias. Bit for bit where the plan splits no tile along K or every tile (dp_tiles 0); otherwise the
// split tiles (the last, partial wave's) hold other rows than in the plain launch (a fused tile is gate and up rows),
// so a row summed as split partials in one is summed in one run in the other: the same product to the fp32 summation
// order, a few outputs one bf16 step apart. Only where w4a16_wgmma_swiglu_supported(N, out) (N % 32 == 0, out
// 16-byte aligned, the weights by plain bulk copies).
bool w4a16_wgmma_swiglu_supported(int64_t N, const void* out);
void launch_w4a16_wgmma_swiglu(const W4A16Args& p, const bf16_t* x, const uint32_t* tiles, const uint32_t* sz,
                               int64_t group_size, bf16_t* out, float* partial, cudaStream_t stream);
// out[m, j] = x[m, perm[j]]
void launch_w4a16_permute(const bf16_t* x, const int32_t* perm, int64_t M, int64_t K, bf16_t* out,
                          cudaStream_t stream);
// The dequantized weight, bf16 w [N, K] (a transient scratch for the large-M cuBLASLt path).
void launch_w4a16_dequant(const uint32_t* tiles, const uint32_t* sz, int64_t N, int64_t K, int64_t group_size,
                          bf16_t* w, cudaStream_t stream);
// fp8 KV cache: per row of D values (rows = positions x kv heads) scale = max|x| / 448, q = e4m3(x * 448 / max)
// (round to nearest even, saturating); dequantize y = bf16(scale * float(q)).
void launch_kv_quantize_fp8(const bf16_t* x, int64_t rows, int64_t D, uint8_t* q, float* scales, cudaStream_t stream);
void launch_kv_dequantize_fp8(const uint8_t* q, const float* scales, int64_t rows, int64_t D, bf16_t* y,
                              cudaStream_t stream);

}  // namespace dlx::cuda
