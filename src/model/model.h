// A loaded model: typed config, weights (views into the mmap'd checkpoint or uploaded to a device), and one
// forward pass shared by Dream and LLaDA:
//   h = embed(ids)
//   per layer:  h += o(attention(rope(q(n1)), rope(k(n1)), v(n1)))   with n1 = rmsnorm(h)   (bidirectional;
//               block-causal for block diffusion, config block_size; SDAR normalizes q and k per head first)
//               h += down(silu(gate(n2)) * up(n2))                    with n2 = rmsnorm(h)
//   logits = lm_head(rmsnorm(h))   (only for the requested rows)
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/linear.h"
#include "kernels/backend.h"
#include "model/arch.h"
#include "model/config.h"

namespace dlx {

struct QuantConfig;

struct LoadOptions {
  std::string device = "cpu";
  // Force a linear family per layer group: "" (what the checkpoint holds), "bf16", "gptq" or "awq".
  std::string attn_weight_family, mlp_weight_family;
  bool dequant_cache = false;
  // "autoawq" (the AutoAWQ gemm nibble order, the default) or "plain" (sequential nibbles: the later public
  // Diffulex's "awq" export, which carries the same names and shapes and so cannot be detected).
  std::string awq_order = "autoawq";
  // Keep the token-embedding table in host memory (a GPU backend then gathers each pass's rows on the host and
  // copies them up: T x hidden x 2 bytes a pass): saves the table's device memory (1.09 GB for Dream-7B).
  bool embed_on_host = false;
  // Quantized tensors (qweight/qzeros/scales/g_idx) whose layer name matches no linear of the model: a warning
  // naming them, or with `strict` an error.
  bool strict = false;
};

// Model::random's choices.
struct RandomModelOptions {
  std::string device = "cpu";
  uint64_t seed = 1;
  // "w4a16": every transformer linear a random packed 4-bit weight (model/random_init.h) of `group_size`
  // (kOneGroupPerRow: one group per row); "none": bf16. The embedding stays bf16.
  std::string quant = "none";
  int64_t group_size = 128;
  // With quant "w4a16": the LM head a packed 4-bit linear too (the same Linear a GPTQModel checkpoint with
  // `lm_head: true` loads as); else it stays bf16.
  bool quant_head = false;
  bool embed_on_host = false;  // as LoadOptions::embed_on_host
};

// Called with the input of each linear layer just before it runs (the quantizer collects calibration statistics).
using LinearObserver = std::function<void(int64_t layer, LinearRole role, const Tensor& input)>;

// One backend op of a forward pass, reported just before it is issued: its name (embedding, rmsnorm, add_rmsnorm,
// matmul_qkv, qkv_rope, split_qkv, qk_norm, rope, kv_write, kv_quantize_fp8, kv_dequantize_fp8, attention, matmul_o,
// add, matmul_gate_up, silu_mul, matmul_down, gather_rows, lm_head, logits_to_host), its layer (-1 outside the layers)
// and its work:
// FLOPs and bytes moved (activations read and written; for a linear also the weight bytes the backend holds).
struct ForwardOp {
  const char* name = nullptr;
  int64_t layer = -1;
  double flops = 0, bytes = 0;
};

// What a forward pass reports as it runs (Model::set_observer); either part may be empty. `linear` sees each
// linear layer's input (a fused q/k/v or gate/up weight reports each of its parts); `op` is called before every
// backend op (the bench times the intervals between the calls).
struct ForwardObserver {
  LinearObserver linear;
  std::function<void(const ForwardOp&)> op;
};

// Block KV cache (Fast-dLLM's approximate cache for bidirectional models): the keys and values of every
// position of every layer, [B, L, Hkv, D] each, in the backend's memory. forward_window() recomputes only a
// window of positions, writes their keys/values into the cache and lets them attend to all L cached positions;
// the other positions' entries are whatever the last pass that covered them wrote (stale by design).
// Block-diffusion models (config block_size > 0) attend block-causally, so a window reads only the entries of its
// own blocks and earlier ones: once a finished block's final pass has written it, the cache is exact there, and
// an empty cache may be filled by a first window [0, end) with end on a block boundary (a prompt prefill).
//
// fp8 = true (set before the first pass) stores keys and values as fp8 e4m3 with one F32 scale per (row,
// position, kv head): x ~ scale * e4m3(x / scale), scale = max|x| over the head's D values / 448. Every pass
// writes its window quantized and attends to the dequantized cache (docs/BATCHING.md gives the error bound).
struct KvCache {
  int64_t B = 0, L = 0;
  std::vector<Tensor> k, v;  // one per layer: [B, L, Hkv, D] in act dtype, or F8_E4M3 when fp8
  bool fp8 = false;
  std::vector<Tensor> k_scale, v_scale;  // fp8 only: F32 [B, L, Hkv] per layer
  bool empty() const { return k.empty(); }
  size_t bytes() const;
};

// Bytes of a KvCache for `rows` sequences of `len` positions (what KvCache::bytes() will report once filled).
size_t kv_cache_bytes(const ModelConfig& c, DType act_dtype, int64_t rows, int64_t len, bool fp8);

// One sequence's part of a ragged batched pass (Model::forward_slots): its own ids [1, L] (host), key mask and
// positions (undefined: all valid, 0..L-1), window [begin, end) and cache (null: no cache, the window must be
// the whole sequence). logit_rows as in forward_window (flat indices l into the row).
struct SlotPass {
  Tensor ids, key_mask, positions;
  KvCache* cache = nullptr;
  int64_t begin = 0, end = -1;
  std::vector<int64_t> logit_rows;
};

// One group of sequences of a pass that attend among themselves: B rows of length L of which the window
// [begin, end) is computed (W = end - begin tokens per row, rows [offset, offset + B*W) of the pass), attending
// through `cache` (B rows; null: to the window itself, which is then the whole sequence).
struct AttnSlot {
  int64_t B = 1, L = 0, begin = 0, end = 0, offset = 0;
  Tensor key_mask;           // U8 [B, L] (host) or undefined
  KvCache* cache = nullptr;
  int64_t width() const { return end - begin; }
  int64_t tokens() const { return B * width(); }
};

// The forward pass in pieces: begin (embedding), one call per layer, finish (final norm + LM head). A state holds
// the window tokens of its slots, concatenated: forward / forward_window make one slot of B rows, forward_slots
// one slot per sequence. Every op runs once over all T tokens; attention too for a ragged pass (one
// Backend::attention_slots call a layer), per slot otherwise (one slot: forward / forward_window).
struct ForwardState {
  Tensor h;          // hidden states [T, H] in the backend's activation dtype
  Tensor positions;  // I64 [T] (host; on the device inside a captured layer stack)
  Tensor residual;   // a layer's MLP output not yet added to h (the next layer's norm adds it; see run_layers)
  std::vector<AttnSlot> slots;
  bool ragged = false;  // forward_slots' pass: every slot's attention in one attention_slots call
  int64_t tokens() const { return positions.numel(); }
};

// Bytes of the model's weights in its backend's memory (device bytes on CUDA), measured from the tensors it
// holds (Linear::held); storage at one address counts once.
struct WeightBytes {
  size_t packed_linears = 0;  // packed low-bit transformer linears, fused ones included
  size_t dense = 0;           // dense transformer linears and the norms
  size_t embedding = 0, head = 0;
  size_t host_embedding = 0;  // the embedding table kept in host memory (embed_on_host on a GPU); not in total()
  size_t total() const { return packed_linears + dense + embedding + head; }
};

struct LayerWeights {
  Tensor attn_norm, ffn_norm;
  Tensor q_norm, k_norm;  // SDAR (Qwen3): per-head RMSNorm weights [head_dim]; undefined otherwise
  std::unique_ptr<Linear> linear[7];  // indexed by LinearRole
  // CUDA, dense bf16 gate and up: one [2I, H] device weight (gate rows, then up rows) run as one GEMM; the Gate
  // and Up Linear objects are views into it (no second copy). Undefined otherwise, or after replace_linear.
  Tensor gate_up;
  // CUDA (unless DIFFULEX_FUSE_QKV=0), dense bf16 q, k and v: one [Nq + 2 Nkv, H] device weight (and bias, when the checkpoint has them) in one
  // GEMM, its output split into q, k, v; the Q/K/V Linear objects are views. Undefined otherwise.
  Tensor qkv, qkv_bias;
  // CUDA, packed low-bit q/k/v and gate/up (fuse_packed_linears): one Linear of the summed width each; the parts
  // keep their host weights and run only if used alone. Null otherwise (DIFFULEX_FUSE_PACKED=0), or after
  // replace_linear.
  std::unique_ptr<Linear> qkv_packed, gate_up_packed;
};

class Model {
 public:
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& opts = {});
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return *backend_; }
  const std::string& dir() const { return dir_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const Linear& lm_head() const { return *lm_head_; }
  const QuantConfig* quant() const { return quant_.get(); }
  size_t weight_bytes() const;

  // ids I64 [B, L] (host); key_mask U8 [B, L] (1 = real token) or undefined; positions I64 [B, L] or undefined
  // (0..L-1 per row). Returns F32 logits on the host: [B, L, V] when logit_rows is empty, else [R, V] for the
  // flat rows b*L + l listed.
  Tensor forward(const Tensor& ids, const Tensor& key_mask = {}, const std::vector<int64_t>& logit_rows = {},
                 const Tensor& positions = {});

  // The positions [begin, end) of every row, attending to all L positions through `cache` (allocated and filled
  // on first use: pass begin = 0, end = L to refresh it). `logit_rows` are flat indices b*L + l with l in the
  // window; returns F32 [R, V] (or [B, W, V] when empty).
  Tensor forward_window(const Tensor& ids, const Tensor& key_mask, KvCache& cache, int64_t begin, int64_t end,
                        const std::vector<int64_t>& logit_rows = {}, const Tensor& positions = {});

  // Several independent sequences (different lengths, windows and caches) in one pass: the linear layers,
  // norms and rope run once over every slot's window tokens, attention once a layer for all slots, each over its
  // own keys (Backend::attention_slots). Slot i's result equals forward(...) (no cache) or forward_window(...)
  // (cache) on that slot alone, bit for bit where the backend's kernels are row-independent (both backends' are).
  // The continuous-batching scheduler's forward. The logits stay in the backend's memory, as forward_window_device
  // leaves them: slot i's are [R_i, V] in act_dtype() for its logit_rows (its whole window, W_i rows, when it lists
  // none).
  std::vector<Tensor> forward_slots(std::vector<SlotPass>& slots);
  // The same pass with the logits as one tensor [rows, V] (backend memory): slot i's rows start at first[i].
  Tensor forward_slots_rows(std::vector<SlotPass>& slots, std::vector<int64_t>& first);

  // A model with random weights at config `c` made directly in the backend's memory (the bench's generator:
  // normal(0, 0.02) linears and embeddings, norms ~1; on CUDA a device hash, so a 7B model takes a second).
  static std::unique_ptr<Model> random(const ModelConfig& c, const RandomModelOptions& opts);

  // The pieces of every pass: begin_forward makes the state of forward / forward_window (one slot of B rows),
  // run_layer is the one layer routine, finish_forward_device (below) the final norm and LM head.
  ForwardState begin_forward(const Tensor& ids, const Tensor& key_mask = {}, const Tensor& positions = {},
                             KvCache* cache = nullptr, int64_t begin = 0, int64_t end = -1);
  void run_layer(int64_t layer, ForwardState& st);

  // The layers of a pass in order (the same as run_layer on each, with each layer's MLP residual added by the next
  // layer's norm kernel: add_rmsnorm), h complete on return.
  void run_layers(ForwardState& st);

  // CUDA graphs (on by default; DIFFULEX_CUDA_GRAPHS=0 or set_graphs(false) turns them off): forward and
  // forward_window on a GPU backend run the layer stack of a pass as a captured graph, one per shape, window and
  // KV cache (the first pass of a shape runs eagerly, the second is captured, later ones replay it). The
  // embedding, positions and key mask are written into the graph's input buffers before each replay; the LM
  // head and sampling run after it. Never used while an observer is set (its reports are per op).
  void set_graphs(bool on) { graphs_ = on; }
  bool graphs() const { return graphs_; }
  size_t captured_graphs() const;  // graphs held now

  // Every pass (any entry point above or below) reports to `observer` until it is replaced; {} stops the reports.
  void set_observer(ForwardObserver observer) { observer_ = std::move(observer); }
  const ForwardObserver& observer() const { return observer_; }
  WeightBytes held_weight_bytes() const;

  // forward and forward_window with the logits left in the backend's memory (act_dtype(), [R, V] or [B*W, V]):
  // the rows are picked on the backend (gather_rows) and the samplers' work runs there too (sample_rows).
  // finish_forward_device: the final norm and LM head of a state's rows (indices into its T tokens; all when
  // empty).
  Tensor forward_device(const Tensor& ids, const Tensor& key_mask = {}, const std::vector<int64_t>& logit_rows = {},
                        const Tensor& positions = {});
  Tensor forward_window_device(const Tensor& ids, const Tensor& key_mask, KvCache& cache, int64_t begin, int64_t end,
                               const std::vector<int64_t>& logit_rows = {}, const Tensor& positions = {});
  Tensor finish_forward_device(ForwardState& st, const std::vector<int64_t>& logit_rows = {});

  // Swaps one linear layer (the quantizer replaces each layer by its quantized version as it goes).
  void replace_linear(int64_t layer, LinearRole role, std::unique_ptr<Linear> linear);
  const TensorStore& store() const { return *store_; }

 private:
  Model();  // defined in model.cc, where StepGraph is complete
  // The packed q/k/v and gate/up linears of `lw` as fused Linears (see LayerWeights) where the backend prefers it
  // (Backend::fusion).
  void fuse_packed(LayerWeights& lw);
  // Which dense linears become one weight (see LayerWeights): the backend's preference (Backend::fusion).
  // Model::load and Model::random decide alike.
  using DenseFusion = Backend::Fusion;
  DenseFusion dense_fusion() const { return backend_->fusion(); }
  // LoadOptions::strict: warns about (or refuses) quantized tensors that match no linear.
  void check_unmatched_quant_tensors(bool strict) const;
  void alloc_cache(KvCache& cache, int64_t B, int64_t L);
  // Copies slot s's window ids and positions (ids I64 [B, L] host, positions I64 [B, L] or undefined: 0..L-1)
  // into its rows of wids / st.positions, checking the ids; allocates its cache on a full-sequence pass.
  void add_window(AttnSlot& s, const Tensor& ids, const Tensor& positions, Tensor& wids, ForwardState& st,
                  const std::string& what);
  void embed(ForwardState& st, const Tensor& wids);
  // begin_forward without the embedding: the state and the window's token ids (host, in `wids`).
  ForwardState prepare_forward(const Tensor& ids, const Tensor& key_mask, const Tensor& positions, KvCache* cache,
                               int64_t begin, int64_t end, Tensor& wids);
  // One layer; defer_residual leaves its MLP output in st.residual instead of adding it to h.
  void layer_pass(int64_t layer, ForwardState& st, bool defer_residual);
  void flush_residual(ForwardState& st);
  // The embedding and layers of a one-slot pass: through a captured graph when use_graphs(), else eagerly.
  void run_body(ForwardState& st, const Tensor& wids);
  bool use_graphs() const;
  static bool graphs_default();
  struct StepGraph;
  std::map<std::vector<int64_t>, std::unique_ptr<StepGraph>> graphs_map_;
  std::set<std::vector<int64_t>> warmed_;  // shapes that ran once (see run_body)
  uint64_t graph_clock_ = 0;
  bool graphs_ = graphs_default();
  void attend(int64_t layer, const AttnSlot& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& att);
  // The rows of a slot's window in the layer's key (or value) cache as one contiguous [width, Hkv * D] view, where
  // they are contiguous: one sequence (B = 1), a bf16 / f32 cache, the pass's only slot, rows of a multiple of 256
  // bytes. Undefined otherwise.
  Tensor cache_window_rows(const AttnSlot& s, int64_t layer, bool keys) const;
  void attend_slots(int64_t layer, const ForwardState& st, const Tensor& q, const Tensor& k, const Tensor& v,
                    Tensor& att);
  // y = lin(x), reported to the op observer first; swiglu: y = the SwiGLU of a fused [gate; up] lin
  // (Linear::forward_swiglu).
  void run_linear(const char* name, int64_t layer, const Linear& lin, const Tensor& x, Tensor& y,
                  bool swiglu = false) const;
  void report(const char* name, int64_t layer, double flops, double bytes) const;
  void report_linear(const char* name, int64_t layer, const Tensor& x, int64_t n, size_t weight_bytes) const;
  Tensor logits_to_host(const Tensor& logits) const;
  ForwardObserver observer_;
  std::string dir_;
  ModelConfig cfg_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<QuantConfig> quant_;
  std::shared_ptr<class TensorStore> store_;
  Tensor embed_, final_norm_;
  std::vector<LayerWeights> layers_;
  std::unique_ptr<Linear> lm_head_;
};

}  // namespace dlx
