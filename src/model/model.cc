#include "model/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "formats/packed_linear.h"
#include "formats/quant_checks.h"
#include "formats/quant_config.h"
#include "io/safetensors.h"

namespace dlx {

namespace {

Tensor load_vector(const TensorStore& store, const std::string& name, int64_t n) {
  Tensor t = store.get(name);
  check(is_float(t.dtype()) && t.dtype() != DType::F8_E4M3, "{}: tensor '{}' has dtype {}, expected BF16, F16 or F32",
        store.file_of(name), name, dtype_name(t.dtype()));
  check(t.shape() == Shape{n}, "{}: tensor '{}' has shape {}, expected [{}] from config.json", store.file_of(name), name,
        shape_str(t.shape()), n);
  return t;
}

// Every BF16 / F16 / F32 tensor of the checkpoint is finite, else an Error naming the file, the tensor and the first
// bad element (issue 18: a NaN weight must not turn into fluent text). A bit test per element over the mmap'd
// bytes, in parallel: docs/FUZZING.md has its cost.
void check_weights_finite(const TensorStore& store) {
  for (const std::string& name : store.names()) {
    const TensorInfo& info = store.info(name);
    uint32_t exp_mask;  // the exponent bits: all set is Inf or NaN
    switch (info.dtype) {
      case DType::BF16: exp_mask = 0x7f80; break;
      case DType::F16: exp_mask = 0x7c00; break;
      case DType::F32: exp_mask = 0x7f800000; break;
      default: continue;
    }
    const Tensor t = store.get(name);
    const int64_t n = t.numel();
    std::atomic<int64_t> first{n};
    parallel_for(n, int64_t(1) << 16, [&](int64_t a, int64_t b) {
      const auto scan = [&](const auto* x) {
        bool bad = false;
        for (int64_t i = a; i < b; ++i) bad |= (x[i] & exp_mask) == exp_mask;
        if (!bad) return;
        for (int64_t i = a; i < b; ++i)
          if ((x[i] & exp_mask) == exp_mask) {
            for (int64_t f = first; i < f && !first.compare_exchange_weak(f, i);) {
            }
            return;
          }
      };
      if (info.dtype == DType::F32)
        scan(static_cast<const uint32_t*>(t.data()));
      else
        scan(static_cast<const uint16_t*>(t.data()));
    });
    const int64_t i = first;
    check(i == n, "{}: tensor '{}' has a non-finite value ({}) at flat index {}: the checkpoint is damaged",
          store.file_of(name), name, load_as_f32(t.data(), t.dtype(), size_t(i < n ? i : 0)), i);
  }
}

Tensor load_matrix(const TensorStore& store, const std::string& name, int64_t rows, int64_t cols) {
  Tensor t = store.get(name);
  check(t.dtype() == DType::BF16 || t.dtype() == DType::F16 || t.dtype() == DType::F32,
        "{}: tensor '{}' has dtype {}, expected BF16, F16 or F32", store.file_of(name), name, dtype_name(t.dtype()));
  check(t.shape() == Shape{rows, cols}, "{}: tensor '{}' has shape {}, expected [{}, {}] from config.json",
        store.file_of(name), name, shape_str(t.shape()), rows, cols);
  return t;
}

// Whether `spec` loads as a dense bf16 layer (the kind load_linear would pick is the dense one and the weight is
// stored as BF16 [out, in]); a bias must be absent, unless `bias_ok`, and then present exactly when the
// architecture has one there, with `out` entries.
bool fusable_dense(const LoadContext& ctx, const LinearSpec& spec, const std::string& family, bool bias_ok = false) {
  if (!family.empty() && family != "bf16") return false;
  for (const LinearKind& k : linear_kinds()) {
    if (!k.matches(ctx, spec)) continue;
    if (k.name != "bf16") return false;
    const bool has_bias = ctx.store.has(spec.prefix + ".bias");
    if (has_bias && (!bias_ok || ctx.store.get(spec.prefix + ".bias").shape() != Shape{spec.out_features})) return false;
    if (!has_bias && spec.bias) return false;  // load_linear reports the missing bias
    const Tensor w = ctx.store.get(spec.prefix + ".weight");
    return w.dtype() == DType::BF16 && w.shape() == Shape{spec.out_features, spec.in_features};
  }
  return false;
}

void check_family(const std::string& f, const char* flag) {
  check(f.empty() || f == "bf16" || f == "gptq" || f == "awq", "{} must be bf16, gptq or awq (got '{}')", flag, f);
}

}  // namespace

// One captured layer stack (run_body): the device buffers it reads (positions, key mask) and updates in place (the
// hidden states), and the graph. Its key names everything the graph's kernels bake in: the shapes, the window and
// the addresses of the KV cache tensors.
struct Model::StepGraph {
  Tensor h, positions, mask;
  std::vector<unsigned char> last_positions, last_mask;  // the host bytes last copied into positions / mask
  std::unique_ptr<Backend::Graph> graph;
  uint64_t last_use = 0;
};

Model::Model() = default;
Model::~Model() = default;

namespace {
// Graphs kept per model (least recently used dropped first): a dual-cache generation uses one per block plus the
// refresh pass's.
constexpr size_t kMaxGraphs = 16;

// A switch that is on unless the variable is "0".
bool on_unless_zero(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::strcmp(v, "0") == 0);
}

// On unless DIFFULEX_CUDA_GRAPHS=0 (the eager path, for A/B timing and debugging). tests/kernels/cuda/cuda_graph_test.cc
// checks graph replay against eager execution on the GPU (docs/CUDA.md).
bool graphs_from_env() { return on_unless_zero("DIFFULEX_CUDA_GRAPHS"); }

// On unless DIFFULEX_KV_IN_PLACE=0: a one-sequence window's keys and values are produced into the cache
// (Model::cache_window_rows); off, into their own tensors and copied, as for a batch (an A/B knob).
bool kv_in_place_from_env() {
  static const bool on = on_unless_zero("DIFFULEX_KV_IN_PLACE");
  return on;
}
}  // namespace

bool Model::graphs_default() { return graphs_from_env(); }

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opts) {
  check_family(opts.attn_weight_family, "linear_attn_weight_dtype");
  check_family(opts.mlp_weight_family, "linear_mlp_weight_dtype");
  std::unique_ptr<Model> m(new Model());
  m->dir_ = dir;
  m->cfg_ = load_model_config(dir);
  m->quant_ = load_quant_config(dir);
  m->store_ = TensorStore::open_dir(dir);
  check_weights_finite(*m->store_);
  m->backend_ = make_backend(opts.device);
  const ModelConfig& c = m->cfg_;
  const ArchNames& names = arch_names(c.arch);
  const TensorStore& store = *m->store_;
  Backend& be = *m->backend_;

  Tensor table = load_matrix(store, names.embed, c.vocab_size, c.hidden_size);
  m->embed_ = opts.embed_on_host ? table : be.upload(table);
  m->final_norm_ = be.upload(load_vector(store, names.final_norm, c.hidden_size));

  check(opts.awq_order == "autoawq" || opts.awq_order == "plain",
        "awq order '{}' is not one of autoawq, plain", opts.awq_order);
  LoadContext ctx{store, m->quant_.get(), be, opts.dequant_cache, opts.awq_order == "plain"};
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  auto spec = [&](const std::string& prefix, LinearRole role) {
    LinearSpec s;
    s.prefix = prefix;
    switch (role) {
      case LinearRole::Q: s.in_features = H, s.out_features = c.num_heads * D, s.bias = c.qkv_bias; break;
      case LinearRole::K:
      case LinearRole::V: s.in_features = H, s.out_features = c.num_kv_heads * D, s.bias = c.qkv_bias; break;
      case LinearRole::O: s.in_features = c.num_heads * D, s.out_features = H; break;
      case LinearRole::Gate:
      case LinearRole::Up: s.in_features = H, s.out_features = I; break;
      case LinearRole::Down: s.in_features = I, s.out_features = H; break;
    }
    return s;
  };
  const DenseFusion fusion = m->dense_fusion();
  const bool fuse_gate_up = fusion.gate_up, fuse_qkv = fusion.qkv;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerWeights lw;
    std::string p = fmt::format(fmt::runtime(names.layer_prefix), i);
    lw.attn_norm = be.upload(load_vector(store, p + names.attn_norm, H));
    lw.ffn_norm = be.upload(load_vector(store, p + names.ffn_norm, H));
    if (c.qk_norm) {
      lw.q_norm = be.upload(load_vector(store, p + names.q_norm, D));
      lw.k_norm = be.upload(load_vector(store, p + names.k_norm, D));
    }
    const bool fuse = fuse_gate_up && fusable_dense(ctx, spec(p + names.linear[int(LinearRole::Gate)], LinearRole::Gate),
                                                    opts.mlp_weight_family) &&
                      fusable_dense(ctx, spec(p + names.linear[int(LinearRole::Up)], LinearRole::Up),
                                    opts.mlp_weight_family);
    const LinearRole qkv_roles[3] = {LinearRole::Q, LinearRole::K, LinearRole::V};
    bool fuse3 = fuse_qkv;
    for (LinearRole r : qkv_roles)
      fuse3 = fuse3 && fusable_dense(ctx, spec(p + names.linear[int(r)], r), opts.attn_weight_family, true);
    if (fuse3) {  // all three with a bias of one dtype, or none
      const bool b0 = store.has(p + names.linear[0] + ".bias");
      for (LinearRole r : qkv_roles) {
        const std::string bn = p + names.linear[int(r)] + ".bias";
        fuse3 = fuse3 && store.has(bn) == b0 &&
                (!b0 || store.get(bn).dtype() == store.get(p + names.linear[0] + ".bias").dtype());
      }
    }
    for (LinearRole r : kLinearRoles) {
      if (fuse3 && is_attention_role(r) && r != LinearRole::O) continue;  // below
      if (fuse && (r == LinearRole::Gate || r == LinearRole::Up)) continue;  // below
      const std::string& fam = is_attention_role(r) ? opts.attn_weight_family : opts.mlp_weight_family;
      lw.linear[int(r)] = load_linear(ctx, spec(p + names.linear[int(r)], r), fam);
    }
    if (fuse3) {
      std::vector<Tensor> ws, bs;
      for (LinearRole r : qkv_roles) {
        const std::string pre = p + names.linear[int(r)];
        ws.push_back(store.get(pre + ".weight"));
        if (store.has(pre + ".bias")) bs.push_back(store.get(pre + ".bias"));
      }
      lw.qkv = be.upload(Tensor::stack_rows(ws));
      if (!bs.empty()) lw.qkv_bias = be.upload(Tensor::stack_rows(bs));
      int64_t row = 0;
      for (int i = 0; i < 3; ++i) {
        const LinearSpec sp = spec(p + names.linear[int(qkv_roles[i])], qkv_roles[i]);
        const int64_t n = sp.out_features;
        lw.linear[int(qkv_roles[i])] =
            make_dense_linear_view(sp, ws[size_t(i)], lw.qkv.slice_rows(row, row + n),
                                   bs.empty() ? Tensor() : bs[size_t(i)],
                                   bs.empty() ? Tensor() : lw.qkv_bias.slice_rows(row, row + n));
        row += n;
      }
    }
    if (fuse) {
      const LinearSpec gs = spec(p + names.linear[int(LinearRole::Gate)], LinearRole::Gate);
      const LinearSpec us = spec(p + names.linear[int(LinearRole::Up)], LinearRole::Up);
      const Tensor g = store.get(gs.prefix + ".weight"), u = store.get(us.prefix + ".weight");
      lw.gate_up = be.upload(Tensor::stack_rows({g, u}));
      lw.linear[int(LinearRole::Gate)] = make_dense_linear_view(gs, g, lw.gate_up.slice_rows(0, I));
      lw.linear[int(LinearRole::Up)] = make_dense_linear_view(us, u, lw.gate_up.slice_rows(I, 2 * I));
    }
    m->fuse_packed(lw);
    m->layers_.push_back(std::move(lw));
  }
  // The LM head loads as the checkpoint holds it: dense, or quantized (GPTQModel's `lm_head: true`) through the
  // same kinds table; a tied model without its own head reuses the embedding table.
  auto prefix_of = [](const std::string& weight) { return weight.substr(0, weight.size() - std::string(".weight").size()); };
  const bool head_stored = store.has(names.lm_head) || store.has(prefix_of(names.lm_head) + ".qweight");
  LinearSpec hs;
  hs.prefix = prefix_of(c.tie_word_embeddings && !head_stored ? names.embed : names.lm_head);
  hs.in_features = H;
  hs.out_features = c.vocab_size;
  m->lm_head_ = load_linear(ctx, hs);
  m->check_unmatched_quant_tensors(opts.strict);
  return m;
}

void Model::check_unmatched_quant_tensors(bool strict) const {
  std::set<std::string> loaded{lm_head_->spec().prefix};
  for (const auto& l : layers_)
    for (const auto& lin : l.linear) loaded.insert(lin->spec().prefix);
  const std::vector<std::string> names = unmatched_quant_tensors(*store_, loaded);
  if (names.empty()) return;
  std::string list;
  for (size_t i = 0; i < names.size() && i < 4; ++i) list += (i ? ", " : "") + fmt::format("'{}'", names[i]);
  if (names.size() > 4) list += fmt::format(" and {} more", names.size() - 4);
  const std::string msg = fmt::format(
      "{}: {} quantized tensors match no layer of the model ({}); they are not used (the model's layers are named "
      "like '{}')",
      store_->file_of(names[0]), names.size(), list,
      layers_.empty() ? lm_head_->spec().prefix : layers_[0].linear[0]->spec().prefix);
  check(!strict, "{} (strict loading)", msg);
  log_warn("{}", msg);
}

size_t Model::weight_bytes() const {
  size_t n = embed_.nbytes() + final_norm_.nbytes() + lm_head_->info().bytes;
  if (cfg_.tie_word_embeddings && lm_head_->spec().prefix + ".weight" == arch_names(cfg_.arch).embed) n -= embed_.nbytes();
  for (const auto& l : layers_) {
    n += l.attn_norm.nbytes() + l.ffn_norm.nbytes();
    if (l.q_norm.defined()) n += l.q_norm.nbytes() + l.k_norm.nbytes();
    for (const auto& lin : l.linear) n += lin->info().bytes;
  }
  return n;
}

namespace {

// Bytes of the tensors in `ts` whose storage address is not in `seen` yet (undefined ones skipped); adds them.
size_t new_bytes(const std::vector<Tensor>& ts, std::set<const void*>& seen) {
  size_t n = 0;
  for (const Tensor& t : ts)
    if (t.defined() && seen.insert(t.data()).second) n += t.nbytes();
  return n;
}

size_t distinct_bytes(const std::vector<Tensor>& ts) {
  std::set<const void*> seen;
  return new_bytes(ts, seen);
}

}  // namespace

WeightBytes Model::held_weight_bytes() const {
  WeightBytes w;
  std::set<const void*> seen;
  const bool host_table = embed_.device() == Device::CPU && backend_->device() != Device::CPU;
  (host_table ? w.host_embedding : w.embedding) = new_bytes({embed_}, seen);
  auto add = [&](const Linear* lin) {
    if (!lin) return;
    const HeldTensors h = lin->held();
    (h.packed ? w.packed_linears : w.dense) += new_bytes(h.tensors, seen);
  };
  for (const auto& l : layers_) {
    w.dense += new_bytes({l.attn_norm, l.ffn_norm, l.q_norm, l.k_norm}, seen);
    for (const auto& lin : l.linear) add(lin.get());
    add(l.qkv_packed.get());
    add(l.gate_up_packed.get());
  }
  w.dense += new_bytes({final_norm_}, seen);
  w.head = new_bytes(lm_head_->held().tensors, seen);
  return w;
}

Tensor Model::logits_to_host(const Tensor& logits) const {
  report("logits_to_host", -1, 0, double(logits.nbytes()));
  return backend_->to_host_f32(logits);
}

Tensor Model::forward(const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& logit_rows,
                      const Tensor& positions) {
  Tensor out = logits_to_host(forward_device(ids, key_mask, logit_rows, positions));
  return logit_rows.empty() ? out.reshape({ids.dim(0), ids.dim(1), cfg_.vocab_size}) : out;
}

void Model::add_window(AttnSlot& s, const Tensor& ids, const Tensor& positions, Tensor& wids, ForwardState& st,
                       const std::string& what) {
  const int64_t W = s.width();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t l = s.begin; l < s.end; ++l) {
      const int64_t id = ids.data<int64_t>()[b * s.L + l], at = s.offset + b * W + l - s.begin;
      check(id >= 0 && id < cfg_.vocab_size, "{}input_ids[{}][{}] = {} is outside the vocabulary [0, {})", what, b, l,
            id, cfg_.vocab_size);
      wids.data<int64_t>()[at] = id;
      st.positions.data<int64_t>()[at] = positions.defined() ? positions.data<int64_t>()[b * s.L + l] : l;
    }
  KvCache* cache = s.cache;
  if (cache && (cache->B != s.B || cache->L != s.L || cache->empty())) {
    // Block-causal: a window [0, end) ending on a block boundary reads no entry it does not write.
    const int64_t bs = cfg_.block_size;
    const bool prefill = bs > 0 && s.begin == 0 && (s.end % bs == 0 || s.end == s.L);
    check((s.begin == 0 && s.end == s.L) || prefill,
          "{}the KV cache is empty or sized for another batch: refresh it with the whole sequence", what);
    alloc_cache(*cache, s.B, s.L);
  }
}

void Model::embed(ForwardState& st, const Tensor& wids) {
  const int64_t T = st.tokens(), H = cfg_.hidden_size;
  report("embedding", -1, 0, 2.0 * double(dtype_size(backend_->act_dtype())) * double(T * H));
  st.h = backend_->empty(backend_->act_dtype(), {T, H});
  backend_->embedding(wids, embed_, st.h);
}

ForwardState Model::begin_forward(const Tensor& ids, const Tensor& key_mask, const Tensor& positions, KvCache* cache,
                                  int64_t begin, int64_t end) {
  Tensor wids;
  ForwardState st = prepare_forward(ids, key_mask, positions, cache, begin, end, wids);
  embed(st, wids);
  return st;
}

ForwardState Model::prepare_forward(const Tensor& ids, const Tensor& key_mask, const Tensor& positions, KvCache* cache,
                                    int64_t begin, int64_t end, Tensor& wids) {
  check(ids.dtype() == DType::I64 && ids.rank() == 2, "input_ids must be I64 [batch, length], got {} {}",
        dtype_name(ids.dtype()), shape_str(ids.shape()));
  const int64_t B = ids.dim(0), L = ids.dim(1);
  check(B > 0 && L > 0, "input_ids is empty ({})", shape_str(ids.shape()));
  check(!key_mask.defined() || (key_mask.dtype() == DType::U8 && key_mask.shape() == ids.shape()),
        "key mask must be U8 {}", shape_str(ids.shape()));
  check(!positions.defined() || (positions.dtype() == DType::I64 && positions.numel() == B * L),
        "positions must be I64 {}", shape_str(ids.shape()));
  if (end < 0) end = L;
  check(0 <= begin && begin < end && end <= L, "window [{}, {}) is outside the sequence length {}", begin, end, L);
  check(cache || (begin == 0 && end == L), "a window smaller than the sequence needs a KV cache");
  AttnSlot s;
  s.B = B, s.L = L, s.begin = begin, s.end = end, s.key_mask = key_mask, s.cache = cache;
  ForwardState st;
  wids = Tensor::zeros(DType::I64, {s.tokens()});
  st.positions = Tensor::zeros(DType::I64, {s.tokens()});
  add_window(s, ids, positions, wids, st, "");
  st.slots.push_back(s);
  return st;
}

size_t kv_cache_bytes(const ModelConfig& c, DType act_dtype, int64_t rows, int64_t len, bool fp8) {
  const size_t per_layer = size_t(rows * len * c.num_kv_heads) * (fp8 ? size_t(c.head_dim) + 4 : size_t(c.head_dim) * dtype_size(act_dtype));
  return 2 * per_layer * size_t(c.num_layers);
}

size_t KvCache::bytes() const {
  size_t n = 0;
  for (const auto* list : {&k, &v, &k_scale, &v_scale})
    for (const Tensor& t : *list) n += t.nbytes();
  return n;
}

void Model::alloc_cache(KvCache& cache, int64_t B, int64_t L) {
  const DType at = cache.fp8 ? DType::F8_E4M3 : backend_->act_dtype();
  const int64_t Hkv = cfg_.num_kv_heads, D = cfg_.head_dim, n = cfg_.num_layers;
  cache.B = B;
  cache.L = L;
  cache.k.clear();
  cache.v.clear();
  cache.k_scale.clear();
  cache.v_scale.clear();
  // One block for every layer's keys and values (and one for the fp8 scales), the layers' tensors views into it:
  // a later cache of the same size gets the same block back from the caching allocator, so the captured layer
  // stacks keyed by the cache's addresses (run_body) are replayed again rather than captured anew.
  const Tensor kv = backend_->empty(at, {2 * n, B * L * Hkv * D});
  const Tensor sc = cache.fp8 ? backend_->empty(DType::F32, {2 * n, B * L * Hkv}) : Tensor();
  for (int64_t i = 0; i < n; ++i) {
    cache.k.push_back(kv.slice_rows(2 * i, 2 * i + 1).reshape({B, L, Hkv, D}));
    cache.v.push_back(kv.slice_rows(2 * i + 1, 2 * i + 2).reshape({B, L, Hkv, D}));
    if (cache.fp8) {
      cache.k_scale.push_back(sc.slice_rows(2 * i, 2 * i + 1).reshape({B, L, Hkv}));
      cache.v_scale.push_back(sc.slice_rows(2 * i + 1, 2 * i + 2).reshape({B, L, Hkv}));
    }
  }
}

Tensor Model::forward_window(const Tensor& ids, const Tensor& key_mask, KvCache& cache, int64_t begin, int64_t end,
                             const std::vector<int64_t>& logit_rows, const Tensor& positions) {
  Tensor out = logits_to_host(forward_window_device(ids, key_mask, cache, begin, end, logit_rows, positions));
  return logit_rows.empty() ? out.reshape({ids.dim(0), out.dim(0) / ids.dim(0), cfg_.vocab_size}) : out;
}

Tensor Model::forward_window_device(const Tensor& ids, const Tensor& key_mask, KvCache& cache, int64_t begin,
                                    int64_t end, const std::vector<int64_t>& logit_rows, const Tensor& positions) {
  Tensor wids;
  ForwardState st = prepare_forward(ids, key_mask, positions, &cache, begin, end, wids);
  run_body(st, wids);
  const AttnSlot& s = st.slots[0];
  std::vector<int64_t> rows;
  for (int64_t r : logit_rows) {
    int64_t b = r / s.L, l = r % s.L;
    check(r >= 0 && b < s.B && l >= s.begin && l < s.end, "logit row {} is outside the window [{}, {})", r, s.begin, s.end);
    rows.push_back(b * s.width() + l - s.begin);
  }
  return finish_forward_device(st, rows);
}

Tensor Model::forward_device(const Tensor& ids, const Tensor& key_mask, const std::vector<int64_t>& logit_rows,
                             const Tensor& positions) {
  Tensor wids;
  ForwardState st = prepare_forward(ids, key_mask, positions, nullptr, 0, -1, wids);
  run_body(st, wids);
  return finish_forward_device(st, logit_rows);
}

void Model::report(const char* name, int64_t layer, double flops, double bytes) const {
  if (observer_.op) observer_.op(ForwardOp{name, layer, flops, bytes});
}

void Model::report_linear(const char* name, int64_t layer, const Tensor& x, int64_t n, size_t weight_bytes) const {
  const double M = double(x.dim(0)), K = double(x.dim(1)), N = double(n);
  const double act = double(dtype_size(backend_->act_dtype()));
  report(name, layer, 2 * M * N * K, act * (M * K + M * N) + double(weight_bytes));
}

void Model::run_linear(const char* name, int64_t layer, const Linear& lin, const Tensor& x, Tensor& y,
                       bool swiglu) const {
  if (observer_.op) report_linear(name, layer, x, lin.out_features(), distinct_bytes(lin.held().tensors));
  if (swiglu) return lin.forward_swiglu(*backend_, x, y);
  Tensor y2 = y.reshape({x.dim(0), lin.out_features()});
  lin.forward(*backend_, x, y2);
}

void Model::run_layer(int64_t layer, ForwardState& st) {
  flush_residual(st);
  layer_pass(layer, st, false);
}

void Model::run_layers(ForwardState& st) {
  for (int64_t i = 0; i < cfg_.num_layers; ++i) layer_pass(i, st, true);
  flush_residual(st);
}

size_t Model::captured_graphs() const {
  size_t n = 0;
  for (const auto& [key, g] : graphs_map_) n += g->graph ? 1 : 0;
  return n;
}

bool Model::use_graphs() const {
  return graphs_ && backend_->device() != Device::CPU && !observer_.op && !observer_.linear;
}

void Model::run_body(ForwardState& st, const Tensor& wids) {
  if (!use_graphs()) {
    embed(st, wids);
    run_layers(st);
    return;
  }
  Backend& be = *backend_;
  AttnSlot& s = st.slots[0];
  const KvCache* cache = s.cache;
  const int64_t T = st.tokens();
  // The shape (a first pass of a new shape runs eagerly: GEMM algorithm timing and other one-time work
  // synchronize, which a capture may not), then the window and the cache addresses.
  const std::vector<int64_t> shape = {s.B, s.L, s.width(), s.key_mask.defined() ? 1 : 0, cache ? 1 : 0,
                                      cache && cache->fp8 ? 1 : 0};
  std::vector<int64_t> key = shape;
  key.push_back(s.begin);
  if (cache)
    for (const auto* list : {&cache->k, &cache->v, &cache->k_scale, &cache->v_scale})
      for (const Tensor& t : *list) key.push_back(int64_t(reinterpret_cast<intptr_t>(t.data())));
  auto it = graphs_map_.find(key);
  if (it == graphs_map_.end()) {
    if (graphs_map_.size() >= kMaxGraphs) {
      auto oldest = graphs_map_.begin();
      for (auto j = graphs_map_.begin(); j != graphs_map_.end(); ++j)
        if (j->second->last_use < oldest->second->last_use) oldest = j;
      graphs_map_.erase(oldest);
    }
    auto g = std::make_unique<StepGraph>();
    g->h = be.empty(be.act_dtype(), {T, cfg_.hidden_size});
    g->positions = be.empty(DType::I64, {T});
    if (s.key_mask.defined()) g->mask = be.empty(DType::U8, {s.B, s.L});
    it = graphs_map_.emplace(key, std::move(g)).first;
  }
  StepGraph& g = *it->second;
  g.last_use = ++graph_clock_;
  // The inputs: the window's embeddings (written into the graph's hidden-state buffer), positions and key mask.
  report("embedding", -1, 0, 2.0 * double(dtype_size(be.act_dtype())) * double(T * cfg_.hidden_size));
  be.embedding(wids, embed_, g.h);
  // Positions and mask stay the same over a generation's steps: copied only when their bytes change.
  auto refresh = [&](const Tensor& host, Tensor& dev, std::vector<unsigned char>& last) {
    const auto* b = host.data<unsigned char>();
    if (last.size() == host.nbytes() && std::equal(last.begin(), last.end(), b)) return;
    be.copy_from_host(host, dev);
    last.assign(b, b + host.nbytes());
  };
  refresh(st.positions, g.positions, g.last_positions);
  if (g.mask.defined()) refresh(s.key_mask, g.mask, g.last_mask);
  st.h = g.h;
  st.positions = g.positions;
  s.key_mask = g.mask;
  if (g.graph) return g.graph->replay();
  if (warmed_.insert(shape).second) return run_layers(st);
  try {
    g.graph = be.capture([&] { run_layers(st); });
  } catch (const Error& e) {
    log_warn("CUDA graph capture failed ({}); running the forward eagerly from now on", e.what());
    g.graph.reset();
  }
  st.residual = Tensor();
  if (!g.graph) {
    graphs_ = false;
    return run_layers(st);
  }
  g.graph->replay();
}

void Model::flush_residual(ForwardState& st) {
  if (!st.residual.defined()) return;
  report("add", -1, 0, 3 * double(dtype_size(backend_->act_dtype())) * double(st.h.numel()));
  backend_->add(st.h, st.residual);
  st.residual = Tensor();
}

void Model::layer_pass(int64_t layer, ForwardState& st, bool defer_residual) {
  Backend& be = *backend_;
  const ModelConfig& c = cfg_;
  const DType at = be.act_dtype();
  const double act = double(dtype_size(at));
  const int64_t T = st.tokens();
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads;
  const int64_t Nq = Hq * D, Nkv = Hkv * D;
  const float eps = float(c.rms_norm_eps);
  const LayerWeights& lw = layers_[size_t(layer)];
  Tensor& h = st.h;
  Tensor x = be.empty(at, {T, H}), tmp = be.empty(at, {T, H});
  // A cached window of one sequence (bf16 / f32 cache): its keys and values are produced straight into the window's
  // rows of the layer's cache, which are contiguous there, so attend() copies nothing (cache_window_rows).
  Tensor q = be.empty(at, {T, Nq}), k, v;
  if (st.slots.size() == 1 && !st.ragged) {
    k = cache_window_rows(st.slots[0], layer, true);
    v = cache_window_rows(st.slots[0], layer, false);
  }
  if (!k.defined()) k = be.empty(at, {T, Nkv}), v = be.empty(at, {T, Nkv});
  Tensor att = be.empty(at, {T, Nq});
  Tensor gate = be.empty(at, {T, I});
  auto lin = [&](const char* name, LinearRole r, const Tensor& in, Tensor& out) {
    if (observer_.linear) observer_.linear(layer, r, in);
    run_linear(name, layer, *lw.linear[int(r)], in, out);
  };
  // The input x of the parts of a fused weight, for the linear observer.
  auto observe = [&](std::initializer_list<LinearRole> parts) {
    if (observer_.linear)
      for (LinearRole r : parts) observer_.linear(layer, r, x);
  };
  // A fused weight (dense `w` and `bias`, or a packed Linear) over x: each part's input is observed, one GEMM.
  auto fused = [&](const char* name, std::initializer_list<LinearRole> parts, const Linear* packed, const Tensor& w,
                   const Tensor& bias, Tensor& out) {
    observe(parts);
    if (packed) return run_linear(name, layer, *packed, x, out);
    if (observer_.op) report_linear(name, layer, x, w.dim(0), distinct_bytes({w, bias}));
    be.matmul(x, w, bias.defined() ? &bias : nullptr, out);
  };
  // The previous layer's MLP output (deferred) is added to h by the norm's kernel.
  if (st.residual.defined()) {
    report("add_rmsnorm", layer, 0, 5 * act * double(T * H));
    be.add_rmsnorm(h, st.residual, lw.attn_norm, eps, x);
    st.residual = Tensor();
  } else {
    report("rmsnorm", layer, 0, 2 * act * double(T * H));
    be.rmsnorm(h, lw.attn_norm, eps, x);
  }
  Tensor q3 = q.reshape({T, Hq, D}), k3 = k.reshape({T, Hkv, D});
  const bool qk_norm = lw.q_norm.defined();  // SDAR (Qwen3): RMSNorm over each head's D values, before RoPE
  bool rotated = false;
  if (lw.qkv.defined() || lw.qkv_packed) {
    // q, k and v as one GEMM over the fused weight; one kernel splits its output and rotates q and k (without q/k
    // norms; with them the output is only split, normalized and rotated below).
    Tensor qkv = be.empty(at, {T, Nq + 2 * Nkv});
    fused("matmul_qkv", {LinearRole::Q, LinearRole::K, LinearRole::V}, lw.qkv_packed.get(), lw.qkv, lw.qkv_bias, qkv);
    if (!qk_norm) {
      report("qkv_rope", layer, 0, act * double(T * (Nq + 2 * Nkv)) * 2);
      be.qkv_rope(qkv, st.positions, c.rope_theta, q3, k3, v);
      rotated = true;
    } else {
      report("split_qkv", layer, 0, 2 * act * double(T * (Nq + 2 * Nkv)));
      be.split_columns(qkv, {&q, &k, &v});
    }
  } else {
    lin("matmul_qkv", LinearRole::Q, x, q);
    lin("matmul_qkv", LinearRole::K, x, k);
    lin("matmul_qkv", LinearRole::V, x, v);
  }
  if (qk_norm) {
    report("qk_norm", layer, 0, 2 * act * double(T * (Nq + Nkv)));
    Tensor qn = q.reshape({T * Hq, D}), kn = k.reshape({T * Hkv, D});
    be.rmsnorm(qn, lw.q_norm, eps, qn);
    be.rmsnorm(kn, lw.k_norm, eps, kn);
  }
  if (!rotated) {
    report("rope", layer, 0, 2 * act * double(T * Nq));
    be.rope(q3, st.positions, c.rope_theta);
    report("rope", layer, 0, 2 * act * double(T * Nkv));
    be.rope(k3, st.positions, c.rope_theta);
  }
  if (st.ragged)
    attend_slots(layer, st, q, k, v, att);
  else
    for (const AttnSlot& s : st.slots) attend(layer, s, q, k, v, att);
  lin("matmul_o", LinearRole::O, att, tmp);
  report("add_rmsnorm", layer, 0, 5 * act * double(T * H));
  be.add_rmsnorm(h, tmp, lw.ffn_norm, eps, x);
  if (lw.gate_up_packed) {
    // Gate and up as one packed GEMM with SwiGLU on the two halves of each output row (one kernel where the backend
    // fuses them: Linear::forward_swiglu).
    observe({LinearRole::Gate, LinearRole::Up});
    run_linear("matmul_gate_up", layer, *lw.gate_up_packed, x, gate, true);
  } else if (lw.gate_up.defined()) {
    // Gate and up as one GEMM over the fused weight, then SwiGLU on the two halves of each output row.
    Tensor gu = be.empty(at, {T, 2 * I});
    fused("matmul_gate_up", {LinearRole::Gate, LinearRole::Up}, nullptr, lw.gate_up, Tensor(), gu);
    report("silu_mul", layer, 0, 3 * act * double(T * I));
    be.silu_mul_fused(gu, gate);
  } else {
    Tensor up = be.empty(at, {T, I});
    lin("matmul_gate_up", LinearRole::Gate, x, gate);
    lin("matmul_gate_up", LinearRole::Up, x, up);
    report("silu_mul", layer, 0, 3 * act * double(T * I));
    be.silu_mul(gate, up, gate);
  }
  Tensor down = be.empty(at, {T, H});
  lin("matmul_down", LinearRole::Down, gate, down);
  if (defer_residual) {
    st.residual = down;  // added by the next layer's norm (or flush_residual)
  } else {
    report("add", layer, 0, 3 * act * double(T * H));
    be.add(h, down);
  }
}

namespace {

// What one slot's attention computes and moves, for the observer's reports (Model::attend, Model::attend_slots):
// the attention itself, and the cache write (bf16), or the fp8 quantization of the window and dequantization of the
// whole cache. act: bytes of an activation element.
struct AttnCost {
  double flops = 0, io = 0, write = 0, quantize = 0, dequantize = 0;
};
AttnCost attention_cost(const ModelConfig& c, double act, const AttnSlot& s) {
  const int64_t D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads, row = Hkv * D;
  const int64_t B = s.B, W = s.width(), n = s.tokens(), S = s.cache ? s.L : W;  // S: keys per row
  AttnCost a;
  a.flops = 4.0 * double(B * W * S * Hq * D);
  a.io = act * double(2 * n * Hq * D + 2 * B * S * row);
  if (s.cache && s.cache->fp8) {
    a.quantize = 2.0 * double(n * row) * (act + 1.0) + 8.0 * double(n * Hkv);
    a.dequantize = 2.0 * double(B * S * row) * (1.0 + act) + 8.0 * double(B * S * Hkv);
  } else if (s.cache) {
    a.write = 2.0 * double(n * row) * 2.0 * act;
  }
  return a;
}

}  // namespace

Tensor Model::cache_window_rows(const AttnSlot& s, int64_t layer, bool keys) const {
  if (!kv_in_place_from_env() || !s.cache || s.cache->fp8 || s.B != 1 || s.cache->B != 1 || s.offset != 0)
    return Tensor();
  const Tensor& c = (keys ? s.cache->k : s.cache->v)[size_t(layer)];
  const int64_t row = cfg_.num_kv_heads * cfg_.head_dim;
  // Rows of 256-byte multiples only: every window then starts as aligned as the cache (cuBLASLt keys its plans by the
  // output's alignment, and a plan first needed inside a graph capture ends the capture).
  if (row * int64_t(dtype_size(c.dtype())) % 256 != 0) return Tensor();
  return c.reshape({s.L, row}).slice_rows(s.begin, s.end);
}

// Slot s's attention in `layer`: its rows of q attend to its own keys and values (those of its window, or its
// cache after the window's entries are written into it), writing its rows of att.
void Model::attend(int64_t layer, const AttnSlot& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& att) {
  Backend& be = *backend_;
  const DType at = be.act_dtype();
  const double act = double(dtype_size(at));
  const int64_t D = cfg_.head_dim, Hq = cfg_.num_heads, Hkv = cfg_.num_kv_heads, row = Hkv * D;
  const int64_t B = s.B, W = s.width(), n = s.tokens();
  const Tensor* mask = s.key_mask.defined() ? &s.key_mask : nullptr;
  Tensor qs = q.slice_rows(s.offset, s.offset + n).reshape({B, W, Hq, D});
  Tensor as = att.slice_rows(s.offset, s.offset + n).reshape({B, W, Hq, D});
  Tensor ks = k.slice_rows(s.offset, s.offset + n), vs = v.slice_rows(s.offset, s.offset + n);
  const AttnCost cost = attention_cost(cfg_, act, s);
  const int64_t bs = cfg_.block_size;  // > 0: block-causal (the window's rows sit at sequence indices begin..)
  if (!s.cache) {
    report("attention", layer, cost.flops, cost.io);
    be.attention_block_causal(qs, ks.reshape({B, W, Hkv, D}), vs.reshape({B, W, Hkv, D}), mask, bs, 0, as);
    return;
  }
  // Write the window's keys/values into the cache (quantized with per-(position, head) scales for fp8), then
  // attend to every cached position.
  KvCache& cache = *s.cache;
  Tensor& ck = cache.k[size_t(layer)];
  Tensor& cv = cache.v[size_t(layer)];
  const int64_t full = s.L;
  const Tensor in_place = cache_window_rows(s, layer, true);
  if (in_place.defined() && in_place.data() == ks.data()) {
    // layer_pass produced k and v in the cache already.
  } else if (!cache.fp8) {  // every batch row's window at once
    report("kv_write", layer, 0, cost.write);
    Tensor dk = ck.reshape({B * full, row}), dv = cv.reshape({B * full, row});
    be.copy_row_blocks(ks, B, dk, full, s.begin);
    be.copy_row_blocks(vs, B, dv, full, s.begin);
  } else {
    report("kv_quantize_fp8", layer, 0, cost.quantize);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r0 = b * full + s.begin, r1 = b * full + s.end;
      Tensor dk = ck.reshape({B * full, row}).slice_rows(r0, r1), dv = cv.reshape({B * full, row}).slice_rows(r0, r1);
      Tensor sk = ks.slice_rows(b * W, (b + 1) * W), sv = vs.slice_rows(b * W, (b + 1) * W);
      Tensor kscale = cache.k_scale[size_t(layer)].reshape({B * full, Hkv}).slice_rows(r0, r1);
      Tensor vscale = cache.v_scale[size_t(layer)].reshape({B * full, Hkv}).slice_rows(r0, r1);
      be.kv_quantize_fp8(sk, Hkv, dk, kscale);
      be.kv_quantize_fp8(sv, Hkv, dv, vscale);
    }
  }
  if (cache.fp8) {
    // Attention reads the dequantized cache (the window's own entries included, as later steps see them).
    report("kv_dequantize_fp8", layer, 0, cost.dequantize);
    Tensor kd = be.empty(at, {B, full, Hkv, D}), vd = be.empty(at, {B, full, Hkv, D});
    be.kv_dequantize_fp8(ck.reshape({B * full, row}), cache.k_scale[size_t(layer)], Hkv, kd);
    be.kv_dequantize_fp8(cv.reshape({B * full, row}), cache.v_scale[size_t(layer)], Hkv, vd);
    report("attention", layer, cost.flops, cost.io);
    be.attention_block_causal(qs, kd, vd, mask, bs, s.begin, as);
  } else {
    report("attention", layer, cost.flops, cost.io);
    be.attention_block_causal(qs, ck, cv, mask, bs, s.begin, as);
  }
}

// Every slot of a ragged pass in one Backend::attention_slots call (a slot of B rows is B sequences, each with
// its row of the cache). The reports are the per-slot ones of attend summed, one of each kind a layer, all issued
// before the call that does the work (a timer between reports gives the whole call to "attention").
void Model::attend_slots(int64_t layer, const ForwardState& st, const Tensor& q, const Tensor& k, const Tensor& v,
                         Tensor& att) {
  Backend& be = *backend_;
  const double act = double(dtype_size(be.act_dtype()));
  const int64_t D = cfg_.head_dim, Hq = cfg_.num_heads, Hkv = cfg_.num_kv_heads, T = st.tokens();
  std::vector<AttnSlotRef> refs;
  AttnCost sum;
  bool writes = false, fp8 = false;
  for (const AttnSlot& s : st.slots) {
    const int64_t B = s.B, W = s.width();
    const AttnCost c = attention_cost(cfg_, act, s);
    sum.flops += c.flops, sum.io += c.io, sum.write += c.write, sum.quantize += c.quantize,
        sum.dequantize += c.dequantize;
    const KvCache* cache = s.cache;
    fp8 = fp8 || (cache && cache->fp8);
    writes = writes || (cache && !cache->fp8);
    for (int64_t b = 0; b < B; ++b) {
      AttnSlotRef r;
      r.row = s.offset + b * W, r.width = W, r.begin = cache ? s.begin : 0;
      if (s.key_mask.defined()) r.key_mask = s.key_mask.reshape({B, s.L}).slice_rows(b, b + 1);
      if (cache) {
        r.k_cache = cache->k[size_t(layer)].slice_rows(b, b + 1);
        r.v_cache = cache->v[size_t(layer)].slice_rows(b, b + 1);
        if (cache->fp8) {
          r.k_scale = cache->k_scale[size_t(layer)].slice_rows(b, b + 1);
          r.v_scale = cache->v_scale[size_t(layer)].slice_rows(b, b + 1);
        }
      }
      refs.push_back(r);
    }
  }
  if (writes) report("kv_write", layer, 0, sum.write);
  if (fp8) {
    report("kv_quantize_fp8", layer, 0, sum.quantize);
    report("kv_dequantize_fp8", layer, 0, sum.dequantize);
  }
  report("attention", layer, sum.flops, sum.io);
  Tensor att3 = att.reshape({T, Hq, D});
  be.attention_slots(q.reshape({T, Hq, D}), k.reshape({T, Hkv, D}), v.reshape({T, Hkv, D}), refs, cfg_.block_size,
                     att3);
}

Tensor Model::finish_forward_device(ForwardState& st, const std::vector<int64_t>& logit_rows) {
  Backend& be = *backend_;
  const int64_t T = st.tokens(), H = cfg_.hidden_size;
  const double act = double(dtype_size(be.act_dtype()));
  for (int64_t r : logit_rows) check(r >= 0 && r < T, "logit row {} is outside [0, {})", r, T);
  Tensor rows;
  if (!logit_rows.empty()) {
    // Only the rows that need logits go through the final norm and the LM head (the largest matmul at real
    // vocabulary sizes); they are picked on the backend. The norm is per row, so norm(h)[rows] = norm(h[rows]).
    const int64_t R = int64_t(logit_rows.size());
    Tensor sel = be.empty(be.act_dtype(), {R, H});
    report("gather_rows", -1, 0, 2 * act * double(R * H));
    be.gather_rows(st.h, logit_rows, sel);
    rows = be.empty(be.act_dtype(), {R, H});
    report("rmsnorm", -1, 0, 2 * act * double(R * H));
    be.rmsnorm(sel, final_norm_, float(cfg_.rms_norm_eps), rows);
  } else {
    rows = be.empty(be.act_dtype(), {T, H});
    report("rmsnorm", -1, 0, 2 * act * double(T * H));
    be.rmsnorm(st.h, final_norm_, float(cfg_.rms_norm_eps), rows);
  }
  Tensor logits = be.empty(be.act_dtype(), {rows.dim(0), cfg_.vocab_size});
  run_linear("lm_head", -1, *lm_head_, rows, logits);
  return logits;
}

std::vector<Tensor> Model::forward_slots(std::vector<SlotPass>& passes) {
  std::vector<int64_t> first;
  Tensor logits = forward_slots_rows(passes, first);
  // Each slot's rows, left in the backend's memory (views of the one logits tensor).
  std::vector<Tensor> out;
  for (size_t i = 0; i < first.size(); ++i)
    out.push_back(logits.slice_rows(first[i], i + 1 < first.size() ? first[i + 1] : logits.dim(0)));
  return out;
}

Tensor Model::forward_slots_rows(std::vector<SlotPass>& passes, std::vector<int64_t>& first) {
  check(!passes.empty(), "forward_slots: no slots");
  ForwardState st;
  st.ragged = true;
  int64_t T = 0;
  for (size_t i = 0; i < passes.size(); ++i) {
    SlotPass& p = passes[i];
    check(p.ids.dtype() == DType::I64 && p.ids.rank() == 2 && p.ids.dim(0) == 1 && p.ids.dim(1) > 0,
          "forward_slots: slot {} ids must be I64 [1, L], got {} {}", i, dtype_name(p.ids.dtype()), shape_str(p.ids.shape()));
    const int64_t L = p.ids.dim(1), end = p.end < 0 ? L : p.end;
    check(0 <= p.begin && p.begin < end && end <= L, "forward_slots: slot {} window [{}, {}) is outside its length {}", i,
          p.begin, end, L);
    check(p.cache || (p.begin == 0 && end == L), "forward_slots: slot {}: a window smaller than the sequence needs a KV cache", i);
    check(!p.key_mask.defined() || (p.key_mask.dtype() == DType::U8 && p.key_mask.numel() == L),
          "forward_slots: slot {} key mask must be U8 [1, {}]", i, L);
    check(!p.positions.defined() || (p.positions.dtype() == DType::I64 && p.positions.numel() == L),
          "forward_slots: slot {} positions must be I64 [1, {}]", i, L);
    for (int64_t r : p.logit_rows)
      check(r >= p.begin && r < end, "forward_slots: slot {} logit row {} is outside the window [{}, {})", i, r, p.begin, end);
    AttnSlot s;
    s.B = 1, s.L = L, s.begin = p.begin, s.end = end, s.offset = T, s.key_mask = p.key_mask, s.cache = p.cache;
    st.slots.push_back(s);
    T += s.tokens();
  }
  // Every slot's window tokens, concatenated.
  Tensor wids = Tensor::zeros(DType::I64, {T});
  st.positions = Tensor::zeros(DType::I64, {T});
  for (size_t i = 0; i < passes.size(); ++i)
    add_window(st.slots[i], passes[i].ids, passes[i].positions, wids, st, fmt::format("forward_slots: slot {}: ", i));
  embed(st, wids);
  run_layers(st);
  // The LM head on the rows asked for (each slot's whole window when it lists none), then each slot's rows.
  std::vector<int64_t> rows, counts;
  bool all = true;
  for (size_t i = 0; i < passes.size(); ++i) {
    const AttnSlot& s = st.slots[i];
    if (passes[i].logit_rows.empty()) {
      for (int64_t l = s.begin; l < s.end; ++l) rows.push_back(s.offset + l - s.begin);
    } else {
      all = false;
      for (int64_t r : passes[i].logit_rows) rows.push_back(s.offset + r - s.begin);
    }
    counts.push_back(passes[i].logit_rows.empty() ? s.width() : int64_t(passes[i].logit_rows.size()));
  }
  first.clear();
  int64_t r0 = 0;
  for (int64_t n : counts) {
    first.push_back(r0);
    r0 += n;
  }
  return finish_forward_device(st, all ? std::vector<int64_t>{} : rows);
}

void Model::fuse_packed(LayerWeights& lw) {
  if (!backend_->fusion().packed) return;
  auto& L = lw.linear;
  if (!lw.qkv.defined())
    lw.qkv_packed = fuse_packed_linears({&L[int(LinearRole::Q)], &L[int(LinearRole::K)], &L[int(LinearRole::V)]},
                                        *backend_);
  if (!lw.gate_up.defined())
    lw.gate_up_packed = fuse_packed_linears({&L[int(LinearRole::Gate)], &L[int(LinearRole::Up)]}, *backend_);
}

void Model::replace_linear(int64_t layer, LinearRole role, std::unique_ptr<Linear> linear) {
  check(layer >= 0 && layer < int64_t(layers_.size()), "replace_linear: layer {} out of range", layer);
  auto& slot = layers_[size_t(layer)].linear[int(role)];
  check(linear->in_features() == slot->in_features() && linear->out_features() == slot->out_features(),
        "replace_linear: shape mismatch for '{}'", slot->spec().prefix);
  slot = std::move(linear);
  LayerWeights& lw = layers_[size_t(layer)];
  // A replaced gate or up runs on its own: the fused weight goes.
  if (role == LinearRole::Gate || role == LinearRole::Up) lw.gate_up = Tensor(), lw.gate_up_packed.reset();
  if (role == LinearRole::Q || role == LinearRole::K || role == LinearRole::V)
    lw.qkv = lw.qkv_bias = Tensor(), lw.qkv_packed.reset();
}

}  // namespace dlx
